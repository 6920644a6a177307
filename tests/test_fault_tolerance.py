"""Peers that join, die, freeze, and a master that dies: nobody hangs.

Real processes on 127.0.0.1. Peer i contributes 2**i to every all_reduce, so
each result names exactly who took part (see tests/fault/peer_loop.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import harness

import jax_pccl as pccl

PEER_LOOP = str(Path(__file__).parent / "fault" / "peer_loop.py")
DETECTION_BOUND_S = 5.0  # API/issue: a frozen peer is detected within 5 s by default


class Swarm:
    """Peer processes of one test; always killed at the end."""

    def __init__(self, master_address: str, workdir: str, **peer_args):
        self.address = master_address
        self.workdir = workdir
        self.peer_args = peer_args
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, index: int, **overrides) -> None:
        args = {**self.peer_args, **overrides}
        cmd = [sys.executable, PEER_LOOP, "--master", self.address, "--index", str(index),
               "--out", self.log_path(index)]
        for key, value in args.items():
            cmd += [f"--{key}"] if value is True else [f"--{key}", str(value)]
        self.procs[index] = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=open(self.log_path(index) + ".err", "w"),
            start_new_session=True)

    def log_path(self, index: int) -> str:
        return os.path.join(self.workdir, f"peer{index}.jsonl")

    def records(self, index: int) -> list[dict]:
        return harness.complete_jsonl(self.log_path(index))

    def stderr(self, index: int) -> str:
        try:
            return Path(self.log_path(index) + ".err").read_text()[-3000:]
        except FileNotFoundError:
            return ""

    def start_four_training(self) -> None:
        """Starts peers 0-3 and returns once each has done 3 steps at world 4."""
        for i in range(4):
            self.start(i)
        self.wait_until(lambda: all(self.steps_at_world(i, 4) >= 3 for i in range(4)), 120,
                        "4 peers training")

    def wait_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            # A crash ends the wait early; a SIGKILL is one the test sent itself.
            dead = [i for i, p in self.procs.items() if p.poll() not in (None, 0, -signal.SIGKILL)]
            if dead:
                break
            time.sleep(0.1)
        details = {i: (self.records(i)[-3:], self.stderr(i)[-800:]) for i in self.procs}
        pytest.fail(f"timed out waiting for {what}: {json.dumps(details, default=str)[:6000]}")

    def steps_at_world(self, index: int, world: int) -> int:
        return sum(1 for r in self.records(index) if "ok" in r and r["world"] == world)

    def wait_exit(self, index: int, timeout: float) -> int:
        try:
            return self.procs[index].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"peer {index} did not exit within {timeout} s: {self.records(index)[-3:]}")

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait()


@pytest.fixture
def swarm_factory():
    swarms = []

    def make(address: str, **peer_args) -> Swarm:
        s = Swarm(address, tempfile.mkdtemp(prefix="pccl-fault-"), **peer_args)
        swarms.append(s)
        return s

    yield make
    for s in swarms:
        s.kill_all()


def assert_results_exact(records: list[dict], index: int) -> None:
    for r in records:
        if "ok" in r:
            assert r["exact"], f"peer {index}: non-uniform result {r}"
            assert r["mask"] & (1 << index), f"peer {index}: own contribution missing {r}"
            assert bin(r["mask"]).count("1") == r["world"], f"peer {index}: mask/world differ {r}"


def assert_recovered(records: list[dict], event_at: float, survivors_mask: int) -> None:
    """No failure before the event; after it, once failures stop, at least
    three collectives succeed and every one but the first (which may have
    completed with the lost peer just before it died) has the survivors' mask."""
    early = [r for r in records if "failure" in r and r["t"] < event_at]
    assert not early, f"failures before the event: {early[:3]}"
    failures = [r["t"] for r in records if "failure" in r and r["t"] >= event_at]
    settled = max(failures, default=event_at + 0.0)
    after = [r for r in records if "ok" in r and r["t"] > settled]
    assert len(after) >= 3, f"fewer than 3 successful collectives after recovery: {records[-3:]}"
    assert all(r["mask"] == survivors_mask and r["world"] == 3 for r in after[1:]), after[:3]


def failure_times(records: list[dict], after: float) -> list[float]:
    return [r["t"] - after for r in records if "failure" in r and r["t"] >= after]


def test_dynamic_join_while_others_train(swarm_factory):
    with pccl.Master() as master:
        swarm = swarm_factory(master.address, seconds=25, elements=4096)
        for i in range(3):
            swarm.start(i)
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 3) >= 5 for i in range(3)), 90,
                         "3 peers training")
        swarm.start(3)
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 4) >= 5 for i in range(4)), 90,
                         "the joiner admitted and training")
        for i in range(4):
            records = swarm.records(i)
            assert_results_exact(records, i)
            assert not [r for r in records if "fatal" in r], records[-3:]
        # Everyone at world 4 sees all four contributions; nobody saw a failure.
        assert all(r["mask"] == 0b1111 for r in swarm.records(3) if "ok" in r)
        assert not any("failure" in r for i in range(4) for r in swarm.records(i))


