#!/usr/bin/env python3
"""All-reduce over emulated WAN links: jax_pccl in the wan_lab namespaces.

Usage (root; bench/wan_lab.sh builds the lab: `bash bench/wan_lab.sh check` says what
this machine lacks, and iperf3 measures each lab's ceiling):
    sudo python bench/wan.py [--hosts 2,4] [--size 256M] [--connections 1,8]
                             [--overlap 64M]
                             [--quantized minmax_uint8,zero_point_uint8,bfloat16]
                             [--loss 0.1] [--loss-size 32M] [--loss-connections 1,16]
                             [--iters 3] [--rtt 80] [--rate 1000] [--cc cubic]

For every host count the driver brings up a lab of that many hosts (every
pair: --rtt ms RTT, --rate Mbit/s each way, --cc congestion control), starts a
jax_pccl master in host 1 and one peer per host (this file, re-invoked inside
`ip netns exec`), and times float32 sum all-reduces of --size bytes per peer
with each connection count, then the quantized formats (default connection
count). With --loss, a second lab with that random loss (in %, per direction,
offloads off so that every packet is a loss candidate) times --loss-size for
--loss-connections. Each lab is first measured with iperf3 on all ring paths
at once (rows "iperf3": the slowest path), the ceiling of that lab at that
moment: the emulated network shares this machine's CPUs with the peers (its
delay line even runs in userspace where the kernel has no netem). Time per
call = max over peers of one iteration (after a barrier), then the median over
--iters iterations (after a warm-up call).

    busbw = size / time * 2 (N-1) / N      (nccl-tests), compared to --rate

Only addresses inside the lab (WAN_LAB_SUBNET, default 10.88) are used. Every
subprocess has a hard timeout; the lab is taken down at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WAN_LAB = os.path.join(HERE, "wan_lab.sh")
RESULT_TAG = "@@RESULT "


def parse_size(tok: str) -> int:
    tok = tok.strip().upper().rstrip("B")
    for suf, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if tok.endswith(suf):
            return int(float(tok[:-1]) * m)
    return int(tok)


def fmt_size(n: int) -> str:
    for suf, m in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= m and n % m == 0:
            return f"{n // m}{suf}"
    return f"{n}B"


def busbw_factor(n: int) -> float:
    return 2.0 * (n - 1) / n


# --------------------------------------------------------------------------
# inside the lab: master and peers
# --------------------------------------------------------------------------
def role_master(a) -> None:
    import jax_pccl as pccl

    master = pccl.Master(host=a.bind, port=0)
    print(RESULT_TAG + json.dumps({"address": master.address}), flush=True)
    try:
        sys.stdin.read()  # until the driver closes our stdin (or kills us)
    finally:
        master.close()


def peer_input(index: int, count: int):
    """Peer `index`'s all-reduce input: any peer can rebuild any other's."""
    import numpy as np
    return np.random.default_rng(index).normal(size=count).astype(np.float32)


_exact_cache = {}


def error_against_exact(result, world: int) -> dict:
    """Max abs error of `result` against the exact (float64) sum of every
    peer's input, and that error relative to max |sum|."""
    import numpy as np
    count = result.size
    if count not in _exact_cache:
        exact = np.zeros(count, np.float64)
        for k in range(world):
            exact += peer_input(k, count)
        _exact_cache.clear()
        _exact_cache[count] = (exact, float(np.max(np.abs(exact))))
    exact, peak = _exact_cache[count]
    err = float(np.max(np.abs(result.astype(np.float64) - exact)))
    return {"max_abs_err": err, "rel_err": err / peak, "max_abs_sum": peak}


