"""Membership costs: update_topology() with nothing pending, and how long a
joiner takes from connect() to its first completed collective while the others
keep training.

    python bench/membership.py --peers 3 --iters 2000

Prints medians and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WORKER = os.path.abspath(__file__)


def worker(args) -> int:
    import jax
    import numpy as np

    import jax_pccl as pccl

    t0 = time.perf_counter()
    comm = pccl.Communicator(args.master, timeout=30).connect(timeout=120)
    connected = time.perf_counter() - t0
    # Each step also max-reduces a stop flag, so everyone leaves in the same step.
    step = jax.jit(lambda x, stop: pccl.all_reduce((x, stop), comm, op="max"))
    x = np.ones(1024, np.float32)
    report = {"role": args.role, "connect_s": connected}
    if args.role == "member":
        while comm.group_world_size < args.peers:
            comm.update_topology()
            time.sleep(0.01)
        step(x, np.int32(0))
        samples = []
        for _ in range(args.iters):
            t = time.perf_counter()
            comm.update_topology()  # nothing pending: a ring consensus, no master trip
            samples.append(time.perf_counter() - t)
        report["update_topology_median_us"] = statistics.median(samples) * 1e6
        report["update_topology_p90_us"] = sorted(samples)[int(0.9 * len(samples))] * 1e6
        open(f"{args.ready_file}.{os.getpid()}", "w").close()
    else:
        _, stop = step(x, np.int32(0))  # the first collective: the others are training
        jax.block_until_ready(stop)
        report["first_collective_s"] = time.perf_counter() - t0
    for k in range(100000):
        comm.update_topology()
        wants_stop = args.role == "joiner" and k >= 20
        _, stop = step(x, np.int32(wants_stop))
        if int(stop):
            break
    report["world_at_end"] = comm.group_world_size
    print("REPORT " + json.dumps(report), flush=True)
    comm.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--role", default="member", help=argparse.SUPPRESS)
    ap.add_argument("--master", help=argparse.SUPPRESS)
    ap.add_argument("--ready-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    import jax_pccl as pccl

    tmp = tempfile.mkdtemp(prefix="pccl-membership-")
    ready = os.path.join(tmp, "ready")
    with pccl.Master() as master:
        base = [sys.executable, WORKER, "--worker", "--master", master.address,
                "--peers", str(args.peers), "--iters", str(args.iters),
                "--ready-file", ready]
        members = [subprocess.Popen(base, stdout=subprocess.PIPE, text=True)
                   for _ in range(args.peers)]
        deadline = time.time() + 180
        while time.time() < deadline:
            if len([f for f in os.listdir(tmp) if f.startswith("ready")]) == args.peers:
                break
            time.sleep(0.05)
        joiner = subprocess.Popen(base + ["--role", "joiner"], stdout=subprocess.PIPE, text=True)
        reports = []
        try:
            for p in [joiner, *members]:
                out, _ = p.communicate(timeout=180)
                reports += [json.loads(line[7:]) for line in out.splitlines()
                            if line.startswith("REPORT ")]
        finally:
            for p in [joiner, *members]:
                if p.poll() is None:
                    p.kill()
    member_reports = [r for r in reports if r["role"] == "member"]
    joiner_report = next(r for r in reports if r["role"] == "joiner")
    figures = {
        "peers": args.peers,
        "update_topology_nothing_pending_median_us": statistics.median(
            r["update_topology_median_us"] for r in member_reports),
        "update_topology_nothing_pending_p90_us": max(
            r["update_topology_p90_us"] for r in member_reports),
        "joiner_connect_s": joiner_report["connect_s"],
        "joiner_connect_to_first_collective_s": joiner_report["first_collective_s"],
        "world_at_end": min(r["world_at_end"] for r in reports),
    }
    print(f"update_topology() with nothing pending, {args.peers} peers: "
          f"median {figures['update_topology_nothing_pending_median_us']:.0f} us, "
          f"p90 {figures['update_topology_nothing_pending_p90_us']:.0f} us")
    print(f"joiner: connect() {figures['joiner_connect_s']*1e3:.0f} ms, "
          f"connect() to first collective done {figures['joiner_connect_to_first_collective_s']*1e3:.0f} ms "
          f"(includes jit compile of its step)")
    print(json.dumps(figures))
    return 0 if figures["world_at_end"] == args.peers + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