def kill_one_of_four_and_check(swarm, survivor_steps: int, survivors_wait_s: float) -> None:
    """4 peers train; peer 2 is SIGKILLed. Every survivor's results are exact,
    it recovers at world 3 (result bitmask 0b1011) and any failure it saw came
    fast (EOF, not the collective timeout)."""
    swarm.start_four_training()
    killed_at = time.time()
    os.killpg(swarm.procs[2].pid, signal.SIGKILL)
    survivors = [0, 1, 3]
    swarm.wait_until(lambda: all(swarm.steps_at_world(i, 3) >= survivor_steps for i in survivors),
                     survivors_wait_s, "survivors training at world 3")
    for i in survivors:
        records = swarm.records(i)
        assert_results_exact(records, i)
        assert_recovered(records, killed_at, 0b1011)
        times = failure_times(records, killed_at)
        # A peer may finish the collective in flight before noticing; any
        # failure it does see must come fast (EOF, not the 30 s timeout).
        assert all(t < DETECTION_BOUND_S for t in times), times


@pytest.mark.parametrize("shape", ["update_first", "step_first"])
def test_sigkill_mid_collective_survivors_fail_fast_then_continue(swarm_factory, shape):
    with pccl.Master() as master:
        # 4 MiB per peer: collectives last long enough to be hit mid-flight.
        swarm = swarm_factory(master.address, seconds=40, elements=1 << 20, timeout=30,
                              shape=shape)
        kill_one_of_four_and_check(swarm, survivor_steps=5, survivors_wait_s=60)


def test_sigkill_during_a_jitted_start_wait_survivors_fail_fast_then_continue(swarm_factory):
    """The wait handler is asynchronous (an XLA future completed by the
    engine): a death must still reach the jitted call as a fast PeerFailure."""
    with pccl.Master() as master:
        swarm = swarm_factory(master.address, seconds=40, elements=1 << 20, timeout=30,
                              **{"start-wait": True})
        kill_one_of_four_and_check(swarm, survivor_steps=5, survivors_wait_s=60)


def test_sigkill_between_start_and_wait_update_topology_discards_the_start(swarm_factory):
    """start -> all_reduce -> wait in one jit: when the all_reduce fails the
    wait never runs. The survivors must see a peer failure (so that a retry
    loop recovers), and update_topology() must discard the started, never
    waited collective of the failed epoch instead of refusing forever."""
    with pccl.Master() as master:
        swarm = swarm_factory(master.address, seconds=40, elements=1 << 18, timeout=30,
                              **{"start-reduce-wait": True})
        kill_one_of_four_and_check(swarm, survivor_steps=5, survivors_wait_s=60)
        for i in [0, 1, 3]:
            failures = [r for r in swarm.records(i) if "failure" in r]
            assert all("PeerFailureError" in f"{r['failure']} {r['message']}" for r in failures), failures


def test_retry_helper_absorbs_a_peer_death(swarm_factory):
    with pccl.Master() as master:
        swarm = swarm_factory(master.address, seconds=30, elements=1 << 18, timeout=30,
                              **{"retry-helper": True})
        swarm.start_four_training()
        os.killpg(swarm.procs[3].pid, signal.SIGKILL)
        survivors = [0, 1, 2]
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 3) >= 5 for i in survivors), 60,
                         "survivors training at world 3")
        for i in survivors:
            records = swarm.records(i)
            assert_results_exact(records, i)
            # The helper retried inside the step: the loop saw no failure at all.
            assert not [r for r in records if "failure" in r or "fatal" in r], records[-3:]


def test_sigstop_detected_within_bound_and_frozen_peer_evicted(swarm_factory):
    with pccl.Master() as master:
        swarm = swarm_factory(master.address, seconds=40, elements=1 << 18, timeout=30)
        swarm.start_four_training()
        frozen_at = time.time()
        os.killpg(swarm.procs[1].pid, signal.SIGSTOP)
        survivors = [0, 2, 3]
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 3) >= 5 for i in survivors), 60,
                         "survivors training at world 3")
        for i in survivors:
            records = swarm.records(i)
            assert_results_exact(records, i)
            assert_recovered(records, frozen_at, 0b1101)
            # Detected either as a failed call, or silently inside
            # update_topology() (which then votes the frozen peer out): either
            # way the survivors are back at world 3 within the bound.
            back = [r["t"] - frozen_at for r in records
                    if "ok" in r and r["t"] > frozen_at and r["world"] == 3]
            assert back and back[0] <= DETECTION_BOUND_S + 1.0, (back[:1], records[-3:])
            assert all(t <= DETECTION_BOUND_S + 0.5 for t in failure_times(records, frozen_at))
        os.killpg(swarm.procs[1].pid, signal.SIGCONT)
        assert swarm.wait_exit(1, 30) == 3  # woke up, got an error, stopped
        fatal = [r for r in swarm.records(1) if "fatal" in r]
        assert fatal and "removed from the run" in fatal[-1]["message"], swarm.records(1)[-3:]
        # Its step was jitted over the old communicator: a new one alone would
        # not help it, and the error must say so.
        assert "re-jit" in fatal[-1]["message"], fatal[-1]