def role_peer(a) -> None:
    import jax

    jax.config.update("jax_platforms", "cpu")
    import jax.numpy as jnp
    import numpy as np

    import jax_pccl as pccl

    log = lambda m: print(f"[peer {a.index}] {m}", file=sys.stderr, flush=True)
    comm = pccl.Communicator(a.master, timeout=120.0, connections=a.connections).connect()
    deadline = time.monotonic() + 120
    while comm.world_size != a.world:
        if time.monotonic() > deadline:
            raise SystemExit(f"world_size {comm.world_size} != {a.world}")
        comm.update_topology()
        time.sleep(0.05)
    tiny = jnp.ones((1,), jnp.float32)
    barrier = jax.jit(lambda v: pccl.all_reduce(v, comm, op="sum"))
    results = []
    for case in a.cases.split(","):
        fmt, size = case.split(":")
        if fmt == "overlap":  # bench/overlap.py's four timings, over this lab's links
            import overlap
            report = overlap.measure_overlap(comm, int(size), a.iters)
            log(f"{case}: {report}")
            results.append({"case": case, "overlap": report})
            continue
        q = None if fmt == "float32" else fmt
        count = int(size) // 4
        x = jnp.asarray(peer_input(a.index, count))
        f = jax.jit(lambda v, q=q: pccl.all_reduce(v, comm, op="sum", quantization=q))
        times = []
        for it in range(a.warmup + a.iters):  # warm-ups also let TCP windows grow
            barrier(tiny).block_until_ready()
            t0 = time.perf_counter()
            y = f(x).block_until_ready()
            if it >= a.warmup:
                times.append(time.perf_counter() - t0)
        log(f"{case} K={a.connections}: {[round(t, 3) for t in times]}")
        result = np.asarray(y)
        entry = {"case": case, "times": times,
                 "sha256": hashlib.sha256(result.tobytes()).hexdigest()}
        if a.index == 0:  # the others hold the same bytes (sha256, checked by the driver)
            entry.update(error_against_exact(result, a.world))
        results.append(entry)
        del x, y, result
    print(RESULT_TAG + json.dumps({"index": a.index, "results": results}), flush=True)
    # Leave only when every peer has reported: a peer that leaves while a
    # neighbour still waits for its last bytes fails that neighbour's call.
    sys.stdin.read()
    comm.close()


