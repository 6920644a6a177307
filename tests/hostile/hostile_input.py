"""Hostile input against a live master and a live peer's ring listener.

    python tests/hostile/hostile_input.py --seconds 120 --seed 1   # by hand
    (tests/test_hostile_input.py runs a short version in the suite)

A master with a shared secret runs in its own process (tests/hostile/
master_proc.py), and one correct peer (tests/hostile/peer.py, "resident")
all_reduces in a loop. Its ring listener port comes from the master's status.
Both ports, on 127.0.0.1 only, then get for --seconds, in rounds:
random bytes, huge length prefixes, truncated frames, oversized frames (before
and after authentication), replayed handshake responses, malformed first
messages from a member holding the secret, slow clients that stall mid-frame
(at most --max-stalled held at once), silent connections held open from the
start, and --rapid connect/close pairs. Held connections stay below the ring's
limit of 64 unidentified ones, past which a peer refuses everyone by design.

Checks (exit status 1 and a list of problems if any fails):
  - no replayed or garbage handshake is ever accepted, and every input that
    owes a verdict (bad length, oversized, replay, malformed message) makes
    the server drop the connection;
  - silent connections are dropped once the handshake deadline has passed;
  - the master and the resident stay up, and the resident keeps completing
    all_reduces during the attack;
  - right after it, a second correct peer joins and both all_reduce exactly;
  - the master's RSS grows by less than --max-rss-growth-mib.
Prints the count tried per category and target, and RSS before and after; the
last line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import attacks  # noqa: E402
import harness  # noqa: E402

MASTER_HANDSHAKE_DEADLINE_S = 10.0  # MasterConfig::handshake_timeout_s
RING_HANDSHAKE_DEADLINE_S = 5.0  # ring_links.cc kHandshakeSeconds
START_TIMEOUT_S = 120.0
SLACK_S = 1.5  # past a deadline, for the server's 200 ms poll tick on a busy box  # process start-up, JAX import included, on a busy 2-core box


def rss_kib(pid: int) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


def records(path: str) -> list:
    return harness.complete_jsonl(path)


class Run:
    """The processes of one run; everything is killed on close()."""

    def __init__(self, workdir: str, secret_hex: str):
        self.workdir = workdir
        self.env = dict(harness.peer_env(), PCCL_HOSTILE_SECRET_HEX=secret_hex, JAX_PCCL_LOG="warn")
        self.procs: list[subprocess.Popen] = []
        self.master = None

    def spawn(self, args: list, log: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, *args], stderr=open(os.path.join(self.workdir, log), "w"),
                             cwd=harness.REPO_ROOT, env=self.env, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def start_master(self) -> dict:
        self.master = self.spawn([str(HERE / "master_proc.py")], "master.log",
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self.read_master(START_TIMEOUT_S)

    def read_master(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.master.stdout], [], [], timeout)
        line = self.master.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"master gave no answer within {timeout:.0f}s:\n{self.master_log()}")
        return json.loads(line)

    def master_status(self) -> dict:
        self.master.stdin.write("status\n")
        self.master.stdin.flush()
        return self.read_master(10.0)

    def master_log(self) -> str:
        with open(os.path.join(self.workdir, "master.log"), errors="replace") as f:
            return f.read()[-3000:]

    def peer(self, role: str, address: str, value: int, seconds: float, **files) -> tuple:
        out = os.path.join(self.workdir, f"{role}.jsonl")
        args = [str(HERE / "peer.py"), "--master", address, "--role", role, "--value", str(value),
                "--out", out, "--seconds", str(seconds)]
        for name, path in files.items():
            args += [f"--{name.replace('_', '-')}", path]
        return self.spawn(args, f"{role}.log", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL), out

    def close(self) -> None:
        if self.master is not None and self.master.poll() is None:
            try:
                self.master.stdin.write("quit\n")
                self.master.stdin.flush()
                self.master.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def wait_record(path: str, key: str, timeout: float, proc: subprocess.Popen) -> dict | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for r in records(path):
            if key in r or "fatal" in r:
                return r
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


class Attack:
    """The attack phase: tallies, held sockets and handshake probes."""

    def __init__(self, targets: list, rng: random.Random, args):
        self.targets = targets
        self.rng = rng
        self.args = args
        self.tally: dict = defaultdict(Counter)  # (target, category) -> verdict counts
        self.silent: list = []  # (target name, socket, opened at)
        self.stalled: dict = defaultdict(list)  # target name -> sockets, oldest first
        self.probes: dict = defaultdict(list)

    def open_silent(self) -> None:
        for t in self.targets:
            for _ in range(self.args.silent_master if t.name == "master" else self.args.silent_ring):
                self.silent.append((t.name, attacks.connect(t), time.monotonic()))
            self.tally[(t.name, "silent")]["held"] += len([s for s in self.silent if s[0] == t.name])

    def rapid(self) -> None:
        for t in self.targets:
            done = attacks.rapid_connects(t, self.args.rapid)
            self.tally[(t.name, "rapid_connects")]["connected"] += done
            self.tally[(t.name, "rapid_connects")]["failed"] += self.args.rapid - done

    def one_round(self) -> None:
        for t in self.targets:
            for name, fn in attacks.ROUND:
                for _ in range(self.args.per_round):
                    self.tally[(t.name, name)][self.safely(fn, t)] += 1
            self.tally[(t.name, "oversized_after_auth")][self.safely(attacks.oversized_after_auth, t)] += 1
            self.stall(t)
            self.probes[t.name].append(attacks.probe(t))

    def stall(self, t) -> None:
        """One more stalled client; beyond --max-stalled the oldest is let go.

        The cap stays below the ring's 64 unidentified connections (with the
        silent ones): past that limit a peer turns everybody away, by design
        (docs/security.md), and this run tests robustness, not that limit."""
        held = self.stalled[t.name]
        try:
            held.append(attacks.stalled(t, self.rng))
            self.tally[(t.name, "stalled_mid_frame")]["held"] += 1
        except OSError:
            self.tally[(t.name, "stalled_mid_frame")]["closed"] += 1
        while len(held) > self.args.max_stalled:
            held.pop(0).close()

    def safely(self, fn, t) -> str:
        try:
            return fn(t, self.rng)
        except OSError:
            return "closed"  # refused or reset at connect/send: the server is shedding us

    def silent_verdicts(self) -> dict:
        """Per target: silent connections the server closed / still open, and their age."""
        out = {}
        for name in {s[0] for s in self.silent}:
            mine = [s for s in self.silent if s[0] == name]
            closed = sum(attacks.wire.closed_by_remote(sock, 0.05) for _, sock, _ in mine)
            age = time.monotonic() - min(t0 for _, _, t0 in mine)
            out[name] = {"held": len(mine), "closed_by_server": closed, "age_s": round(age, 1)}
        return out

    def release_stalled(self) -> None:
        for held in self.stalled.values():
            for sock in held:
                sock.close()

    def silent_after_deadlines(self) -> dict:
        """Waits until every silent connection is past its server's handshake
        deadline (plus slack), then reports which ones the server closed."""
        deadlines = {"master": MASTER_HANDSHAKE_DEADLINE_S, "ring": RING_HANDSHAKE_DEADLINE_S}
        if self.silent:
            oldest = min(t0 for _, _, t0 in self.silent)
            time.sleep(max(0.0, oldest + max(deadlines.values()) + SLACK_S - time.monotonic()))
        verdicts = self.silent_verdicts()
        for name, v in verdicts.items():
            v["deadline_s"] = deadlines[name]
        for _, sock, _ in self.silent:
            sock.close()
        return verdicts


def run(args) -> dict:
    rng = random.Random(args.seed)
    secret_hex = rng.randbytes(32).hex()
    workdir = tempfile.mkdtemp(prefix="pccl-hostile-")
    problems: list[str] = []
    summary: dict = {"workdir": workdir, "problems": problems, "seed": args.seed}
    r = Run(workdir, secret_hex)
    try:
        _run(args, rng, bytes.fromhex(secret_hex), r, summary, problems)
    finally:
        r.close()
    if not problems:  # the logs are kept only when something went wrong
        shutil.rmtree(workdir, ignore_errors=True)
        summary["workdir"] = ""
    return summary


def _run(args, rng, secret: bytes, r: Run, summary: dict, problems: list) -> None:
    address = r.start_master()["address"]
    stop_file = os.path.join(r.workdir, "stop")
    go_file = os.path.join(r.workdir, "go")
    life = args.seconds + 3 * START_TIMEOUT_S
    resident, resident_out = r.peer("resident", address, 1, life, stop_file=stop_file)
    joiner, joiner_out = r.peer("joiner", address, 2, life, go_file=go_file)
    rec = wait_record(resident_out, "connected", START_TIMEOUT_S, resident)
    if rec is None or "fatal" in rec:
        raise RuntimeError(f"resident peer did not join: {rec}\n{r.master_log()}")
    [peer] = r.master_status()["peers"]
    host, _, ring_port = peer["address"].rpartition(":")
    assert host == "127.0.0.1", peer
    targets = [attacks.Target("master", int(address.rpartition(":")[2]), attacks.wire.CTX_MASTER,
                              secret, attacks.wire.RESPONSE_SIZE),
               attacks.Target("ring", int(ring_port), attacks.wire.CTX_RING, secret, 512)]
    for t in targets:
        attacks.record_m2(t)

    master_pid = r.master.pid
    rss_before = rss_kib(master_pid)
    steps_before = len([x for x in records(resident_out) if "ok" in x])
    attack = Attack(targets, rng, args)
    attack.open_silent()
    t_rapid = time.monotonic()
    attack.rapid()
    rapid_s = time.monotonic() - t_rapid
    t_attack = time.monotonic()
    rounds = 0
    while time.monotonic() - t_attack < args.seconds or rounds < args.min_rounds:
        attack.one_round()
        rounds += 1
    attack_s = time.monotonic() - t_attack
    steps_during = len([x for x in records(resident_out) if "ok" in x]) - steps_before
    attack.release_stalled()  # silent ones stay open: their verdict comes at the end
    rss_after_attack = rss_kib(master_pid)

    # Right after: a correct peer joins and both all_reduce.
    t_join = time.monotonic()
    open(go_file, "w").close()
    try:
        joiner.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        problems.append(f"the joiner did not finish within {START_TIMEOUT_S:.0f}s")
    join_s = time.monotonic() - t_join
    joined = records(joiner_out)
    with_two = [x for x in joined if x.get("world") == 2]
    resident_two = [x for x in records(resident_out) if x.get("world") == 2]

    silent_final = attack.silent_after_deadlines()
    status = r.master_status()
    rss_after = rss_kib(master_pid)
    summary.update({
        "attack_s": round(attack_s, 1), "rounds": rounds, "rapid_connects_s": round(rapid_s, 1),
        "tried": {f"{t}/{c}": dict(v) for (t, c), v in sorted(attack.tally.items())},
        "silent": silent_final,
        "probe_handshake_s": {t: _latency(v) for t, v in attack.probes.items()},
        "resident_steps_during_attack": steps_during,
        "join_and_all_reduce_s": round(join_s, 1),
        "joiner_results": [x["sum"] for x in with_two], "resident_world2_results": len(resident_two),
        "master_rss_mib": {"before": _mib(rss_before["VmRSS"]),
                           "after_attack": _mib(rss_after_attack["VmRSS"]),
                           "after": _mib(rss_after["VmRSS"]), "peak": _mib(rss_after["VmHWM"])},
        "master_status_after": {k: status[k] for k in ("open_connections", "dropped_connections",
                                                        "auth_refusals", "world_size")},
    })
    _check(args, summary, attack, r, resident, joined, with_two, resident_two, problems)
    open(stop_file, "w").close()


def _latency(values: list) -> dict:
    finite = [v for v in values if v != float("inf")]
    return {"probes": len(values), "failed": len(values) - len(finite),
            "median": round(statistics.median(finite), 3) if finite else None,
            "max": round(max(finite), 3) if finite else None}


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def _check(args, s, attack, r, resident, joined, with_two, resident_two, problems) -> None:
    for (target, category), verdicts in attack.tally.items():
        if verdicts.get("accepted"):
            problems.append(f"{target}/{category}: {verdicts['accepted']} accepted")
        if category in attacks.VERDICT_DUE and verdicts.get("open"):
            problems.append(f"{target}/{category}: {verdicts['open']} left open (no verdict)")
    for name, v in s["silent"].items():
        if v["closed_by_server"] != v["held"]:
            problems.append(f"{name}: {v['held'] - v['closed_by_server']} silent connections "
                            f"still open after {v['age_s']}s (deadline {v['deadline_s']}s)")
    for name, lat in s["probe_handshake_s"].items():
        if lat["failed"]:
            problems.append(f"{name}: {lat['failed']} legitimate handshakes failed during the attack")
    if r.master.poll() is not None:
        problems.append(f"master exited with {r.master.returncode}")
    if resident.poll() is not None:
        problems.append(f"resident peer exited with {resident.returncode}")
    if s["resident_steps_during_attack"] == 0:
        problems.append("the resident completed no all_reduce during the attack")
    fatal = [x for x in joined if "fatal" in x]
    if fatal or len(with_two) < args.join_steps:
        problems.append(f"the joiner did not all_reduce with the resident: {joined[-3:]}")
    if any(x["sum"] != [3] * 8 for x in with_two) or not resident_two:
        problems.append(f"wrong or missing world-2 results: joiner {s['joiner_results']}, "
                        f"resident {len(resident_two)}")
    growth = s["master_rss_mib"]["after"] - s["master_rss_mib"]["before"]
    if growth >= args.max_rss_growth_mib:
        problems.append(f"master RSS grew by {growth:.1f} MiB")


def print_report(s: dict) -> None:
    print(f"hostile input: {s.get('rapid_connects_s')} s of rapid connects, then {s.get('attack_s')} s "
          f"of attack rounds ({s.get('rounds')} rounds), seed {s['seed']}")
    for key, verdicts in s.get("tried", {}).items():
        total = sum(v for k, v in verdicts.items() if k != "failed")
        print(f"  {key:38s} tried {total:6d}   {dict(verdicts)}")
    for name, v in s.get("silent", {}).items():
        print(f"  silent {name}: {v}")
    for name, v in s.get("probe_handshake_s", {}).items():
        print(f"  legitimate handshake to {name} during the attack: {v}")
    rss = s.get("master_rss_mib", {})
    if rss:
        print(f"  master RSS before {rss['before']} MiB, after attack {rss['after_attack']} MiB, "
              f"after join {rss['after']} MiB (growth {rss['after'] - rss['before']:+.1f} MiB, "
              f"peak {rss['peak']} MiB)")
    print(f"  resident all_reduces during the attack: {s.get('resident_steps_during_attack')}")
    print(f"  joiner world-2 results: {s.get('joiner_results')} "
          f"(joined and reduced in {s.get('join_and_all_reduce_s')} s)")
    print(f"  master status after: {s.get('master_status_after')}")
    print("  problems: " + ("none" if not s["problems"] else "\n    " + "\n    ".join(s["problems"])))
    print(json.dumps(s))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="length of the attack rounds (after the rapid connects)")
    ap.add_argument("--min-rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-round", type=int, default=10, help="connections per category per round")
    ap.add_argument("--rapid", type=int, default=1000, help="rapid connect/close pairs per target")
    ap.add_argument("--silent-master", type=int, default=50)
    ap.add_argument("--silent-ring", type=int, default=20)
    ap.add_argument("--max-stalled", type=int, default=16,
                    help="stalled clients held at once per target (the oldest is let go)")
    ap.add_argument("--join-steps", type=int, default=3)
    ap.add_argument("--max-rss-growth-mib", type=float, default=50.0)
    args = ap.parse_args()
    if args.silent_ring + args.max_stalled > 48:
        ap.error("--silent-ring + --max-stalled must stay well below the ring's 64 "
                 "unidentified connections")
    summary = run(args)
    print_report(summary)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