def test_master_killed_every_peer_errors_within_timeout(swarm_factory):
    master, port = _launch_master()
    try:
        swarm = swarm_factory(f"127.0.0.1:{port}", seconds=60, elements=4096, timeout=5)
        for i in range(3):
            swarm.start(i)
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 3) >= 3 for i in range(3)), 120,
                         "3 peers training")
        killed_at = time.time()
        os.killpg(master.pid, signal.SIGKILL)
        for i in range(3):
            assert swarm.wait_exit(i, 15) == 3
            fatal = [r for r in swarm.records(i) if "fatal" in r][-1]
            # eager: the typed error; jitted: JaxRuntimeError naming it (API.md)
            assert fatal["fatal"] == "MasterUnreachableError" or (
                fatal["fatal"] == "JaxRuntimeError"
                and "MasterUnreachableError" in fatal["message"]), fatal
            assert fatal["t"] - killed_at < 5 + 1, fatal
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
        master.wait()


def _launch_master(port: int = 0, log_path: str | None = None) -> tuple[subprocess.Popen, int]:
    """A master process on 127.0.0.1:port, and the port it listens on: 0 lets
    the OS pick (read back from its first line; a port found free and released
    could be taken meanwhile). A restart passes the port it got."""
    extra = ["--log-level", "info"] if log_path else []
    proc = subprocess.Popen([sys.executable, "-m", "jax_pccl", "master", "--host", "127.0.0.1",
                             "--port", str(port), *extra], stdout=subprocess.PIPE,
                            stderr=open(log_path, "w") if log_path else None, text=True,
                            cwd=tempfile.gettempdir(), start_new_session=True)
    line = proc.stdout.readline()
    assert "listening on 127.0.0.1:" in line, line
    return proc, int(line.split("listening on 127.0.0.1:", 1)[1].split()[0])


def _start_master_process(port: int) -> subprocess.Popen:
    return _launch_master(port)[0]


def test_master_restarted_at_same_address_peers_rejoin_and_continue(swarm_factory):
    master, port = _launch_master()
    try:
        swarm = swarm_factory(f"127.0.0.1:{port}", seconds=60, elements=4096, timeout=5,
                              **{"master-grace": 30})
        for i in range(3):
            swarm.start(i)
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 3) >= 3 for i in range(3)), 120,
                         "3 peers training")
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()
        down_at = time.time()
        time.sleep(1.5)  # an outage: every call fails meanwhile
        master = _start_master_process(port)
        swarm.wait_until(
            lambda: all(sum(1 for r in swarm.records(i) if "ok" in r and r["t"] > down_at
                            and r["world"] == 3) >= 3 for i in range(3)),
            60, "all 3 peers training again with the restarted master")
        for i in range(3):
            records = swarm.records(i)
            assert_results_exact(records, i)
            assert not [r for r in records if "fatal" in r], records[-3:]
            assert any("master_lost" in r for r in records), "the outage went unnoticed"
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
        master.wait()


def test_first_peer_back_after_master_restart_runs_jitted_steps_alone_bounded(swarm_factory):
    """After a master restart the first peer back is re-admitted alone (world 1)
    and runs its jitted step while the other is still away: every step must
    complete (or fail) within the timeout, and the other must be admitted when
    it comes back. The step is wait(start(x)), then a start, an all_reduce and
    the second wait in one jit: alone, the first start ends at once, and its
    wait's completion used to run the rest of the program on the slot's engine
    thread, which the second start queued on that slot then waited for (the
    program fuzzer's "step hang after a master restart", seed 12)."""
    master, port = _launch_master()
    timeout = 5.0
    try:
        swarm = swarm_factory(f"127.0.0.1:{port}", seconds=90, elements=1 << 22, timeout=timeout,
                              **{"master-grace": 60, "wait-start-reduce": True, "min-peers": 2})
        for i in range(2):
            swarm.start(i)
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 2) >= 2 for i in range(2)), 60,
                         "2 peers training (a jitted step that never ends hangs here)")
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()
        os.killpg(swarm.procs[1].pid, signal.SIGSTOP)  # peer 1 stays away: peer 0 comes back alone
        stopped = True
        try:
            time.sleep(1.0)
            restarted_at = time.time()
            master = _start_master_process(port)

            def alone(r):
                return "ok" in r and r["t"] > restarted_at and r["world"] == 1

            swarm.wait_until(lambda: sum(1 for r in swarm.records(0) if alone(r)) >= 5,
                             8 * timeout, "peer 0 re-admitted alone and 5 jitted steps done "
                             "(a step that never ends hangs here)")
            os.killpg(swarm.procs[1].pid, signal.SIGCONT)
            stopped = False
            back_at = time.time()
        finally:
            if stopped:
                os.killpg(swarm.procs[1].pid, signal.SIGCONT)
        swarm.wait_until(
            lambda: all(sum(1 for r in swarm.records(i) if "ok" in r and r["t"] > back_at
                            and r["world"] == 2) >= 3 for i in range(2)),
            60, "peer 1 re-admitted and both training together again")
        for i in range(2):
            records = swarm.records(i)
            assert_results_exact(records, i)
            assert not [r for r in records if "fatal" in r], records[-3:]
            slow = [r for r in records if "ok" in r and r["took"] > timeout + 1]
            assert not slow, f"peer {i}: steps slower than the timeout: {slow[:3]}"
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
        master.wait()