# --------------------------------------------------------------------------
# driver (root namespace)
# --------------------------------------------------------------------------
class Lab:
    def __init__(self, a, hosts: int, loss: float):
        self.a, self.hosts, self.loss = a, hosts, loss
        self.env = dict(os.environ, WAN_LAB_PREFIX=a.prefix, WAN_LAB_SUBNET=a.subnet)

    def sh(self, *args, timeout=120) -> str:
        r = subprocess.run(["bash", WAN_LAB, *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"wan_lab {' '.join(args)} failed: {r.stderr[-2000:]}")
        return r.stdout + r.stderr

    def __enter__(self):
        subprocess.run(["bash", WAN_LAB, "down"], env=self.env, capture_output=True, timeout=120)
        up = ["up", "-n", str(self.hosts), "--rtt", str(self.a.rtt), "--rate", str(self.a.rate),
              "--cc", self.a.cc, "--lifetime", "7200"]
        if self.loss > 0:
            up += ["--loss", str(self.loss), "--no-offload"]
        if getattr(self.a, "delay_line", None):  # bench/topology.py: `pair` needs the userspace one
            up += ["--delay-line", self.a.delay_line]
        self.sh(*up)
        if self.a.rt_delay:
            self.make_delay_line_realtime()
        for i in range(1, self.hosts + 1):
            for k, v in self.a.sysctl:
                subprocess.run(["ip", "netns", "exec", self.ns(i), "sysctl", "-qw", f"{k}={v}"],
                               check=True)
        return self

    def make_delay_line_realtime(self) -> None:
        """The delay line (bench/wan_delay.py, where the kernel has no netem)
        is the emulated internet: on a real WAN, compute on the hosts never
        slows the network down. Here it shares the CPUs with the peers, so a
        CPU-bound step would also delay packets in flight. SCHED_FIFO keeps it
        ahead of host work (it sleeps between batched releases, so it cannot
        monopolise a core). With netem the kernel delays packets: nothing to do."""
        state = os.environ.get("WAN_LAB_STATE", f"/tmp/wan_lab.{self.a.prefix}")
        try:
            with open(os.path.join(state, "delay.pid")) as f:
                pid = f.read().strip()
        except FileNotFoundError:
            return
        subprocess.run(["chrt", "-f", "-p", "20", pid], check=True, capture_output=True)

    def __exit__(self, *exc):
        subprocess.run(["bash", WAN_LAB, "down"], env=self.env, capture_output=True, timeout=120)

    def ns(self, i: int) -> str:
        return f"{self.a.prefix}-h{i}"

    def ip(self, i: int) -> str:
        return f"{self.a.subnet}.{i}.2"

    script = os.path.abspath(__file__)  # what popen runs in a host (bench/topology.py: itself)

    def popen(self, i: int, args: list, **kw) -> subprocess.Popen:
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        cmd = ["ip", "netns", "exec", self.ns(i), sys.executable, self.script, *args]
        return subprocess.Popen(cmd, env=env, start_new_session=True, text=True, **kw)


def kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


_iperf_ports = itertools.count(5301)


def iperf_ceiling(lab: Lab, streams: int, seconds: int) -> float:
    """iperf3 on every ring path at once (host i -> host i+1, `streams`
    connections each, our 4 MiB socket buffers): the slowest path's Mbit/s,
    i.e. what this lab carries for a ring right now. The emulated network
    shares this machine's CPUs, so on a loaded machine that is below the
    nominal rate."""
    n = lab.hosts
    port = next(_iperf_ports)  # a fresh port: the last one-shot servers may still be exiting
    servers, clients = [], []
    try:
        for i in range(1, n + 1):
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", lab.ns(i), "timeout", str(seconds + 60), "iperf3", "-s",
                 "-1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(2.0)  # servers listening (slow to start on a loaded machine)
        for i in range(1, n + 1):
            dst = lab.ip(i % n + 1)
            clients.append(subprocess.Popen(
                ["ip", "netns", "exec", lab.ns(i), "timeout", str(seconds + 50), "iperf3", "-c", dst,
                 "-p", str(port), "-t", str(seconds), "-P", str(streams), "-w", "4M",
                 "-C", lab.a.cc, "-J"], stdout=subprocess.PIPE, text=True))
        rates = []
        for c in clients:
            out, _ = c.communicate(timeout=seconds + 60)
            result = json.loads(out)
            if "error" in result:
                raise RuntimeError(f"iperf3: {result['error']}")
            rates.append(result["end"]["sum_received"]["bits_per_second"] / 1e6)
    finally:
        for p in servers + clients:
            if p.poll() is None:
                p.kill()
            p.wait()
    return min(rates)


def read_report(p: subprocess.Popen, deadline: float) -> dict:
    """The peer's result line; bounded by a watchdog that kills it at the deadline."""
    watchdog = threading.Timer(max(1.0, deadline - time.monotonic()), kill, [p])
    watchdog.start()
    try:
        for line in p.stdout:
            if line.startswith(RESULT_TAG):
                return json.loads(line[len(RESULT_TAG):])
    finally:
        watchdog.cancel()
    raise RuntimeError(f"peer exited with {p.wait()} before reporting")


def run_group(lab: Lab, connections: int, cases: list, timeout: float, warmup: int) -> dict:
    """One master + one peer per host; returns {case: [max-over-peers time per iteration]}."""
    master = lab.popen(1, ["--role", "master", "--bind", lab.ip(1)], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE)
    peers = []
    try:
        line = master.stdout.readline()
        if not line.startswith(RESULT_TAG):
            raise RuntimeError(f"master did not start: {line!r}")
        address = json.loads(line[len(RESULT_TAG):])["address"]
        for i in range(lab.hosts):
            peers.append(lab.popen(i + 1, [
                "--role", "peer", "--master", address, "--index", str(i), "--world",
                str(lab.hosts), "--connections", str(connections), "--iters", str(lab.a.iters),
                "--warmup", str(warmup), "--cases", ",".join(cases)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        reports = [read_report(p, time.monotonic() + timeout) for p in peers]
        for p in peers:  # everyone reported: now they may leave
            p.stdin.close()
            p.wait(timeout=60)
    finally:
        for p in peers:
            kill(p)
        try:
            master.stdin.close()
            master.wait(timeout=10)
        except Exception:
            pass
        kill(master)
    out = {}
    for case in cases:
        if case.startswith("overlap:"):
            out[case] = [next(r["overlap"] for r in rep["results"] if r["case"] == case)
                         for rep in reports]
            continue
        entries = [next(r for r in rep["results"] if r["case"] == case) for rep in reports]
        out[case] = [max(ts) for ts in zip(*(e["times"] for e in entries))]
        digests = {e["sha256"] for e in entries}
        errors = next((e for e in entries if "rel_err" in e), {})
        ERRORS[case] = {"identical": len(digests) == 1,
                        **{k: errors[k] for k in ("max_abs_err", "rel_err", "max_abs_sum") if k in errors}}
    return out


# case -> {"identical": all peers' results had one sha256, max_abs_err, rel_err}
# of the latest group run (the error table).
ERRORS: dict = {}


def row(hosts, loss, k, fmt, size, times, rate_mbit):
    t = statistics.median(times)
    busbw = size * 8 / t / 1e6 * busbw_factor(hosts)
    return {"hosts": hosts, "loss_pct": loss, "connections": k, "format": fmt, "size": fmt_size(size),
            "iters": len(times), "median_s": t, "min_s": min(times), "max_s": max(times),
            "busbw_mbit": busbw, "of_link": busbw / rate_mbit}


def ceiling_row(hosts, loss, k, mbit, a):
    print(f"[wan] iperf3 on all {hosts} ring paths at once, loss {loss}%, P={k}: slowest path "
          f"{mbit:.1f} Mbit/s", file=sys.stderr, flush=True)
    return {"hosts": hosts, "loss_pct": loss, "connections": k, "format": "iperf3", "size": "-",
            "iters": 1, "median_s": float("nan"), "min_s": float("nan"), "max_s": float("nan"),
            "busbw_mbit": mbit, "of_link": mbit / a.rate}


def measure_overlap_in_lab(a) -> None:
    """bench/overlap.py between lab hosts: the link, not the CPU, bounds the
    all-reduce there, as on a real WAN, so compute has cores to run on."""
    import overlap

    for hosts in a.hosts:
        with Lab(a, hosts, 0.0) as lab:
            case = f"overlap:{a.overlap}"
            print(f"[wan] {hosts} hosts: {case}", file=sys.stderr, flush=True)
            reports = run_group(lab, a.connections[-1], [case], a.timeout, a.warmup)[case]
        label = (f"\n{hosts} hosts, RTT {a.rtt} ms, {a.rate} Mbit/s, K={a.connections[-1]}: "
                 f"{fmt_size(a.overlap)} avg all_reduce per step (medians of {a.iters}, max over peers)")
        print(json.dumps({"hosts": hosts, **overlap.summarize(reports, label)}))
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")


def measure(a) -> list:
    rows = []
    default_k = a.connections[-1]
    for hosts in a.hosts:
        groups = {k: [f"float32:{a.size}"] for k in a.connections}
        groups[default_k] += [f"{q}:{a.size}" for q in a.quantized]
        with Lab(a, hosts, 0.0) as lab:
            for k in (1, default_k) if a.iperf_seconds > 0 else ():
                rows.append(ceiling_row(hosts, 0.0, k, iperf_ceiling(lab, k, a.iperf_seconds), a))
            for k, cases in groups.items():
                print(f"[wan] {hosts} hosts, loss 0, K={k}: {cases}", file=sys.stderr, flush=True)
                res = run_group(lab, k, cases, a.timeout, a.warmup)
                for case, times in res.items():
                    fmt, size = case.split(":")
                    rows.append(row(hosts, 0.0, k, fmt, int(size), times, a.rate))
                    rows[-1].update(ERRORS.get(case, {}))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if a.loss > 0:
            with Lab(a, hosts, a.loss) as lab:
                for k in a.loss_connections if a.iperf_seconds > 0 else ():
                    mbit = iperf_ceiling(lab, k, a.iperf_seconds)
                    rows.append(ceiling_row(hosts, a.loss, k, mbit, a))
                for k in a.loss_connections:
                    case = f"float32:{a.loss_size}"
                    print(f"[wan] {hosts} hosts, loss {a.loss}%, K={k}", file=sys.stderr, flush=True)
                    res = run_group(lab, k, [case], a.timeout, a.loss_warmup)
                    rows.append(row(hosts, a.loss, k, "float32", a.loss_size, res[case], a.rate))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def print_table(a, rows) -> None:
    print(f"\nall_reduce(sum) over wan_lab: RTT {a.rtt} ms, {a.rate} Mbit/s per host each way, "
          f"cc {a.cc}; time = median over {a.iters} iterations (after {a.warmup} warm-up calls, "
          f"{a.loss_warmup} with loss) of the max over peers; busbw = size/time * 2(N-1)/N")
    hdr = (f"{'hosts':>5}{'loss %':>8}{'K':>4}{'format':>18}{'size':>7}{'median s':>10}"
           f"{'busbw Mbit/s':>14}{'of link':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        median = "-" if r["format"] == "iperf3" else f"{r['median_s']:.3f}"
        print(f"{r['hosts']:>5}{r['loss_pct']:>8}{r['connections']:>4}{r['format']:>18}{r['size']:>7}"
              f"{median:>10}{r['busbw_mbit']:>14.1f}{r['of_link']:>9.1%}")
    print()
    for hosts in a.hosts:
        def get(loss, k, fmt):
            return next((r for r in rows if r["hosts"] == hosts and r["loss_pct"] == loss
                         and r["connections"] == k and r["format"] == fmt), None)
        k_lo, k_hi = a.connections[0], a.connections[-1]
        one, many = get(0.0, k_lo, "float32"), get(0.0, k_hi, "float32")
        if one and many:
            print(f"{hosts} hosts: K={k_hi} / K={k_lo} busbw: {many['busbw_mbit'] / one['busbw_mbit']:.2f}x")
        ceiling = get(0.0, k_hi, "iperf3")
        if ceiling and many:
            print(f"{hosts} hosts: K={k_hi} busbw / iperf3 ring ceiling ({k_hi} streams per path): "
                  f"{many['busbw_mbit'] / ceiling['busbw_mbit']:.1%}")
        # Against float32 at the same K, and against the fastest float32 of
        # this lab (a K that collapses would flatter the quantized formats).
        floats = [r for r in (get(0.0, k, "float32") for k in a.connections) if r]
        best = min(floats, key=lambda r: r["median_s"], default=None)
        for q in a.quantized:
            r = get(0.0, k_hi, q)
            if r and many and best:
                print(f"{hosts} hosts: {q} speed-up over float32: {many['median_s'] / r['median_s']:.2f}x "
                      f"(same K={k_hi}), {best['median_s'] / r['median_s']:.2f}x (fastest float32, "
                      f"K={best['connections']})")
        lo, hi = get(a.loss, a.loss_connections[0], "float32"), get(a.loss, a.loss_connections[-1], "float32")
        if lo and hi:
            print(f"{hosts} hosts, {a.loss}% loss: K={a.loss_connections[-1]} / "
                  f"K={a.loss_connections[0]} busbw: {hi['busbw_mbit'] / lo['busbw_mbit']:.2f}x")
    print_error_table(rows)
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")
    for r in rows:
        print(json.dumps(r))


def print_error_table(rows) -> None:
    """Quantization error of peer 0's result against the exact float64 sum of
    every peer's input (each peer's input: normal(0, 1), its own seed)."""
    measured = [r for r in rows if "rel_err" in r]
    if not measured:
        return
    print("\nerror against the exact float64 sum (peer 0; bit-identical = one sha256 on all peers)")
    hdr = f"{'hosts':>5}{'K':>4}{'format':>18}{'size':>7}{'max abs err':>14}{'of max|sum|':>13}{'identical':>11}"
    print(hdr)
    print("-" * len(hdr))
    for r in measured:
        print(f"{r['hosts']:>5}{r['connections']:>4}{r['format']:>18}{r['size']:>7}"
              f"{r['max_abs_err']:>14.3e}{r['rel_err']:>13.3%}{str(r['identical']):>11}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda s: [int(t) for t in s.split(",") if t]
    ap.add_argument("--hosts", type=ints, default=[2, 4])
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"))
    ap.add_argument("--connections", type=ints, default=[1, 8],
                    help="first: the baseline; last: used for the quantized formats")
    ap.add_argument("--quantized", type=lambda s: [t for t in s.split(",") if t],
                    default=["minmax_uint8", "zero_point_uint8", "bfloat16"])
    ap.add_argument("--loss", type=float, default=0.1, help="%% per direction; 0: skip")
    ap.add_argument("--loss-size", type=parse_size, default=parse_size("16M"))
    ap.add_argument("--loss-connections", type=ints, default=[1, 16])
    ap.add_argument("--overlap", type=parse_size, default=0,
                    help="instead of the tables: bench/overlap.py with this all_reduce size "
                         "per step (e.g. 64M), in a lab of each --hosts count")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first (TCP windows grow)")
    ap.add_argument("--loss-warmup", type=int, default=1)
    ap.add_argument("--rtt", type=float, default=80)
    ap.add_argument("--rate", type=float, default=1000, help="Mbit/s")
    ap.add_argument("--cc", default="cubic")
    ap.add_argument("--iperf-seconds", type=int, default=8,
                    help="iperf3 ceiling per lab (same connection counts and buffers); 0: skip")
    ap.add_argument("--sysctl", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                    help="KEY=VALUE set in every lab host, e.g. net.ipv4.tcp_slow_start_after_idle=0")
    ap.add_argument("--rt-delay", type=int, default=1,
                    help="1 (default): run the lab's delay line with real-time priority so "
                         "that the hosts' compute cannot slow the emulated network; 0: as "
                         "wan_lab.sh starts it (nice -10)")
    ap.add_argument("--prefix", default="h8w")
    ap.add_argument("--subnet", default=os.environ.get("WAN_LAB_SUBNET", "10.88"))
    ap.add_argument("--timeout", type=float, default=900, help="hard limit per launch, s")
    ap.add_argument("--role", choices=["master", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--bind", help=argparse.SUPPRESS)
    ap.add_argument("--master", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cases", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "master":
        return role_master(a)
    if a.role == "peer":
        a.connections = a.connections[0]
        return role_peer(a)
    if os.geteuid() != 0:
        ap.error("the lab needs root (network namespaces)")
    if a.iperf_seconds > 0 and shutil.which("iperf3") is None:
        ap.error("iperf3 is not installed: install it, or skip the ceiling rows with --iperf-seconds 0")
    t0 = time.monotonic()
    if a.overlap:
        return measure_overlap_in_lab(a)
    rows = measure(a)
    print(f"[wan] done in {time.monotonic() - t0:.0f} s; load average {os.getloadavg()}",
          file=sys.stderr)
    print_table(a, rows)


if __name__ == "__main__":
    main()
