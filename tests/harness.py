"""Launch peer processes for a scenario and collect their JSON reports.

Every launch has a hard deadline: on expiry (or once a peer has crashed and
the others had time to notice) the remaining peers' process groups are
killed. Nothing here can hang the test session.

A ScenarioRun keeps whatever the peers managed to report, plus a list of
problems (timeouts, crashes, fatal errors) with the tail of each peer's
output, so a test about one check can pass while another names what broke.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import cases

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
PEER_SCRIPT = os.path.join(TESTS_DIR, "peer_scenarios.py")
LOG_TAIL = 4000


def peer_env() -> dict:
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Two cores shared by several peers: keep XLA from spawning thread pools.
    flags = env.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["XLA_FLAGS"] = flags.strip()
    return env


def complete_jsonl(path: str) -> list[dict]:
    """The records a running peer has finished writing to `path`: a line
    without its newline is still being written (a reader can see half of it,
    CI did once), so it is left for the next read."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]
    except FileNotFoundError:
        return []


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@dataclass(repr=False)
class ScenarioRun:
    scenario: str
    n: int
    reports: list  # per peer index: parsed JSON dict or None
    logs: list  # per peer index: tail of combined stdout/stderr
    problems: list = field(default_factory=list)
    wall_s: float = 0.0
    workdir: str = ""  # kept (peer logs and reports) only when something went wrong

    def __repr__(self) -> str:
        return f"<ScenarioRun {self.scenario!r} n={self.n} problems={len(self.problems)} wall={self.wall_s:.1f}s>"

    def diagnostics(self) -> str:
        lines = [f"scenario {self.scenario!r}: {len(self.problems)} problem(s), wall {self.wall_s:.1f}s, "
                 f"peer logs in {self.workdir or '(removed)'}"]
        lines += [f"  - {p}" for p in self.problems]
        for i, log in enumerate(self.logs):
            lines.append(f"--- peer {i} output (tail) ---\n{log}")
        return "\n".join(lines)

    def entries(self, name: str, peers=None) -> list:
        """Per-peer records of check `name`; fails the test if a peer lacks it."""
        peers = range(self.n) if peers is None else peers
        out = []
        for i in peers:
            rep = self.reports[i]
            if rep is None or name not in rep["checks"]:
                pytest.fail(f"peer {i} has no result for check {name!r} "
                            f"(it never got there)\n{self.diagnostics()}")
            out.append(rep["checks"][name])
        return out

    def values(self, name: str, peers=None) -> list:
        """Per-peer values of a check that must have succeeded on every peer."""
        entries = self.entries(name, peers)
        failed = {i: e["error"] for i, e in zip(peers or range(self.n), entries) if not e["ok"]}
        assert not failed, f"check {name!r} raised on peer(s):\n" + "\n".join(
            f"  peer {i}: {e['type']}: {e['message'][:1500]}" for i, e in failed.items())
        return [e["value"] for e in entries]

    def errors(self, name: str, peers=None) -> list:
        """Per-peer (error, elapsed) of a check that must have raised on every peer."""
        peers = list(range(self.n) if peers is None else peers)
        entries = self.entries(name, peers)
        succeeded = [i for i, e in zip(peers, entries) if e["ok"]]
        assert not succeeded, (f"check {name!r} was expected to raise on every peer, but returned "
                               f"normally on peer(s) {succeeded}: "
                               + json.dumps([entries[peers.index(i)]["value"] for i in succeeded])[:2000])
        return [(e["error"], e["elapsed"]) for e in entries]


