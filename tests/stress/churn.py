"""Churn: peers join, die and freeze at random while the others keep training.

    python tests/stress/churn.py --seconds 600 --seed 1      # the long run, by hand

A master runs in this process; up to 6 peer processes (tests/fault/peer_loop.py)
loop on a jitted integer all_reduce. Peers 0 and 1 live through the whole run
(their fd/thread/RSS are compared start vs end); the others are spawned,
SIGKILLed, SIGSTOPped and SIGCONTed at seeded random times. Checks:
  - every completed result is exact (the bitmask of who took part) and
    bit-identical across the peers that took part (same (epoch, seq) -> digest);
  - no long-lived peer goes longer than the detection bound + one collective
    (+ slack for spawns on a 2-core box) without progress while >= 2 peers live;
  - the master never dies; long-lived peers' fds and threads do not grow and
    their RSS stays bounded.
Prints the figures the issue asks for and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER_LOOP = str(Path(__file__).resolve().parents[1] / "fault" / "peer_loop.py")
MAX_PEERS = 6
LONG_LIVED = (0, 1)
DETECTION_BOUND_S = 5.0


class Churn:
    def __init__(self, address: str, seconds: float, seed: int, workdir: str):
        self.address = address
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.workdir = workdir
        self.procs: dict[int, subprocess.Popen] = {}
        self.stopped: dict[int, float] = {}  # index -> when to SIGCONT
        self.events: list[tuple[float, str, int]] = []
        self.next_index = 0
        self.end = 0.0

    def spawn(self, seconds: float) -> int:
        i = self.next_index
        self.next_index += 1
        cmd = [sys.executable, PEER_LOOP, "--master", self.address, "--index", str(i),
               "--out", self.log(i), "--elements", str(1 << 16), "--timeout", "20",
               "--seconds", str(seconds)]
        err = open(self.log(i) + ".err", "w")
        self.procs[i] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        self.events.append((time.time(), "spawn", i))
        return i

    def log(self, i: int) -> str:
        return os.path.join(self.workdir, f"peer{i}.jsonl")

    def alive(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def signal(self, i: int, sig: int, what: str) -> None:
        try:
            os.killpg(self.procs[i].pid, sig)
            self.events.append((time.time(), what, i))
        except ProcessLookupError:
            pass

    def act(self) -> None:
        now = time.time()
        for i, wake_at in list(self.stopped.items()):
            if now >= wake_at:
                self.signal(i, signal.SIGCONT, "cont")
                del self.stopped[i]
        alive = self.alive()
        victims = [i for i in alive if i not in LONG_LIVED and i not in self.stopped]
        choice = self.rng.random()
        if len(alive) < MAX_PEERS and choice < 0.4:
            self.spawn(max(3.0, self.end - now))
        elif victims and choice < 0.7:
            self.signal(self.rng.choice(victims), signal.SIGKILL, "kill")
        elif victims and choice < 0.9:
            i = self.rng.choice(victims)
            self.signal(i, signal.SIGSTOP, "stop")
            self.stopped[i] = now + self.rng.uniform(0.5, 7.0)  # some outlive the heartbeat bound

    def run(self) -> None:
        self.end = time.time() + self.seconds
        for i in LONG_LIVED:
            self.spawn(self.seconds + 5)
        while time.time() < self.end:
            time.sleep(self.rng.uniform(1.5, 4.0))
            self.act()
        for i in list(self.stopped):
            self.signal(i, signal.SIGCONT, "cont")
        self.stopped.clear()

    def shutdown(self) -> None:
        deadline = time.time() + 30
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def records(self, i: int) -> list[dict]:
        try:
            return [json.loads(line) for line in open(self.log(i)) if line.strip()]
        except FileNotFoundError:
            return []


def analyse(churn: Churn, master_alive: bool) -> tuple[dict, list[str]]:
    problems: list[str] = []
    all_records = {i: churn.records(i) for i in churn.procs}
    done = sum(1 for rs in all_records.values() for r in rs if "ok" in r)
    failed = sum(1 for rs in all_records.values() for r in rs if "failure" in r)
    by_key: dict[tuple, set] = {}
    for i, rs in all_records.items():
        for r in rs:
            if "ok" not in r:
                continue
            if not (r["exact"] and r["mask"] & (1 << i) and bin(r["mask"]).count("1") == r["world"]):
                problems.append(f"peer {i}: inexact result {r}")
            by_key.setdefault(tuple(r["key"]), set()).add((r["digest"], r["mask"]))
        fatal = [r for r in rs if "fatal" in r]
        if i in LONG_LIVED and fatal:
            problems.append(f"long-lived peer {i} died: {fatal[-1]}")
    split = {k: v for k, v in by_key.items() if len(v) > 1}
    if split:
        problems.append(f"{len(split)} collectives differ across peers, e.g. {list(split.items())[:2]}")

    kills = [t for t, what, _ in churn.events if what == "kill"]
    detect = []
    for t_kill in kills:
        for i in LONG_LIVED:
            after = [r["t"] - t_kill for r in all_records[i] if "failure" in r and r["t"] >= t_kill]
            if after and after[0] < 10:
                detect.append(after[0])
    recover = []
    for i in LONG_LIVED:
        rs = all_records[i]
        for k, r in enumerate(rs):
            if "failure" in r:
                nxt = next((x for x in rs[k + 1:] if "ok" in x), None)
                if nxt:
                    recover.append(nxt["t"] - r["t"])
    # progress: the longest silence of a long-lived peer (first ok .. last ok)
    spawn_times = [t for t, what, _ in churn.events if what == "spawn"]
    worst_gap = 0.0
    for i in LONG_LIVED:
        ts = [r["t"] for r in all_records[i] if "ok" in r or "failure" in r]
        oks = [r["t"] for r in all_records[i] if "ok" in r]
        if not oks:
            problems.append(f"long-lived peer {i} never completed a collective")
            continue
        ts = [t for t in ts if t >= oks[0]]
        for a, b in zip(ts, ts[1:]):
            gap = b - a
            # A newcomer compiles its step (seconds on a loaded 2-core box)
            # while the others wait for it in their collective: allow that.
            joining = any(a - 1 <= s <= b for s in spawn_times)
            bound = DETECTION_BOUND_S + 2.0 + (12.0 if joining else 0.0)
            worst_gap = max(worst_gap, gap)
            if gap > bound:
                problems.append(f"peer {i}: no progress for {gap:.1f} s (bound {bound:.0f} s)")
    resources = {}
    for i in LONG_LIVED:
        samples = [r["resources"] for r in all_records[i] if "resources" in r]
        if len(samples) >= 3:
            start, end = samples[1], samples[-1]  # [0] is before the step is warm
            resources[i] = {"start": start, "end": end}
            if end["fds"] > start["fds"] + 2 or end["threads"] > start["threads"] + 2:
                problems.append(f"peer {i} leaks fds/threads: {start} -> {end}")
            if end["rss_kb"] > start["rss_kb"] * 1.5 + 50_000:
                problems.append(f"peer {i} RSS grew: {start} -> {end}")
    if not master_alive:
        problems.append("the master died")
    figures = {
        "collectives_completed": done,
        "collectives_failed": failed,
        "kills": len(kills),
        "stops": sum(1 for _, w, _ in churn.events if w == "stop"),
        "spawns": len(spawn_times),
        "kill_to_error_s": {"median": statistics.median(detect) if detect else None,
                            "max": max(detect) if detect else None, "n": len(detect)},
        "failure_to_next_success_s": {"median": statistics.median(recover) if recover else None,
                                      "n": len(recover)},
        "longest_wait_s": round(worst_gap, 2),
        "resources": resources,
    }
    return figures, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    import jax_pccl as pccl

    workdir = tempfile.mkdtemp(prefix="pccl-churn-")
    with pccl.Master() as master:
        churn = Churn(master.address, args.seconds, args.seed, workdir)
        try:
            churn.run()
        finally:
            churn.shutdown()
        status = master.status()
    figures, problems = analyse(churn, master_alive=bool(status))
    print(json.dumps(figures, indent=2))
    for p in problems:
        print("VIOLATION:", p)
    print(f"churn: {'FAILED' if problems else 'OK'} ({workdir})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