def _start_master_logging(port: int, log_path: str) -> subprocess.Popen:
    return _launch_master(port, log_path)[0]


@pytest.mark.parametrize("peer1_at_second", ["pending", "away"])
def test_two_master_restarts_never_reuse_an_epoch(swarm_factory, peer1_at_second):
    """Two master restarts in a row, a different peer back first each time:
    peer 0 comes back first to the second master and runs alone at some epoch
    E while peer 1 is only pending there (or still away: frozen all along);
    the second master dies too, and peer 1 comes back first to the third.
    Each runs alone, so each gets a ring of its own: the second must get an
    epoch above E (rings are keyed by epoch; the fuzzer, seed 1200 launch 2
    and seed 4242 launch 19 with --fault-kinds master,stop, saw both alone
    at one epoch). Then both train together again."""
    workdir = tempfile.mkdtemp(prefix="pccl-epochs-")
    master, port = _launch_master(0, os.path.join(workdir, "master1.log"))
    timeout = 5.0
    frozen: set[int] = set()

    def freeze(i):
        os.killpg(swarm.procs[i].pid, signal.SIGSTOP)
        frozen.add(i)

    def thaw(i):
        os.killpg(swarm.procs[i].pid, signal.SIGCONT)
        frozen.discard(i)

    def kill_master():
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()

    def solo_epochs(i, since):
        return {r["key"][0] for r in swarm.records(i) if "ok" in r and r["t"] > since
                and r["world"] == 1}

    try:
        swarm = swarm_factory(f"127.0.0.1:{port}", seconds=90, elements=4096, timeout=timeout,
                              **{"master-grace": 60, "min-peers": 2})
        for i in range(2):
            swarm.start(i)
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 2) >= 2 for i in range(2)), 60,
                         "2 peers training")
        # Second master: peer 0 back first, alone; then peer 1 registers (pending).
        kill_master()
        freeze(1)
        t2 = time.time()
        log2 = os.path.join(workdir, "master2.log")
        master = _start_master_logging(port, log2)
        swarm.wait_until(lambda: len(solo_epochs(0, t2)) > 0, 30, "peer 0 alone with master 2")
        freeze(0)  # it must not admit peer 1 before this master dies
        if peer1_at_second == "pending":
            thaw(1)
            swarm.wait_until(lambda: Path(log2).read_text().count("re-registered") >= 2, 30,
                             "peer 1 registered with master 2 (pending)")
        # Third master: peer 1 back first, alone.
        kill_master()
        if peer1_at_second == "away":
            assert Path(log2).read_text().count("re-registered") == 1
            thaw(1)
        t3 = time.time()
        master = _start_master_logging(port, os.path.join(workdir, "master3.log"))
        swarm.wait_until(lambda: len(solo_epochs(1, t3)) > 0, 30, "peer 1 alone with master 3")
        thaw(0)
        back_at = time.time()
        swarm.wait_until(
            lambda: all(sum(1 for r in swarm.records(i) if "ok" in r and r["t"] > back_at
                            and r["world"] == 2) >= 3 for i in range(2)),
            60, "both peers training together again")
        first, second = solo_epochs(0, t2), solo_epochs(1, t3)
        assert min(second) > max(first), (
            f"peer 1 ran alone under master 3 at epoch(s) {sorted(second)}, which peer 0 "
            f"already ran alone under master 2 ({sorted(first)}): an epoch was reused")
        for i in range(2):
            records = swarm.records(i)
            assert_results_exact(records, i)
            assert not [r for r in records if "fatal" in r], records[-3:]
    finally:
        for i in list(frozen):
            thaw(i)
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
        master.wait()