def run_peers(master_address: str, scenario: str, n: int = cases.N_PEERS, *, timeout: float,
              comm_timeout: float = 15.0, aux: str | None = None, join_mode: str = "topology",
              join_timeout: float = 60.0, peer_env_extra: dict | None = None,
              expected_deaths: tuple = ()) -> ScenarioRun:
    """Start n peers of `scenario`, wait at most `timeout` seconds, return their reports.

    peer_env_extra: {index: {VAR: value}} added to that peer's environment
    (test-only fault injection). expected_deaths: indices of peers that are
    meant to die (killed by a fault hook): their exit is not a problem."""
    workdir = tempfile.mkdtemp(prefix=f"pccl-{scenario}-")
    procs, outs, logs = [], [], []
    t0 = time.monotonic()
    try:
        for i in range(n):
            out = os.path.join(workdir, f"peer{i}.json")
            log_path = os.path.join(workdir, f"peer{i}.log")
            cmd = [sys.executable, PEER_SCRIPT, "--master", master_address, "--scenario", scenario,
                   "--index", str(i), "--world", str(n), "--out", out, "--timeout", str(comm_timeout)]
            cmd += ["--join-mode", join_mode, "--join-timeout", str(join_timeout)]
            if aux:
                cmd += ["--aux", aux]
            env = peer_env()
            env.update((peer_env_extra or {}).get(i, {}))
            with open(log_path, "wb") as log:
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                              env=env, start_new_session=True))
            outs.append(out)
            logs.append(log_path)

        problems = []
        deadline = t0 + timeout
        crash_deadline = None
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if now > deadline:
                problems.append(f"hard timeout: peers still running after {timeout:.0f}s: "
                                f"{[i for i, p in enumerate(procs) if p.poll() is None]} (killed)")
                break
            crashed = [i for i, p in enumerate(procs)
                       if p.poll() not in (None, 0) and i not in expected_deaths]
            if crash_deadline is None and crashed:
                # Give the survivors time to notice via their own timeouts, then stop.
                crash_deadline = now + 2 * comm_timeout + 10
            if crash_deadline is not None and now > crash_deadline:
                problems.append("a peer crashed and the others did not finish in time (killed)")
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            _kill_group(p)
    wall = time.monotonic() - t0

    reports, tails = [], []
    for i, (p, out, log_path) in enumerate(zip(procs, outs, logs)):
        with open(log_path, "rb") as f:
            tails.append(f.read().decode(errors="replace")[-LOG_TAIL:])
        rep = None
        if i in expected_deaths and p.returncode == -signal.SIGKILL:
            reports.append(None)  # killed as the test intended (fault hooks SIGKILL)
            continue
        if i in expected_deaths and p.returncode not in (0, None):
            problems.append(f"peer {i}: meant to be killed, but exited with status {p.returncode}")
        try:
            with open(out) as f:
                rep = json.load(f)
        except (OSError, ValueError) as exc:
            problems.append(f"peer {i}: no readable report ({exc})")
        if rep is not None and rep.get("fatal"):
            fatal = rep["fatal"]
            problems.append(f"peer {i}: fatal {fatal['type']}: {fatal['message']}\n{fatal.get('traceback', '')}")
        elif rep is not None and not rep.get("done"):
            problems.append(f"peer {i}: did not finish its checks")
        if p.returncode not in (0, None):
            problems.append(f"peer {i}: exit status {p.returncode}")
        reports.append(rep)
    if not problems:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir = ""
    return ScenarioRun(scenario, n, reports, tails, problems, wall, workdir)


def run_scenario(pccl, scenario: str, n: int = cases.N_PEERS, **kwargs) -> ScenarioRun:
    """run_peers against a fresh master on 127.0.0.1 (no state carried over between launches)."""
    with pccl.Master(host="127.0.0.1", port=0) as master:
        return run_peers(master.address, scenario, n, **kwargs)


def run_commands(cmds: list, timeout: float) -> list:
    """Runs every command at once (each in its own session, with peer_env(), cwd
    outside the repository) and returns [(returncode, output)] in order, output
    being stdout and stderr together. A command still running at the deadline
    is killed with its process group and has returncode None."""
    procs, logs = [], []
    try:
        for cmd in cmds:
            logs.append(tempfile.TemporaryFile())
            procs.append(subprocess.Popen(cmd, stdout=logs[-1], stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=peer_env(),
                                          cwd=tempfile.gettempdir(), start_new_session=True))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        results = []
        for p, log in zip(procs, logs):
            returncode = p.poll()
            _kill_group(p)
            log.seek(0)
            results.append((returncode, log.read().decode(errors="replace")))
        return results
    finally:
        for p in procs:
            _kill_group(p)
        for log in logs:
            log.close()


# --- helpers for assertions ----------------------------------------------------

def decode(enc: dict) -> np.ndarray | None:
    """Array from a peer's report (None if it was too big to ship)."""
    if "hex" not in enc:
        return None
    return np.frombuffer(bytes.fromhex(enc["hex"]), dtype=cases.np_dtype(enc["dtype"])).reshape(enc["shape"])


def assert_identical_across_peers(encs: list, what: str) -> None:
    hashes = [e["sha256"] for e in encs]
    assert len(set(hashes)) == 1, f"{what}: peers got different bytes (sha256 per peer: {hashes})"


def assert_exact(encs: list, expected: np.ndarray, what: str) -> None:
    """Every peer's result has expected's dtype, shape and exact bytes."""
    expected = np.ascontiguousarray(expected)
    for i, enc in enumerate(encs):
        assert enc["dtype"] == str(expected.dtype), (
            f"{what}: peer {i} result dtype {enc['dtype']}, expected {expected.dtype}")
        assert tuple(enc["shape"]) == expected.shape, (
            f"{what}: peer {i} result shape {tuple(enc['shape'])}, expected {expected.shape}")
        if enc["sha256"] != cases.sha256(expected):
            got = decode(enc)
            detail = ""
            if got is not None:
                bad = _mismatch_positions(got, expected)
                detail = (f"; {len(bad)} element(s) differ, first at flat index {bad[:5].tolist()}: "
                          f"got {got.reshape(-1)[bad[:5]].tolist()}, "
                          f"expected {expected.reshape(-1)[bad[:5]].tolist()}")
            pytest.fail(f"{what}: peer {i} result differs from the numpy reference{detail}")
    assert_identical_across_peers(encs, what)


def _mismatch_positions(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    g = got.reshape(-1).view(np.uint8).reshape(got.size, -1)
    e = expected.reshape(-1).view(np.uint8).reshape(expected.size, -1)
    return np.flatnonzero((g != e).any(axis=1))


def message_mentions(message: str, *patterns: str) -> bool:
    return any(re.search(p, message, re.IGNORECASE) for p in patterns)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
