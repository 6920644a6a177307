#!/usr/bin/env python3
"""Ring order over uneven WAN links: optimize_topology() against the best and random orders.

Usage (root; bench/wan_lab.sh builds the lab with its userspace delay line):
    sudo python bench/topology.py [--hosts 6] [--size 256M] [--fast 1000] [--slow 100]
                                  [--slow-share 0.5] [--rtt-min 10] [--rtt-max 150]
                                  [--random-orders 5] [--iters 2] [--warmup 1] [--seed 1]
                                  [--rounds 2] [--random-iters 1]
                                  [--probe-seconds 1] [--connections 4]

The lab: --hosts peer hosts and one more for the master. Every pair of peer
hosts gets a path of its own (`wan_lab.sh pair I J RTT RATE`): an RTT drawn
from [--rtt-min, --rtt-max] ms and a bottleneck of --fast or --slow Mbit/s
each way. Paths, not access links, are what differ: with uneven access links
every ring crosses each host's link once each way, so every order has the same
slowest hop and the order could not matter. A hidden ring of fast paths is
drawn first (so that a ring of fast paths exists), then every other pair is
slow with probability --slow-share; the draw is repeated until the join order
(hosts 1..N) crosses at least one slow path. Seeded: one --seed, one matrix.

Then, in that one lab:
  1. the peers join in host order (the master's ring is the admission order):
     "join order" timed;
  2. every peer calls optimize_topology(): its wall time (max over peers) is
     the time to measure the matrix; the master's measured matrix and chosen
     ring are printed, and that ring is timed ("optimized");
  3. the best ring over the *measured* matrix, by exhaustive search here
     (every directed ring, the master's rule: the slowest link first, then the
     sum; link cost = RTT + 8 MiB / bandwidth), joined in that order and
     timed ("best"),
     then --rounds more times, alternately, the optimized order joined
     afresh and the best order joined afresh (interleaved, so that both see
     the same drift of the hosts' TCP state and of the delay line's share of
     the CPU: one timing of one ring in one phase is not enough to compare
     two rings within 10 %);
  4. --random-orders seeded random orders, each joined and timed
     (--random-iters calls each: they are several times slower, and only
     need to be clearly slower).
Time per order = median over --iters calls (after --warmup untimed ones, after
a barrier) of the max over peers. The verdicts the issue asks for are printed
at the end: optimized / best (goal <= 1.10; medians over every timed call of
each, the in-place phase included), optimized / median of random (goal
clearly below 1), the matrix measured in <= 15 s for 6 hosts.

Every command to a peer has a deadline (--timeout); the lab is taken down at
the end, whatever happens.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wan import RESULT_TAG, Lab, busbw_factor, fmt_size, kill, parse_size  # noqa: E402


class TopologyLab(Lab):
    script = os.path.abspath(__file__)

REFERENCE_CHUNK = 8 << 20  # bytes: the master's link cost is rtt + this / bandwidth
BEST = "best (exhaustive, measured), round"
OPTIMIZED_AFRESH = "optimized order joined afresh, round"


# --------------------------------------------------------------------------
# inside the lab: master and peers, driven by JSON lines on stdin
# --------------------------------------------------------------------------
def reply(**fields) -> None:
    print(RESULT_TAG + json.dumps(fields), flush=True)


def role_master(a) -> None:
    import jax_pccl as pccl

    master = pccl.Master(host=a.bind, port=0, probe_seconds=a.probe_seconds,
                         probe_connections=a.probe_connections)
    reply(address=master.address)
    try:
        for line in sys.stdin:  # "status" until the driver closes our stdin
            if line.strip() == "status":
                reply(status=master.status())
    finally:
        master.close()


def role_peer(a) -> None:
    import jax

    jax.config.update("jax_platforms", "cpu")
    import hashlib

    import jax.numpy as jnp
    import numpy as np

    import jax_pccl as pccl

    comm = None
    tiny = jnp.ones((1,), jnp.float32)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "join":
            # The master's ring is the admission order: the driver sends
            # "join" to one peer at a time, in the order it wants.
            comm = pccl.Communicator(cmd["master"], timeout=a.peer_timeout,
                                     connections=a.connections).connect(timeout=a.peer_timeout)
            deadline = time.monotonic() + a.peer_timeout
            while comm.world_size != cmd["world"]:
                if time.monotonic() > deadline:
                    raise SystemExit(f"world_size {comm.world_size} != {cmd['world']}")
                comm.update_topology()
                time.sleep(0.02)
            reply(joined=comm.peer_id, rank=comm.rank)
        elif cmd["cmd"] == "time":
            count = cmd["size"] // 4
            x = jnp.asarray(np.random.default_rng(a.index).normal(size=count).astype(np.float32))
            barrier = jax.jit(lambda v: pccl.all_reduce(v, comm, op="sum"))
            f = jax.jit(lambda v: pccl.all_reduce(v, comm, op="sum"))
            times = []
            for it in range(cmd["warmup"] + cmd["iters"]):  # warm-ups let TCP windows grow
                barrier(tiny).block_until_ready()
                t0 = time.perf_counter()
                y = f(x).block_until_ready()
                if it >= cmd["warmup"]:
                    times.append(time.perf_counter() - t0)
            reply(times=times, rank=comm.rank,
                  sha256=hashlib.sha256(np.asarray(y).tobytes()).hexdigest())
            del x, y
        elif cmd["cmd"] == "optimize":
            t0 = time.perf_counter()
            comm.optimize_topology()
            reply(took=time.perf_counter() - t0, rank=comm.rank)
        elif cmd["cmd"] == "leave":
            comm.close()
            comm = None
            reply(left=True)


# --------------------------------------------------------------------------
# driver (root namespace)
# --------------------------------------------------------------------------
class Proc:
    """A master or peer process inside the lab: one JSON command per line in,
    RESULT lines out (read by a thread, so that every wait has a deadline)."""

    def __init__(self, lab: Lab, host: int, args: list):
        self.name = f"host {host}"
        self.p = lab.popen(host, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            if line.startswith(RESULT_TAG):
                self.lines.put(json.loads(line[len(RESULT_TAG):]))
        self.lines.put(None)

    def send(self, cmd) -> None:
        self.p.stdin.write((cmd if isinstance(cmd, str) else json.dumps(cmd)) + "\n")
        self.p.stdin.flush()

    def recv(self, timeout: float) -> dict:
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if got is None:
            raise RuntimeError(f"{self.name}: exited with {self.p.wait()} before answering")
        return got

    def close(self) -> None:
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        kill(self.p)


def draw_links(a) -> dict:
    """{(i, j): (rtt_ms, mbit)} for every pair i < j of hosts 1..N (see the module doc)."""
    rng = random.Random(a.seed)
    n = a.hosts
    natural = [(i, i % n + 1) for i in range(1, n + 1)]
    for _ in range(1000):
        hidden = list(range(1, n + 1))
        rng.shuffle(hidden)
        fast = {frozenset((hidden[k], hidden[(k + 1) % n])) for k in range(n)}
        links = {}
        for i, j in itertools.combinations(range(1, n + 1), 2):
            slow = frozenset((i, j)) not in fast and rng.random() < a.slow_share
            links[(i, j)] = (round(rng.uniform(a.rtt_min, a.rtt_max)), a.slow if slow else a.fast)
        if any(links[tuple(sorted(p))][1] == a.slow for p in natural):
            return links
    raise SystemExit("no draw made the join order cross a slow path: raise --slow-share")


def configured(links: dict, i: int, j: int) -> tuple:
    return links[(min(i, j), max(i, j))]


def ring_cost(ring: list, cost: dict) -> tuple:
    hops = [cost.get((ring[k], ring[(k + 1) % len(ring)]), float("inf")) for k in range(len(ring))]
    return max(hops), sum(hops)


def best_ring(hosts: list, cost: dict) -> list:
    """Exhaustive over every directed ring (the first host fixed): the
    slowest link first, then the sum, as the master's planner ranks rings."""
    first, rest = hosts[0], hosts[1:]
    return min(([first, *perm] for perm in itertools.permutations(rest)),
               key=lambda r: ring_cost(r, cost))


