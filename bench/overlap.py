"""Overlap: does communication hide behind compute with all_reduce_start/wait?

    python bench/overlap.py --peers 2 --mbytes 32 --iters 7
    python bench/overlap.py --peers 2 --mbytes 1 --straggler 1.0

With --straggler S every peer but rank 0 starts each timed step S seconds
late: rank 0's collective then takes about S seconds of waiting that costs no
CPU (a slow peer across the internet), so the figures show how much of the
wait the compute hides without the CPU contention of a loopback ring or of
the emulated WAN, whose kernel work shares this machine's cores.

Each peer times five jitted steps (median over iters, max over peers):
  comm       all_reduce of the gradient buffer only
  compute    a matmul chain sized to take about as long as `comm`
  plain      both in one step with all_reduce (no explicit overlap)
  overlap    all_reduce_start, then the compute, then all_reduce_wait
  pipelined  per step of a loop: all_reduce_wait of the previous step's
             collective, the compute, all_reduce_start of this step's
             (the collective runs while the next step computes)
and prints overlap / max(comm, compute), pipelined / max(comm, compute) and
plain / (comm + compute). It also prints the best that any overlap can reach
on this machine when compute and communication compete for its cores:
max(comm, compute, (CPU seconds of comm + CPU seconds of compute) / cores),
from the machine-wide busy cores measured in each phase alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def measure_overlap(comm, nbytes: int, iters: int, straggler: float = 0.0) -> dict:
    """This peer's median seconds for comm, compute, plain and overlap (see
    the module docstring). Every peer of `comm` must call it at once."""
    import jax
    import jax.numpy as jnp

    import jax_pccl as pccl

    grads = jnp.ones(nbytes // 4, jnp.float32)
    cores_busy = {}
    barrier = jax.jit(lambda: pccl.all_reduce(jnp.zeros(1), comm))

    def chain(w, n):
        for _ in range(n):
            w = jnp.tanh(w @ w) * 0.5
        return w.sum()

    def timed(fn, *xs, name=None):
        fn(*xs)
        samples, busy = [], []
        for _ in range(iters):
            barrier().block_until_ready()
            if straggler and comm.rank != 0:
                time.sleep(straggler)
            t, c = time.perf_counter(), busy_core_seconds()
            jax.block_until_ready(fn(*xs))
            samples.append(time.perf_counter() - t)
            busy.append((busy_core_seconds() - c) / samples[-1])
        if name:
            cores_busy[name] = statistics.median(busy)
        return statistics.median(samples)

    def agreed(value):
        # Every peer must compile the same chain: take peer-wide max of the depth.
        return int(pccl.all_reduce(np.asarray([value], np.int32), comm, op="max")[0])

    comm_only = jax.jit(lambda g: pccl.all_reduce(g, comm, op="avg"))
    t_comm = timed(comm_only, grads, name="comm")
    # size the compute to roughly match the communication time
    w = jnp.eye(512, dtype=jnp.float32) * 0.5
    one = timed(jax.jit(lambda w: chain(w, 1)), w)
    depth = agreed(max(1, round(t_comm / max(one, 1e-6))))
    for _ in range(3):  # a layer alone times differently than inside a chain: refine
        t_compute = timed(jax.jit(lambda w, d=depth: chain(w, d)), w)
        better = agreed(max(1, round(depth * t_comm / t_compute)))
        if better == depth:
            break
        depth = better
    t_compute = timed(jax.jit(lambda w: chain(w, depth)), w, name="compute")
    plain = jax.jit(lambda g, w: (pccl.all_reduce(g, comm, op="avg"), chain(w, depth)))
    t_plain = timed(plain, grads, w, name="plain")

    @jax.jit
    def overlapped(g, w):
        h = pccl.all_reduce_start(g, comm, op="avg")
        c = chain(w, depth)
        return pccl.all_reduce_wait(h), c
    t_overlap = timed(overlapped, grads, w, name="overlap")
    # a straggler's lateness is per step, which a back-to-back loop cannot show
    t_pipelined = (float("nan") if straggler else
                   time_pipelined(comm, chain, depth, grads, w, barrier, iters))
    return {"comm": t_comm, "compute": t_compute, "plain": t_plain, "overlap": t_overlap,
            "pipelined": t_pipelined, "depth": depth, "cores_busy": cores_busy}


def busy_core_seconds() -> float:
    """Seconds of CPU time the whole machine has spent busy (all cores,
    every process: peers, kernel, the WAN lab's delay line), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def time_pipelined(comm, chain, depth, grads, w, barrier, iters: int) -> float:
    """Median seconds per step of a loop whose jitted step waits for the
    previous step's all_reduce, computes, then starts its own: the pattern of
    delayed (one step stale) gradient or pseudo-gradient averaging."""
    import jax
    from jax import lax

    import jax_pccl as pccl

    @jax.jit
    def step(previous, g, w):
        reduced = pccl.all_reduce_wait(previous)
        c = chain(w, depth)
        # start after the compute: this collective overlaps the next step
        g, c = lax.optimization_barrier((g, c))
        return pccl.all_reduce_start(g, comm, op="avg"), reduced, c

    start = jax.jit(lambda g: pccl.all_reduce_start(g, comm, op="avg"))
    handle = start(grads)
    handle, reduced, c = step(handle, grads, w)  # compile and warm up
    jax.block_until_ready((reduced, c))
    # Steps back to back (no barrier: it would wait for the collective in
    # flight); each step's time includes waiting for the previous collective.
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        handle, reduced, c = step(handle, grads, w)
        jax.block_until_ready((reduced, c))
        samples.append(time.perf_counter() - t)
    jax.block_until_ready(pccl.all_reduce_wait(handle))
    barrier().block_until_ready()
    return statistics.median(samples)


def summarize(reports: list, label: str) -> dict:
    """Max over peers of each median; prints the table and the ratios."""
    keys = ("comm", "compute", "plain", "overlap", "pipelined")
    r = {k: max(rep[k] for rep in reports) for k in keys}
    # cores busy (machine-wide) while the slowest peer ran that phase
    busy = {}
    for k in keys:
        slowest = max(reports, key=lambda rep: rep[k])
        if k in slowest.get("cores_busy", {}):
            busy[k] = slowest["cores_busy"][k]
    print(label)
    for k in keys:
        cores = f"   {busy[k]:.2f} of {os.cpu_count()} cores busy" if k in busy else ""
        print(f"  {k:9s} {r[k] * 1e3:8.1f} ms{cores}")
    ratio_overlap = r["overlap"] / max(r["comm"], r["compute"])
    ratio_pipelined = r["pipelined"] / max(r["comm"], r["compute"])
    ratio_plain = r["plain"] / (r["comm"] + r["compute"])
    print(f"  overlap   / max(comm, compute) = {ratio_overlap:.2f}")
    print(f"  pipelined / max(comm, compute) = {ratio_pipelined:.2f}")
    print(f"  plain     / (comm + compute)   = {ratio_plain:.2f}")
    print(f"  plain     / max(comm, compute) = {r['plain'] / max(r['comm'], r['compute']):.2f}")
    out = {**r, "overlap_over_max": ratio_overlap, "pipelined_over_max": ratio_pipelined,
           "plain_over_sum": ratio_plain}
    if "comm" in busy and "compute" in busy:
        # The best any overlap can do here: both phases' CPU work must fit on
        # this machine's cores (the emulated WAN's kernel work counts too).
        best = max(r["comm"], r["compute"],
                   (busy["comm"] * r["comm"] + busy["compute"] * r["compute"]) / os.cpu_count())
        print(f"  CPU-bound best: max(comm, compute, CPU work of both / {os.cpu_count()} cores) = "
              f"{best * 1e3:.1f} ms = {best / max(r['comm'], r['compute']):.2f} x max; "
              f"overlap / best = {r['overlap'] / best:.2f}")
        out.update(cpu_bound_best=best, overlap_over_best=r["overlap"] / best)
    return out


def worker(args) -> int:
    import jax_pccl as pccl

    comm = pccl.Communicator(args.master, timeout=60).connect(timeout=120)
    while comm.group_world_size < args.peers:
        comm.update_topology()
        time.sleep(0.01)
    report = measure_overlap(comm, args.mbytes * 2**20, args.iters, args.straggler)
    print("REPORT " + json.dumps(report), flush=True)
    comm.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=2)
    ap.add_argument("--mbytes", type=int, default=32)
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--straggler", type=float, default=0.0,
                    help="seconds every peer but rank 0 starts each timed step late")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--master", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import jax_pccl as pccl

    with pccl.Master() as master:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--master", master.address,
               "--peers", str(args.peers), "--mbytes", str(args.mbytes), "--iters", str(args.iters),
               "--straggler", str(args.straggler)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(args.peers)]
        reports = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            reports += [json.loads(l[7:]) for l in out.splitlines() if l.startswith("REPORT ")]
    if len(reports) != args.peers:
        print("a worker failed", file=sys.stderr)
        return 1
    late = f", every peer but rank 0 {args.straggler} s late" if args.straggler else ""
    r = summarize(reports, f"{args.peers} peers on loopback, {args.mbytes} MiB avg all_reduce{late} "
                           "(medians, max over peers):")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
