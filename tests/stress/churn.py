"""Churn: peers join, die and freeze at random, and the master is killed and
restarted, while the others keep training and syncing a shared state.

    python tests/stress/churn.py --seconds 600 --seed 1      # the long run, by hand

A master runs in a process of its own (`python -m jax_pccl master`); up to 6
peer processes (tests/fault/peer_loop.py) loop on a jitted integer all_reduce
and sync a shared state every few steps. Peers 0 and 1 live through the whole
run (their fd/thread/RSS are compared start vs end); the others are spawned,
SIGKILLed, SIGSTOPped and SIGCONTed at seeded random times, and now and then
the master is SIGKILLed and restarted on the same port. Checks:
  - every completed result is exact (the bitmask of who took part) and
    bit-identical across the peers that took part (same (epoch, seq) -> digest);
  - no long-lived peer goes longer than the detection bound + one collective
    (+ slack for spawns on a 2-core box) without progress while >= 2 peers live;
  - every shared-state sync returns the tree exactly as passed in (treedef,
    shapes, dtypes), and every peer that synced to a revision holds the same
    bytes there;
  - the master process never dies but by our hand; long-lived peers' fds and
    threads do not grow and their RSS stays bounded; no peer hangs (each
    process ends by itself within 60 s of the run's end).
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
SYNC_EVERY = 5
MASTER_GRACE_S = 40.0   # a long-lived peer rides out an outage this long
# After a master restart every peer re-registers and the ring is rebuilt:
# the progress bound grows by the outage plus this much.
REJOIN_S = 15.0


class MasterProcess:
    """`python -m jax_pccl master` in a process of its own, so that it can be
    SIGKILLed. The first start lets the OS pick the port (port 0); restarts
    reuse it."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        log = open(os.path.join(self.workdir, f"master{self.starts}.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jax_pccl", "master", "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=subprocess.PIPE, stderr=log, text=True,
            cwd=self.workdir, start_new_session=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"master did not start: {line!r}")
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        self.starts += 1

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()


class Churn:
    def __init__(self, master: MasterProcess, seconds: float, seed: int, workdir: str,
                 master_restarts: bool = True):
        self.master = master
        self.address = master.address
        self.master_restarts = master_restarts
        self.outages: list[tuple[float, float]] = []  # (killed at, restarted at)
        self.master_died = False
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
               "--seconds", str(seconds), "--sync-every", str(SYNC_EVERY),
               "--master-grace", str(MASTER_GRACE_S)]
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
        if not self.master.alive():
            self.master_died = True
        choice = self.rng.random()
        if self.master_restarts and now >= self.next_restart and now < self.end - REJOIN_S:
            self.restart_master()
            self.next_restart = time.time() + self.rng.uniform(15.0, 40.0)
        elif len(alive) < MAX_PEERS and choice < 0.4:
            self.spawn(max(3.0, self.end - now))
        elif victims and choice < 0.7:
            self.signal(self.rng.choice(victims), signal.SIGKILL, "kill")
        elif victims and choice < 0.9:
            i = self.rng.choice(victims)
            self.signal(i, signal.SIGSTOP, "stop")
            self.stopped[i] = now + self.rng.uniform(0.5, 7.0)  # some outlive the heartbeat bound

    def restart_master(self) -> None:
        killed = time.time()
        self.master.kill()
        self.events.append((killed, "master_kill", -1))
        time.sleep(self.rng.uniform(0.2, 3.0))  # an outage: every call fails meanwhile
        self.master.start()
        self.outages.append((killed, time.time()))

    def run(self) -> None:
        self.end = time.time() + self.seconds
        self.next_restart = time.time() + self.rng.uniform(8.0, 20.0)
        for i in LONG_LIVED:
            self.spawn(self.seconds + 5)
        while time.time() < self.end:
            time.sleep(self.rng.uniform(1.5, 4.0))
            self.act()
        for i in list(self.stopped):
            self.signal(i, signal.SIGCONT, "cont")
        self.stopped.clear()

    def shutdown(self) -> None:
        """Peers end by themselves after --seconds; one still running 60 s
        later is hung (or stuck in a call that ignores its timeout)."""
        deadline = time.time() + 60
        self.hung = []
        for i, p in self.procs.items():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.hung.append(i)
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def records(self, i: int) -> list[dict]:
        try:
            with open(self.log(i)) as f:  # a line without its newline is still being written
                return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]
        except FileNotFoundError:
            return []


def check_syncs(all_records: dict) -> tuple[int, list[str]]:
    """Every sync kept the tree's layout, and every peer that synced to a
    revision holds the same bytes there."""
    problems = []
    by_revision: dict[int, set] = {}
    syncs = 0
    for i, rs in all_records.items():
        for r in rs:
            if "synced" not in r:
                continue
            syncs += 1
            if not r["layout_ok"]:
                problems.append(f"peer {i}: sync changed the tree's layout: {r}")
            by_revision.setdefault(r["synced"], set()).add(r["digest"])
    split = {rev: d for rev, d in by_revision.items() if len(d) > 1}
    if split:
        problems.append(f"{len(split)} revisions differ across peers, e.g. {list(split.items())[:2]}")
    return syncs, problems


def in_outage(churn: Churn, a: float, b: float) -> float:
    """Extra silence a master outage overlapping [a, b] explains."""
    return sum(end - start + REJOIN_S for start, end in churn.outages if start <= b and end + REJOIN_S >= a)


def analyse(churn: Churn) -> tuple[dict, list[str]]:
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
            bound = DETECTION_BOUND_S + 2.0 + (12.0 if joining else 0.0) + in_outage(churn, a, b)
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
    if churn.master_died:
        problems.append("the master died")
    for i in churn.hung:
        problems.append(f"peer {i} still running 60 s after its end: hung")
    syncs, sync_problems = check_syncs(all_records)
    problems += sync_problems
    figures = {
        "collectives_completed": done,
        "collectives_failed": failed,
        "syncs_completed": syncs,
        "master_restarts": len(churn.outages),
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
    ap.add_argument("--no-master-restarts", action="store_true")
    args = ap.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="pccl-churn-")
    master = MasterProcess(workdir)
    master.start()
    churn = Churn(master, args.seconds, args.seed, workdir,
                  master_restarts=not args.no_master_restarts)
    try:
        churn.run()
        if not master.alive():
            churn.master_died = True
    finally:
        churn.shutdown()
        master.kill()
    figures, problems = analyse(churn)
    print(json.dumps(figures, indent=2))
    for p in problems:
        print("VIOLATION:", p)
    print(f"churn: {'FAILED' if problems else 'OK'} ({workdir})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