def same_ring(r1: list, r2: list) -> bool:
    k = r2.index(r1[0])
    return r1 == r2[k:] + r2[:k]


class Run:
    def __init__(self, a, lab: Lab):
        self.a, self.lab = a, lab
        self.master = Proc(lab, a.hosts + 1, ["--role", "master", "--bind", lab.ip(a.hosts + 1),
                                              "--probe-seconds", str(a.probe_seconds),
                                              "--probe-connections", str(a.connections)])
        self.address = self.master.recv(120)["address"]
        self.peers = {h: Proc(lab, h, ["--role", "peer", "--index", str(h - 1), "--connections",
                                       str(a.connections), "--peer-timeout", str(a.peer_timeout)])
                      for h in range(1, a.hosts + 1)}

    def close(self) -> None:
        for p in [*self.peers.values(), self.master]:
            p.close()

    def status(self) -> dict:
        self.master.send("status")
        return self.master.recv(30)["status"]

    def host_of(self, status: dict) -> dict:
        return {p["id"]: int(p["address"].split(":")[0].split(".")[2]) for p in status["peers"]}

    def ring_hosts(self) -> list:
        st = self.status()
        g = next(g for g in st["groups"] if g["group"] == 0)
        return [self.host_of(st)[pid] for pid in g["ring"]]

    def join(self, order: list) -> None:
        """Admits the peers in `order` (the master's ring is the admission order)."""
        for k, h in enumerate(order):
            self.peers[h].send({"cmd": "join", "master": self.address, "world": len(order)})
            deadline = time.monotonic() + 60
            while len(self.status()["peers"]) < k + 1:  # registered before the next one comes
                if time.monotonic() > deadline:
                    raise RuntimeError(f"host {h} did not register")
                time.sleep(0.05)
        for h in order:
            self.peers[h].recv(self.a.peer_timeout + 30)
        got = self.ring_hosts()
        if not same_ring(order, got):
            raise RuntimeError(f"joined in order {order}, the master's ring is {got}")

    def leave(self) -> None:
        for p in self.peers.values():
            p.send({"cmd": "leave"})
        for p in self.peers.values():
            p.recv(60)
        deadline = time.monotonic() + 30
        while self.status()["peers"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the master still lists peers after every peer left")
            time.sleep(0.05)

    def time_ring(self, label: str, iters: int | None = None) -> dict:
        ring = self.ring_hosts()
        cmd = {"cmd": "time", "size": self.a.size, "iters": iters or self.a.iters,
               "warmup": self.a.warmup}
        for p in self.peers.values():
            p.send(cmd)
        reports = [p.recv(self.a.timeout) for p in self.peers.values()]
        per_iter = [max(ts) for ts in zip(*(r["times"] for r in reports))]
        t = statistics.median(per_iter)
        row = {"label": label, "ring": ring, "median_s": t, "times": per_iter,
               "busbw_mbit": self.a.size * 8 / t / 1e6 * busbw_factor(self.a.hosts),
               "identical": len({r["sha256"] for r in reports}) == 1}
        print(f"[topology] {label}: ring {ring}: {t:.2f} s ({row['busbw_mbit']:.0f} Mbit/s busbw), "
              f"iterations {[round(x, 2) for x in per_iter]}", file=sys.stderr, flush=True)
        return row

    def optimize(self) -> float:
        for p in self.peers.values():
            p.send({"cmd": "optimize"})
        return max(p.recv(120)["took"] for p in self.peers.values())


def measured_matrix(status: dict, host_of: dict) -> dict:
    g = next(g for g in status["groups"] if g["group"] == 0)
    return {(host_of[x["from"]], host_of[x["to"]]): x for x in g["links"]}


def print_matrix(a, links: dict, measured: dict) -> None:
    n = a.hosts
    print("\nconfigured paths (RTT ms / Mbit/s each way) and what optimize_topology() measured "
          "(RTT ms / Mbit/s, from row to column):")
    print("      " + "".join(f"{j:>22}" for j in range(1, n + 1)))
    for i in range(1, n + 1):
        cells = []
        for j in range(1, n + 1):
            if i == j:
                cells.append(f"{'-':>22}")
                continue
            rtt, mbit = configured(links, i, j)
            m = measured.get((i, j))
            got = (f"{m['rtt_ms']:.0f}/{m['bytes_per_s'] * 8 / 1e6:.0f}" if m and m["ok"]
                   else "broken" if m else "?")
            cells.append(f"{f'{rtt}/{mbit:g} -> {got}':>22}")
        print(f"{i:>6}" + "".join(cells))


def measure(a) -> None:
    links = draw_links(a)
    with TopologyLab(a, a.hosts + 1, 0.0) as lab:
        for (i, j), (rtt, mbit) in links.items():
            lab.sh("pair", str(i), str(j), str(rtt), f"{mbit:g}")
        if a.rt_delay:
            lab.make_delay_line_realtime()
        run = Run(a, lab)
        rows = []
        try:
            join_order = list(range(1, a.hosts + 1))
            run.join(join_order)
            rows.append(run.time_ring("join order"))
            matrix_s = run.optimize()
            status = run.status()
            measured = measured_matrix(status, run.host_of(status))
            optimized_ring = run.ring_hosts()
            print(f"[topology] optimize_topology(): {matrix_s:.2f} s; ring {optimized_ring}",
                  file=sys.stderr, flush=True)
            rows.append(run.time_ring("optimized, in place"))
            cost = {k: (m["rtt_ms"] / 1e3 + REFERENCE_CHUNK / m["bytes_per_s"]
                        if m["ok"] and m["bytes_per_s"] > 0 else float("inf"))
                    for k, m in measured.items()}
            best = best_ring(join_order, cost)
            truth = best_ring(join_order, {(i, j): configured(links, i, j)[0] / 1e3
                                           + REFERENCE_CHUNK * 8 / (configured(links, i, j)[1] * 1e6)
                                           for i in join_order for j in join_order if i != j})
            for k in range(a.rounds):
                for label, order in ((BEST, best), (OPTIMIZED_AFRESH, optimized_ring)):
                    run.leave()
                    run.join(order)
                    rows.append(run.time_ring(f"{label} {k + 1}"))
            rng = random.Random(a.seed + 1)
            for k in range(a.random_orders):
                order = join_order[:]
                rng.shuffle(order)
                run.leave()
                run.join(order)
                rows.append(run.time_ring(f"random order {k + 1}", a.random_iters))
        finally:
            run.close()
    report(a, links, measured, matrix_s, optimized_ring, best, truth, rows)


def report(a, links, measured, matrix_s, optimized_ring, best, truth, rows) -> None:
    print_matrix(a, links, measured)
    print(f"\nring chosen by the master: {optimized_ring}; best over the measured matrix "
          f"(exhaustive): {best}{' (the same ring)' if same_ring(optimized_ring, best) else ''}; "
          f"best over the configured paths: {truth}")
    print(f"\nall_reduce(sum, float32) of {fmt_size(a.size)} per peer, {a.hosts} peers, "
          f"K={a.connections}; time = median over {a.iters} calls (after {a.warmup} warm-up) of "
          f"the max over peers")
    hdr = f"{'ring':<46}{'order':<22}{'median s':>10}{'busbw Mbit/s':>14}{'identical':>11}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['label']:<46}{str(r['ring']):<22}{r['median_s']:>10.2f}{r['busbw_mbit']:>14.0f}"
              f"{str(r['identical']):>11}")
    def calls(*prefixes):
        return [t for r in rows if r["label"].startswith(prefixes) for t in r["times"]]

    randoms = [r["median_s"] for r in rows if r["label"].startswith("random")]
    in_place = calls("optimized")[:a.iters]
    opt = statistics.median(calls("optimized"))  # in place and every afresh round
    best_s = statistics.median(calls(BEST))
    print(f"\nmeasuring the matrix: {matrix_s:.2f} s (optimize_topology(), max over peers; "
          f"goal <= 15 s for 6 hosts)")
    print(f"optimized / best: {opt / best_s:.3f} (goal <= 1.10): medians of "
          f"{len(calls('optimized'))} and {len(calls(BEST))} calls, {opt:.2f} s and {best_s:.2f} s "
          f"({a.rounds} interleaved rounds)")
    print(f"  in place right after optimize_topology() only: "
          f"{statistics.median(in_place) / best_s:.3f}")
    if randoms:
        print(f"optimized / median of {len(randoms)} random orders: "
              f"{opt / statistics.median(randoms):.3f} (goal: clearly below 1)")
    print(f"optimized / join order: {opt / statistics.median(calls('join order')):.3f}")
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")
    for r in rows:
        print(json.dumps(r))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=6, help="peer hosts (the master gets one more)")
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"))
    ap.add_argument("--fast", type=float, default=1000, help="Mbit/s of a fast path")
    ap.add_argument("--slow", type=float, default=100, help="Mbit/s of a slow path")
    ap.add_argument("--slow-share", type=float, default=0.5,
                    help="probability that a pair off the hidden fast ring is slow")
    ap.add_argument("--rtt-min", type=float, default=10)
    ap.add_argument("--rtt-max", type=float, default=150)
    ap.add_argument("--random-orders", type=int, default=5)
    ap.add_argument("--random-iters", type=int, default=1, help="timed calls per random order")
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved re-timings of the best and the optimized order")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls first (TCP windows grow)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--probe-seconds", type=float, default=1.0)
    ap.add_argument("--connections", type=int, default=4, help="per neighbour, and per probe")
    ap.add_argument("--cc", default="cubic")
    ap.add_argument("--rt-delay", type=int, default=1,
                    help="1: the delay line runs with real-time priority (see bench/wan.py)")
    ap.add_argument("--prefix", default="h8t")
    ap.add_argument("--subnet", default=os.environ.get("WAN_LAB_SUBNET", "10.89"))
    ap.add_argument("--timeout", type=float, default=900, help="limit per timed ring, s")
    ap.add_argument("--peer-timeout", type=float, default=120, help="the communicators' timeout")
    ap.add_argument("--role", choices=["master", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--bind", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--probe-connections", type=int, default=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "master":
        return role_master(a)
    if a.role == "peer":
        return role_peer(a)
    if os.geteuid() != 0:
        ap.error("the lab needs root (network namespaces)")
    if a.hosts < 3:
        ap.error("--hosts: at least 3 (with 2 there is one ring only)")
    # What bench/wan.py's Lab reads: the access links are not the bottleneck here.
    a.rtt, a.rate, a.delay_line, a.sysctl = 0, max(a.fast, a.slow) * 2, "userspace", []
    t0 = time.monotonic()
    measure(a)
    print(f"[topology] done in {time.monotonic() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
