"""Program fuzzer driver: random jitted collective programs on 2-3 peer
processes, with random faults, checked against a numpy reference.

    python tests/fuzz/run_programs.py --seed 1 --programs 200 --peers 2-3 --faults

The programs are split into launches of --per-launch programs (each run for
--steps steps). Each launch starts a master (a `jax-pccl master` process, so
it can be killed and restarted on the same port) and 2-3 peers
(tests/fuzz/program_peer.py); everything a launch does (peer count,
concurrency 1-4, the faults: SIGKILL of a peer (then maybe a newcomer),
SIGSTOP then SIGCONT, a peer calling close() from a thread, master SIGKILL
and restart on the same port) is drawn from (seed, launch), and each fault
fires when a given peer enters a given call at a given position, plus a
drawn delay of a few ms. `--launch B` replays one launch.

Invariants (a violation prints the replay command, exit status 1):
  HANG        a peer stays in one call longer than its bound (or past the
              launch deadline): killed, reported with the call it was in
  SLOW        a call returned or raised, but after its bound
  INEXACT     a returned value differs from the numpy reference over the
              peers that took part (any superset of the reporting peers of
              the reported world size)
  DIVERGENT   peers of the same collective (position, epoch) got different bytes
  WORLD       info.world_size differs within one step
  EPOCH       more peers report one (position, epoch) than its world size:
              two rings ran under one epoch number
  UNEXPLAINED an error with no fault anywhere near it
  NOT_PEER_FAILURE  an error near a fault that is neither is_peer_failure()
              nor a master outage (nor the faulted peer's own eviction/close)
  STUCK       a peer's communicator stayed unusable (repeated unexpected errors)
  NO_RECOVERY a peer's last position did not succeed
  GUARD       update_topology()/sync_shared_state() with a started
              all_reduce outstanding did not raise (update_topology() may
              return when that start's epoch failed: it discards the start,
              whose wait must then raise the peer failure)
  SYNC        peers at the same shared-state revision hold different state
  CRASH       a peer exited abnormally (not killed by the driver)
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # tests/: the suite's harness
import programs as P  # noqa: E402
from harness import peer_env  # noqa: E402  (one XLA/env setup for every peer process)

PEER = os.path.join(HERE, "program_peer.py")
HEARTBEAT_S = 4.0




@dataclass
class Violation:
    kind: str
    launch: int
    detail: str
    pos: int | None = None
    peer: int | None = None

    def tag(self) -> str:
        """Which known bug this looks like (for triage; the check is the kind)."""
        d = self.detail
        if self.kind == "HANG" and ("in step()" in d or "in finish()" in d) and (
                "faults near: none" in d or "all in the same jitted call" in d):
            return "deadlock-in-jitted-program"
        if self.kind == "HANG" and "master" in d.split("the others")[0]:
            return ("sync-hangs-across-master-restart" if "in sync()" in d
                    else "hang-after-master-restart")
        if "not yet waited for" in d or "a previous collective failed" in d:
            return "unusable-after-failure-between-start-and-wait"
        if self.kind == "UNEXPLAINED" and "finish()" in d and "guard: sync_shared_state()" in d:
            return "wait-fails-after-unguarded-sync_shared_state"
        if self.kind == "SYNC" and "different structure" in d:
            return "sync-returns-changed-shapes"
        if self.kind == "GUARD":
            return "no-guard-" + ("sync_shared_state" if "sync_shared_state" in d else "update_topology")
        return self.kind.lower()

    def key(self) -> tuple:
        """Violations with the same key are one finding (a cascade of one cause)."""
        return (self.kind, self.launch, self.peer, self.tag(),
                self.detail.split(" at position")[0][:60] if self.kind != "INEXACT" else self.pos)


@dataclass
class LaunchResult:
    launch: int
    plan: dict
    violations: list = field(default_factory=list)
    steps_ok: int = 0
    steps_failed: int = 0
    programs: int = 0
    wall_s: float = 0.0
    workdir: str = ""
    events: list = field(default_factory=list)


# A fault triggered this close to the end is skipped (see on_record).
LATE_FAULT_ROOM = 4
FAULT_KINDS = ("kill", "stop", "close", "master")  # + "stop_master" (compound, see plan_launch)
FAULT_WEIGHTS = {"kill": 3, "stop": 2, "close": 2, "master": 2}


def plan_launch(seed: int, launch: int, n_programs: int, per_launch: int, steps: int,
                peers: tuple[int, int], faults: bool, kinds: tuple = FAULT_KINDS,
                max_stmts: int = 7, with_kinds: bool = False) -> dict:
    rng = random.Random(f"pccl-launch:{seed}:{launch}")
    first = launch * per_launch
    count = min(per_launch, n_programs - first)
    n = rng.randint(peers[0], peers[1])
    total = count * steps
    events = []
    if faults and total >= 6:
        close_used = set()
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            kind = rng.choices(kinds, weights=[FAULT_WEIGHTS[k] for k in kinds])[0]
            ev = {"kind": kind, "pos": rng.randint(1, total - 5), "peer": rng.randrange(n),
                  "call": rng.choice(("step", "step", "sync", "update_topology", "finish")),
                  "delay": round(rng.uniform(0.0, 0.03), 4)}
            if kind == "stop":
                ev["for"] = round(rng.uniform(0.3, 7.0), 2)  # some outlive the heartbeat bound
            if kind == "kill":
                ev["respawn"] = rng.random() < 0.6
            if kind == "master":
                ev["down"] = round(rng.uniform(0.2, 3.0), 2)
            if kind == "close":
                if ev["peer"] in close_used:
                    continue
                close_used.add(ev["peer"])
            events.append(ev)
        events.sort(key=lambda e: e["pos"])
    plan = {"seed": seed, "launch": launch, "first": first, "programs": count, "steps": steps,
            "peers": n, "concurrency": rng.randint(1, 4), "events": events, "max_stmts": max_stmts,
            "with_kinds": with_kinds}
    # Sometimes a large shared-state leaf that differs on every peer: each sync
    # then moves megabytes, so faults land inside sync_shared_state too.
    plan["state_kib"] = rng.choice((0, 0, 0, 1024, 4096))
    # A compound fault, drawn from its own stream (the plans above stay as they
    # were): a peer frozen inside sync_shared_state (the others fetch from it),
    # the master killed and restarted meanwhile, then the peer thawed.
    extra = random.Random(f"pccl-launch-compound:{seed}:{launch}")
    if faults and total >= 6 and "stop" in kinds and "master" in kinds and extra.random() < 0.3:
        gap, down = round(extra.uniform(0.3, 2.0), 2), round(extra.uniform(0.2, 1.0), 2)
        plan["events"].append({"kind": "stop_master", "pos": extra.randint(1, total - 5),
                               "peer": extra.randrange(n), "call": "sync",
                               "delay": round(extra.uniform(0.0, 0.01), 4), "gap": gap,
                               "down": down, "for": round(gap + down + extra.uniform(1.5, 4.0), 2)})
        plan["state_kib"] = plan["state_kib"] or 1024
        plan["events"].sort(key=lambda e: e["pos"])
    return plan


class Tail:
    """Incremental reader of a JSON-lines file."""

    def __init__(self, path: str):
        self.path, self.offset, self.buf, self.records = path, 0, b"", []

    def poll(self) -> list:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.buf += data
        new = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                try:
                    new.append(json.loads(line))
                except ValueError:
                    new.append({"garbled": line[:200].decode(errors="replace")})
        self.records += new
        return new


class Launch:
    def __init__(self, plan: dict, timeout: float, workdir: str, log=print):
        self.plan, self.timeout, self.workdir, self.log = plan, timeout, workdir, log
        self.port = 0  # the first master lets the OS pick; restarts reuse its port
        self.master = None
        self.masters: list[subprocess.Popen] = []
        self.procs: dict[int, subprocess.Popen] = {}
        self.tails: dict[int, Tail] = {}
        self.killed: set[int] = set()
        self.stopped: dict[int, float] = {}  # peer -> SIGCONT time
        self.windows: list[dict] = []  # fault windows: kind, peer, t0, t1
        self.violations: list[Violation] = []
        self.next_index = plan["peers"]
        self.pending_events = list(plan["events"])
        self.master_up_at = None
        self.aborted_at = float("inf")
        self.total = plan["programs"] * plan["steps"]

    # -- processes ---------------------------------------------------------------
    def start_master(self) -> None:
        cmd = [sys.executable, "-m", "jax_pccl", "master", "--host", "127.0.0.1", "--port",
               str(self.port)]  # heartbeat: the default 4 s (no --heartbeat-timeout flag on this base)
        log = open(os.path.join(self.workdir, "master.log"), "ab")
        self.master = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=tempfile.gettempdir(),
                                       env=peer_env(), start_new_session=True)
        self.masters.append(self.master)
        ready, _, _ = select.select([self.master.stdout], [], [], 30)
        line = self.master.stdout.readline().decode(errors="replace") if ready else ""
        if "listening" in line and self.port == 0:
            self.port = int(line.split(" on ", 1)[1].split()[0].rsplit(":", 1)[1])
        if "listening" not in line:
            # Who holds the port? (e.g. a peer's outgoing connection that got it as its
            # ephemeral local port, or a reconnect attempt connected to itself)
            try:
                ss = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, timeout=10).stdout
                holders = [ln for ln in ss.splitlines() if f":{self.port} " in ln][:8]
            except (OSError, subprocess.SubprocessError) as exc:
                holders = [f"(ss failed: {exc})"]
            raise RuntimeError(f"master did not start on port {self.port}: {line!r}; sockets on "
                               f"that port: {holders}")

    def kill_master(self) -> None:
        for m in self.masters:
            if m.poll() is None:
                os.killpg(m.pid, signal.SIGKILL)
                m.wait()

    def spawn(self, index: int, world: int, close_at: str = "") -> None:
        out = os.path.join(self.workdir, f"peer{index}.jsonl")
        p = self.plan
        cmd = [sys.executable, PEER, "--master", f"127.0.0.1:{self.port}", "--index", str(index),
               "--seed", str(p["seed"]), "--first", str(p["first"]), "--programs", str(p["programs"]),
               "--steps", str(p["steps"]), "--timeout", str(self.timeout),
               "--max-stmts", str(p["max_stmts"]), "--state-kib", str(p["state_kib"]),
               "--concurrency", str(p["concurrency"]), "--world", str(world), "--out", out]
        if p["with_kinds"]:
            cmd += ["--with-kinds"]
        if close_at:
            cmd += ["--close-at", close_at]
        err = open(os.path.join(self.workdir, f"peer{index}.err"), "wb")
        self.procs[index] = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=REPO, env=peer_env(),
                                             start_new_session=True)
        self.tails[index] = Tail(out)
        self.windows.append({"kind": "spawn", "peer": index, "t0": time.time(), "t1": time.time()})

    def signal(self, index: int, sig: int) -> bool:
        try:
            os.killpg(self.procs[index].pid, sig)
            return True
        except ProcessLookupError:
            return False

    def alive(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def stderr_tail(self, index: int, n: int = 1500) -> str:
        try:
            with open(os.path.join(self.workdir, f"peer{index}.err"), "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    # -- bounds --------------------------------------------------------------------
    def bound(self, call: str) -> float:
        if call in ("connect", "reconnect"):
            return 90 + 20
        # a collective fails within `timeout` of no progress; sync may take 2x;
        # slack for first-use compiles and 2 busy cores
        return 2 * self.timeout + 15

    # -- the run -------------------------------------------------------------------
    def run(self) -> None:
        p = self.plan
        self.start_master()
        closes = {e["peer"]: f"{e['pos']}:{e['delay']}" for e in p["events"] if e["kind"] == "close"}
        for i in range(p["peers"]):
            self.spawn(i, p["peers"], closes.get(i, ""))
        self.pending_events = [e for e in p["events"] if e["kind"] != "close"]
        deadline = time.time() + 60 + 2.0 * self.total + 45 * len(p["events"])
        scheduled: list[tuple[float, str, dict]] = []  # (when, action, event)
        try:
            while self.alive() or self.stopped:
                now = time.time()
                for i, tail in self.tails.items():
                    for rec in tail.poll():
                        self.on_record(i, rec, now, scheduled)
                for item in sorted(scheduled, key=lambda x: x[0]):
                    if item[0] <= now:
                        scheduled.remove(item)
                        self.act(item[1], item[2], now, scheduled)
                for i, t_cont in list(self.stopped.items()):
                    if now >= t_cont:
                        self.signal(i, signal.SIGCONT)
                        del self.stopped[i]
                        for w in self.windows:
                            if w["kind"] == "stop" and w["peer"] == i and w["t1"] is None:
                                w["t1"] = now
                if self.check_hangs(now):
                    break
                if now > deadline:
                    self.aborted_at = now
                    running = self.alive()
                    self.violations.append(Violation(
                        "HANG", p["launch"], f"launch deadline passed; peers still running: "
                        + "; ".join(f"peer {i}: last record {json.dumps(self.tails[i].records[-1:])[:400]}"
                                    for i in running)))
                    break
                time.sleep(0.003)
        finally:
            for i in list(self.stopped):
                self.signal(i, signal.SIGCONT)
            for i, proc in self.procs.items():
                if proc.poll() is None:
                    self.signal(i, signal.SIGKILL)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            self.kill_master()
        for i, tail in self.tails.items():
            tail.poll()

    def on_record(self, i: int, rec: dict, now: float, scheduled: list) -> None:
        if rec.get("closing"):
            self.windows.append({"kind": "close", "peer": i, "t0": rec["t"], "t1": rec["t"]})
        if rec.get("phase") != "begin":
            return
        for ev in list(self.pending_events):
            trigger_peer = ev["peer"]
            if ev["kind"] == "master":
                trigger_peer = i  # any peer's progress
            if (i == trigger_peer and rec["call"] == ev["call"] and rec.get("pos", -1) >= ev["pos"]) or (
                    i == trigger_peer and rec.get("pos", -1) >= ev["pos"] + 3):  # call never came
                self.pending_events.remove(ev)
                if rec.get("pos", -1) > self.total - LATE_FAULT_ROOM:
                    # Planned at most at total - 5, but the peer got here late
                    # (frozen, slowed by load): a fault now would hit the last
                    # positions, which leave the survivors no position to
                    # recover in (NO_RECOVERY would blame them). Skipped.
                    self.log(f"    fault {ev['kind']} of peer {ev['peer']} skipped: "
                             f"triggered at position {rec.get('pos')} of {self.total}")
                    continue
                # a sync lasts a few ms: fire sooner so the fault lands inside it
                delay = ev["delay"] * (0.2 if ev["call"] == "sync" else 1.0)
                scheduled.append((now + delay, ev["kind"], ev))

    def act(self, action: str, ev: dict, now: float, scheduled: list) -> None:
        target = ev["peer"]
        alive = [i for i in self.alive() if i not in self.stopped]
        if action == "kill":
            if target not in alive or len(alive) < 2:
                return
            self.signal(target, signal.SIGKILL)
            self.killed.add(target)
            self.windows.append({"kind": "kill", "peer": target, "t0": now, "t1": now})
            self.log(f"    t+{now - self.t_start:.1f}s kill peer {target}")
            if ev.get("respawn"):
                scheduled.append((now + 0.5, "respawn", ev))
        elif action == "respawn":
            i = self.next_index
            self.next_index += 1
            self.spawn(i, 0)
            self.log(f"    t+{now - self.t_start:.1f}s newcomer peer {i}")
        elif action == "stop":
            if target not in alive or len(alive) < 2:
                return
            self.signal(target, signal.SIGSTOP)
            self.stopped[target] = now + ev["for"]
            self.windows.append({"kind": "stop", "peer": target, "t0": now, "t1": None})
            self.log(f"    t+{now - self.t_start:.1f}s SIGSTOP peer {target} for {ev['for']} s")
        elif action == "stop_master":
            if target not in alive or len(alive) < 2:
                return
            self.act("stop", ev, now, scheduled)
            scheduled.append((now + ev["gap"], "master", ev))
        elif action == "master":
            if any(w["kind"] == "master" and w["t1"] is None for w in self.windows):
                return  # still down from the previous master fault
            self.kill_master()
            self.windows.append({"kind": "master", "peer": None, "t0": now, "t1": None})
            self.log(f"    t+{now - self.t_start:.1f}s master killed, down {ev['down']} s")
            scheduled.append((now + ev["down"], "master_up", ev))
        elif action == "master_up":
            self.start_master()
            for w in self.windows:
                if w["kind"] == "master" and w["t1"] is None:
                    w["t1"] = time.time()

    def check_hangs(self, now: float) -> bool:
        for i in self.alive():
            if i in self.stopped:
                continue
            recs = self.tails[i].records
            if not recs or recs[-1].get("phase") != "begin":
                continue
            last = recs[-1]
            started = last["t"]
            # time spent stopped does not count against this peer
            for w in self.windows:
                if w["kind"] == "stop" and w["peer"] == i and w["t0"] >= started:
                    started += (w["t1"] or now) - w["t0"]
            if now - started > self.bound(last["call"]):
                others = {j: self.tails[j].records[-1:] for j in self.tails if j != i}
                near = self.explained(last["t"], now, i)
                live = [j for j in self.alive() if j != i]
                same = bool(live) and all(
                    self.tails[j].records and self.tails[j].records[-1].get("phase") == "begin"
                    and self.tails[j].records[-1].get("call") == last["call"]
                    and self.tails[j].records[-1].get("pos") == last.get("pos") for j in live)
                self.aborted_at = now  # what the others see after this is the driver's kill
                self.violations.append(Violation(
                    "HANG", self.plan["launch"],
                    f"peer {i} in {last['call']}() for {now - last['t']:.0f} s (bound "
                    f"{self.bound(last['call']):.0f} s){'; the live peers are all in the same jitted call' if same else ''}; faults near: "
                    f"{[(w['kind'], w['peer']) for w in near] or 'none'}; the others' last records: "
                    f"{json.dumps(others)[:600]}{self.program_at(last.get('pos'))}", last.get("pos"), i))
                return True
        return False

    def program_at(self, pos) -> str:
        if pos is None or not 0 <= pos < self.total:
            return ""
        index = self.plan["first"] + pos // self.plan["steps"]
        return f"; program {index} step {pos % self.plan['steps']}: " + P.describe(
            P.generate(self.plan["seed"], index, self.plan["max_stmts"], self.plan["with_kinds"]))

    # -- analysis ---------------------------------------------------------------------
    def explained(self, t0: float, t1: float, peer: int, master_only: bool = False) -> list[dict]:
        """Fault windows that may explain an error in a call running from t0 to t1."""
        out = []
        for w in self.windows:
            if w["kind"] == "spawn":
                continue
            w0, w1 = w["t0"], (w["t1"] if w["t1"] is not None else time.time())
            after = {"kill": 2 * self.timeout + 3, "stop": 2 * self.timeout + 3,
                     "close": 2 * self.timeout + 3, "master": 15.0}[w["kind"]]
            if w0 - 3.0 <= t1 and t0 <= w1 + after:
                out.append(w)
        return out

    def analyse(self) -> None:
        p = self.plan
        programs = {}
        by_key: dict[tuple, list] = {}
        peers_all = sorted(self.procs)
        for i, tail in self.tails.items():
            begins = {}
            for rec in tail.records:
                if rec.get("phase") == "begin":
                    begins[rec["call"]] = rec["t"]
                    continue
                if "stuck" in rec:
                    self.violations.append(Violation("STUCK", p["launch"], f"peer {i}: {rec['stuck']}; "
                                                     f"its last errors: {self.last_errors(i)}", peer=i))
                if rec.get("phase") != "end":
                    continue
                dur = rec.get("dur", 0.0)
                if dur > self.bound(rec["call"]):
                    self.violations.append(Violation(
                        "SLOW", p["launch"], f"peer {i}: {rec['call']}() took {dur:.1f} s (bound "
                        f"{self.bound(rec['call']):.0f} s)", rec.get("pos"), i))
                if rec["call"] == "guard":  # expected to raise (PcclError)
                    if rec["ok"] and not self.discarded_by_guard(i, rec):
                        self.violations.append(Violation(
                            "GUARD", p["launch"], f"peer {i}: {rec.get('what')}() with a started "
                            f"all_reduce outstanding returned instead of raising PcclError",
                            rec.get("pos"), i))
                    continue
                if not rec["ok"] and rec["t"] >= self.aborted_at:
                    continue  # the driver ended the launch (HANG): errors from here on are its doing
                if not rec["ok"]:
                    self.check_error(i, rec, begins.get(rec["call"], rec["t"] - dur))
                    if rec["call"] in ("step", "finish"):
                        self.steps_failed_by.setdefault(i, set()).add(rec["pos"])
                    continue
                if rec["call"] == "sync" and rec.get("bad_structure"):
                    self.violations.append(Violation(
                        "SYNC", p["launch"], f"peer {i}: sync_shared_state() returned a different "
                        f"structure than it was given: {rec['bad_structure']}", rec.get("pos"), i))
                    continue
                if rec["call"] == "sync":
                    # one sync = (revision, epoch): a peer that syncs alone later (the others
                    # done) may reuse a revision number with other content
                    self.syncs.setdefault((rec["revision"], rec.get("epoch")), []).append(
                        (i, rec["state"], rec["state_pos"]))
                if rec["call"] == "step":
                    by_key.setdefault((rec["pos"], rec["epoch"]), []).append((i, rec))
                    self.steps_ok_by.setdefault(i, set()).add(rec["pos"])
        # guard outcomes that raised: any error is fine (PcclError expected)
        for (pos, epoch), group in sorted(by_key.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            prog_index, step = group[0][1]["prog"], group[0][1]["step"]
            prog = programs.setdefault(
                prog_index, P.generate(p["seed"], prog_index, p["max_stmts"], p["with_kinds"]))
            self.check_step(prog, pos, step, group, peers_all)
        for rev, entries in self.syncs.items():
            if len({s for _, s, _ in entries}) > 1:
                self.violations.append(Violation(
                    "SYNC", p["launch"], f"revision, epoch {rev}: peers hold different shared state after "
                    f"sync: {entries}"))
        # recovery: every peer that finished did its last position successfully
        for i, proc in self.procs.items():
            rc = proc.returncode
            recs = self.tails[i].records
            done = any("done" in r for r in recs)
            if i in self.killed:
                continue
            if rc == 4:
                continue  # STUCK, reported above
            if rc not in (0, None) and self.aborted_at == float("inf"):
                self.violations.append(Violation(
                    "CRASH", p["launch"], f"peer {i} exited with {rc}: {self.stderr_tail(i)}", peer=i))
            if done and (self.total - 1) not in self.steps_ok_by.get(i, set()):
                self.violations.append(Violation(
                    "NO_RECOVERY", p["launch"], f"peer {i}: the last position ({self.total - 1}) did "
                    f"not succeed (failed positions: {sorted(self.steps_failed_by.get(i, []))[-8:]}); "
                    f"last errors: {self.last_errors(i)}", self.total - 1, i))

    def discarded_by_guard(self, i: int, guard: dict) -> bool:
        """update_topology() may return with starts outstanding only when their
        epoch had failed: it discards them (API.md, Failures), and the later
        wait (the position's `finish`) must then raise that peer failure."""
        if guard.get("what") != "update_topology":
            return False
        for r in self.tails[i].records:
            if (r.get("call") == "finish" and r.get("phase") == "end" and r.get("pos") == guard.get("pos")
                    and not r["ok"] and r["err"]["peer_failure"]
                    and "discarded by update_topology()" in r["err"]["msg"]):
                return True
        return False

    def last_errors(self, i: int, n: int = 3) -> str:
        errs = [f"{r['call']}@{r.get('pos')}: {r['err']['type']}: {r['err']['msg'][:200]}"
                for r in self.tails[i].records if r.get("phase") == "end" and not r.get("ok", True)]
        return " | ".join(errs[-n:]) or "(none)"

    def check_error(self, i: int, rec: dict, t0: float) -> None:
        err = rec["err"]
        near = self.explained(t0, rec["t"], i)
        what = (f"peer {i}: {rec['call']}() at position {rec.get('pos')} raised {err['type']}: "
                f"{err['msg'][:400]} (is_peer_failure={err['peer_failure']})")
        if rec["call"] in ("step", "finish"):
            what += self.program_at(rec.get("pos"))
        if not near:
            self.violations.append(Violation("UNEXPLAINED", self.plan["launch"],
                                             what + "; no fault anywhere near", rec.get("pos"), i))
            return
        if err["peer_failure"]:
            return
        if err["master"] and any(w["kind"] == "master" for w in near):
            return
        own = [w for w in near if w["peer"] == i and w["kind"] in ("stop", "close")]
        text = err["type"] + " " + err["msg"]
        if own and any(s in text.lower() for s in ("removed from the run", "closed", "cancel")):
            return  # the faulted peer's own eviction / close
        self.violations.append(Violation(
            "NOT_PEER_FAILURE", self.plan["launch"],
            what + f"; near fault(s) {[(w['kind'], w['peer']) for w in near]}", rec.get("pos"), i))

    def check_step(self, prog: dict, pos: int, step: int, group: list, peers_all: list) -> None:
        launch = self.plan["launch"]
        reporters = sorted(i for i, _ in group)
        digests = {i: r["digest"] for i, r in group}
        if len(set(digests.values())) > 1:
            self.violations.append(Violation("DIVERGENT", launch, f"position {pos}: peers got different "
                                             f"bytes: {digests}", pos))
        worlds = {w for _, r in group for w in r["infos"]}
        if len(worlds) > 1:
            self.violations.append(Violation("WORLD", launch, f"position {pos}: info.world_size values "
                                             f"{sorted(worlds)} in one step", pos))
        i0, rec = group[0]
        got = [np.frombuffer(bytes.fromhex(h), dtype=P.np_dtype(dt)).reshape(shape)
               for dt, shape, h in rec["outs"]]
        sizes = [len(reporters) + k for k in range(len(peers_all) - len(reporters) + 1)]
        if worlds and len(worlds) == 1:
            sizes = [next(iter(worlds))]
            if sizes[0] < len(reporters):
                # Rings are keyed by epoch: more peers than the ring held report this
                # (position, epoch), so two rings ran under one epoch number.
                self.violations.append(Violation(
                    "EPOCH", launch, f"position {pos}: peers {reporters} all report epoch "
                    f"{group[0][1]['epoch']} at world size {sizes[0]}: two rings ran under one "
                    f"epoch (a restarted master reused it)", pos))
                return
        others = [j for j in peers_all if j not in reporters]
        tried = None
        for size in sizes:
            for extra in itertools.combinations(others, size - len(reporters)):
                members = sorted(reporters + list(extra))
                ins = {j: P.make_inputs(prog, j, step) for j in members}
                ref = P.reference(prog, ins)
                tried = tried or (members, ref)
                if len(ref) == len(got) and all(
                        r.dtype == g.dtype and r.shape == g.shape and r.tobytes() == g.tobytes()
                        for r, g in zip(ref, got)):
                    self.steps_ok += 1
                    return
        members, ref = tried if tried else (reporters, None)
        detail = ""
        if ref is not None:
            for k, (r, g) in enumerate(zip(ref, got)):
                if r.dtype != g.dtype or r.shape != g.shape or r.tobytes() != g.tobytes():
                    detail = (f"output {k} ({P.output_ids(prog)[k]}): got {g.dtype}{g.shape} "
                              f"{g.reshape(-1)[:6].tolist()}, expected {r.dtype}{r.shape} "
                              f"{r.reshape(-1)[:6].tolist()} (peers {members})")
                    break
            if len(ref) != len(got):
                detail = f"{len(got)} outputs, expected {len(ref)}"
        self.violations.append(Violation(
            "INEXACT", launch, f"position {pos} (program {prog['index']} step {step}) on peers "
            f"{reporters}, world {sorted(worlds)}: {detail}; program: {P.describe(prog)}", pos))


def run_launch(plan: dict, timeout: float, keep: bool = False, log=print) -> LaunchResult:
    workdir = tempfile.mkdtemp(prefix=f"pccl-fuzz-{plan['seed']}-{plan['launch']}-")
    launch = Launch(plan, timeout, workdir, log)
    launch.syncs, launch.steps_ok_by, launch.steps_failed_by = {}, {}, {}
    launch.steps_ok = 0
    t0 = launch.t_start = time.time()
    try:
        launch.run()
    except Exception as exc:  # noqa: BLE001 - the driver itself failed: a violation too
        launch.violations.append(Violation("DRIVER", plan["launch"], f"{type(exc).__name__}: {exc}"))
    launch.analyse()
    res = LaunchResult(plan["launch"], plan, launch.violations, launch.steps_ok,
                       sum(len(v) for v in launch.steps_failed_by.values()), plan["programs"],
                       time.time() - t0, workdir, launch.windows)
    if not res.violations and not keep:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
        res.workdir = ""
    return res


def replay_command(args, launch: int | None) -> str:
    cmd = (f".venv/bin/python tests/fuzz/run_programs.py --seed {args.seed} --programs {args.programs} "
           f"--peers {args.peers} --per-launch {args.per_launch} --steps {args.steps} "
           f"--timeout {args.timeout:g}{' --faults' if args.faults else ''}"
           + (f" --fault-kinds {args.fault_kinds}" if args.fault_kinds != ",".join(FAULT_KINDS) else "")
           + (f" --max-stmts {args.max_stmts}" if args.max_stmts != 7 else "")
           + (" --with-kinds" if args.with_kinds else ""))
    return cmd + (f" --launch {launch}" if launch is not None else "")


def parse_peers(text: str) -> tuple[int, int]:
    a, _, b = str(text).partition("-")
    lo, hi = int(a), int(b or a)
    if not 2 <= lo <= hi <= 3:
        raise argparse.ArgumentTypeError("--peers: 2, 3 or 2-3")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
    ap.add_argument("--programs", type=int, default=50)
    ap.add_argument("--peers", default="2-3")
    ap.add_argument("--faults", action="store_true")
    ap.add_argument("--fault-kinds", default=",".join(FAULT_KINDS),
                    help="comma-separated subset of " + ",".join(FAULT_KINDS))
    ap.add_argument("--max-stmts", type=int, default=7, help="statements per program, at most")
    ap.add_argument("--with-kinds", action="store_true",
                    help="add all_gather / reduce_scatter / broadcast statements (programs.py)")
    ap.add_argument("--per-launch", type=int, default=25, help="programs per peer process")
    ap.add_argument("--steps", type=int, default=2, help="steps (fresh inputs) per program")
    ap.add_argument("--timeout", type=float, default=6.0, help="Communicator timeout")
    ap.add_argument("--launch", type=int, default=None, help="replay only this launch")
    ap.add_argument("--keep", action="store_true", help="keep the peer logs of clean launches")
    ap.add_argument("--json", default="", help="write the summary here")
    return ap


def run(args, log=print) -> dict:
    if args.seed is None:
        args.seed = int(time.time()) % 1_000_000
    peers = parse_peers(args.peers)
    n_launches = math.ceil(args.programs / args.per_launch)
    launches = [args.launch] if args.launch is not None else list(range(n_launches))
    log(f"program fuzz: seed {args.seed}, {args.programs} programs x {args.steps} steps, "
        f"{len(launches)} launch(es), peers {args.peers}, faults {'on' if args.faults else 'off'}")
    t0 = time.time()
    results = []
    for b in launches:
        plan = plan_launch(args.seed, b, args.programs, args.per_launch, args.steps, peers, args.faults,
                           tuple(args.fault_kinds.split(",")), args.max_stmts, args.with_kinds)
        log(f"  launch {b}: programs {plan['first']}..{plan['first'] + plan['programs'] - 1}, "
            f"{plan['peers']} peers, concurrency {plan['concurrency']}, shared state "
            f"+{plan['state_kib']} KiB, faults "
            f"{[(e['kind'], e['peer'], e['call'], e['pos']) for e in plan['events']]}")
        res = run_launch(plan, args.timeout, args.keep, log)
        results.append(res)
        log(f"  launch {b}: {res.steps_ok} exact steps, {res.steps_failed} failed steps, "
            f"{len(res.violations)} violation(s), {res.wall_s:.1f} s"
            + (f", logs in {res.workdir}" if res.workdir else ""))
        seen, unique = set(), []
        for v in res.violations:
            if v.key() not in seen:
                seen.add(v.key())
                unique.append(v)
        if len(unique) < len(res.violations):
            log(f"  ({len(res.violations) - len(unique)} repeated violation(s) of the same cause not shown)")
        res.violations = unique
        for v in res.violations:
            log(f"VIOLATION {v.kind} [{v.tag()}] (seed {args.seed}, launch {v.launch}"
                + (f", position {v.pos}" if v.pos is not None else "")
                + (f", peer {v.peer}" if v.peer is not None else "") + f"): {v.detail}")
            log(f"  replay: {replay_command(args, v.launch)}")
    wall = time.time() - t0
    n_prog = sum(r.programs for r in results)
    summary = {
        "seed": args.seed, "programs": n_prog, "launches": len(results), "wall_s": round(wall, 1),
        "programs_per_minute": round(60 * n_prog / wall, 1) if wall else None,
        "steps_exact": sum(r.steps_ok for r in results),
        "steps_failed": sum(r.steps_failed for r in results),
        "violations": [{"kind": v.kind, "tag": v.tag(), "launch": v.launch, "pos": v.pos, "peer": v.peer,
                        "detail": v.detail[:2000], "replay": replay_command(args, v.launch)}
                       for r in results for v in r.violations],
        "kinds": sorted({v.kind for r in results for v in r.violations}),
        "tags": sorted({v.tag() for r in results for v in r.violations}),
        "clean_launch_programs_per_minute": (
            round(60 * sum(r.programs for r in results if not r.violations)
                  / sum(r.wall_s for r in results if not r.violations), 1)
            if any(not r.violations for r in results) else None),
        "replay": replay_command(args, None),
    }
    log(f"program fuzz: {'FAILED' if summary['violations'] else 'OK'}: {n_prog} programs, "
        f"{summary['steps_exact']} exact steps, {summary['steps_failed']} failed steps, "
        f"{len(summary['violations'])} violation(s) {summary['tags']}, {wall:.0f} s "
        f"({summary['programs_per_minute']} programs/min); replay: {summary['replay']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    summary = run(args, log=lambda s: print(s, flush=True))
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
