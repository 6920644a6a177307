"""DiLoCo under churn, real processes: a peer joins mid-run and catches up
through the shared state, a peer is SIGKILLed mid-run and the survivors retry
without it; every peer's outer state stays bit-identical throughout."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import harness
import jax_pccl as pccl

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "diloco", "churn_peer.py")
H = 10


class Peers:
    def __init__(self, address: str, mode: str):
        self.address, self.mode = address, mode
        self.dir = tempfile.mkdtemp(prefix="pccl-diloco-churn-")
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, index: int, world: int = 0) -> None:
        cmd = [sys.executable, PEER, "--master", self.address, "--index", str(index), "--world", str(world),
               "--out", self.path(index), "--mode", self.mode, "--inner-steps", str(H),
               "--stop-file", os.path.join(self.dir, "stop"), "--hold-file", os.path.join(self.dir, "hold"),
               "--step-s", "0.03"]
        self.procs[index] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                             stderr=open(self.path(index) + ".err", "w"),
                                             env=harness.peer_env(), start_new_session=True)

    def path(self, index: int) -> str:
        return os.path.join(self.dir, f"peer{index}.jsonl")

    def records(self, index: int) -> list[dict]:
        return harness.complete_jsonl(self.path(index))

    def progress(self, index: int, world: int = 0) -> int:
        return max([r["sync"] for r in self.records(index) if "sync" in r and r["world"] >= world] or [0])

    def stop_at(self, t: int) -> int:
        """Tells the peers to stop at inner step t (a multiple of H)."""
        return self._write("stop", t)

    def hold_at(self, t: int | None) -> int | None:
        """Peers wait before the inner step that would reach t (None: go on)."""
        if t is None:
            os.unlink(os.path.join(self.dir, "hold"))
            return None
        return self._write("hold", t)

    def holding(self, index: int) -> bool:
        recs = self.records(index)
        return bool(recs) and "holding" in recs[-1]

    def _write(self, name: str, value: int) -> int:
        with open(os.path.join(self.dir, name + ".tmp"), "w") as f:
            f.write(str(value))
        os.replace(os.path.join(self.dir, name + ".tmp"), os.path.join(self.dir, name))
        return value

    def diagnostics(self) -> str:
        return json.dumps({i: (self.records(i)[-3:], open(self.path(i) + ".err").read()[-1500:])
                           for i in self.procs}, default=str)[:8000]

    def wait_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            if any(p.poll() not in (None, 0, -signal.SIGKILL) for p in self.procs.values()):
                break
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}: {self.diagnostics()}")

    def kill(self, index: int) -> None:
        os.killpg(self.procs[index].pid, signal.SIGKILL)
        self.procs[index].wait()

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.parametrize("mode", ["sync", "streaming", "async"])
def test_joiner_catches_up_and_survivors_retry_after_a_kill(mode):
    with pccl.Master() as master:
        peers = Peers(master.address, mode)
        try:
            for i in range(3):
                peers.start(i, world=3)
            peers.wait_until(lambda: all(peers.progress(i) >= 3 * H for i in range(3)), 120, "3 peers training")
            peers.start(3)  # the joiner
            peers.wait_until(lambda: any("joined" in r for r in peers.records(3)), 60, "the joiner admitted")
            joined_at = next(r for r in peers.records(3) if "joined" in r)["joined"]
            peers.wait_until(lambda: peers.progress(3) >= joined_at + 2 * H, 60, "the joiner training")
            peers.kill(1)
            survivors = [0, 2, 3]
            killed_at = max(peers.progress(i) for i in survivors)
            peers.wait_until(lambda: all(peers.progress(i) >= killed_at + 2 * H for i in survivors), 60,
                             "the survivors training on")
            # every peer reads the stop step long before it gets there
            stop = peers.stop_at((max(peers.progress(i) for i in survivors) // H + 4) * H)
            for i in survivors:
                assert peers.procs[i].wait(timeout=120) == 0, peers.diagnostics()
        finally:
            peers.close()
        records = {i: peers.records(i) for i in range(4)}

    fatal = [(i, r) for i in survivors for r in records[i] if "fatal" in r]
    assert not fatal, fatal
    # The joiner entered at an outer-step boundary with the run's state.
    assert joined_at % H == 0 and joined_at >= 3 * H
    joined = next(r for r in records[3] if "joined" in r)
    # its state right after init(): the run's, plus the sync init() took part in
    # when that completes at once (sync mode's blocking send at the boundary)
    completed = [r["digest"] for r in records[0] if "sync" in r
                 and (r["sync"] <= joined_at if mode == "sync" else r["sync"] < joined_at)]
    assert joined["digest"] == completed[-1], "the joiner did not receive the run's outer state"
    assert joined["revision"] > 0
    # Every sync any two peers both completed left them with identical state.
    by_sync = {}
    for i, recs in records.items():
        for r in recs:
            if "sync" in r:
                by_sync.setdefault((r["sync"], r["fragment"]), {})[i] = r["digest"]
    for key, digests in by_sync.items():
        assert len(set(digests.values())) == 1, f"sync {key}: peers differ {digests}"
    # The joiner contributes from its first sync after having trained; it
    # takes part with weight 0 before that.
    joiner = [r for r in records[3] if "sync" in r]
    assert joiner and all(r["contributors"] >= 3 for r in joiner)
    assert any(r["contributors"] == 4 for r in joiner), joiner
    # After the kill the survivors went on as 3, retrying the sync it broke (or
    # dropping the dead peer at the next boundary), and finished together.
    done = {i: next(r for r in records[i] if "done" in r) for i in survivors}
    assert {d["done"] for d in done.values()} == {stop}
    assert len({d["digest"] for d in done.values()}) == 1, done
    last = [r for r in records[0] if "sync" in r][-1]
    assert last["contributors"] == 3 and last["world"] == 3


def test_peer_admitted_while_survivors_retry_joins_the_retry():
    """A peer dies while the others wait; a newcomer registers meanwhile. The
    survivors' next sync (streaming fragment 0, not at a boundary) fails; their
    recovery admits the newcomer, whose init() then takes part in the retried
    sync with weight 0, and everyone goes on bit-identical."""
    with pccl.Master() as master:
        peers = Peers(master.address, "streaming")
        try:
            for i in range(3):
                peers.start(i, world=3)
            peers.wait_until(lambda: all(peers.progress(i) >= 2 * H for i in range(3)), 120, "3 peers training")
            # hold everyone just before fragment 0's next send (t = k*H + 3)
            send_at = (max(peers.progress(i) for i in range(3)) // H + 2) * H + 3
            peers.hold_at(send_at)
            peers.wait_until(lambda: all(peers.holding(i) for i in range(3)), 60, "peers holding")
            peers.kill(1)
            peers.start(3)
            peers.wait_until(lambda: master.status()["groups"][0]["pending"] == 1, 60, "the newcomer pending")
            peers.hold_at(None)
            peers.wait_until(lambda: any("joined" in r for r in peers.records(3)), 60, "the newcomer admitted")
            survivors = [0, 2, 3]
            peers.wait_until(lambda: all(peers.progress(i) >= send_at + 2 * H for i in survivors), 60,
                             "training on")
            stop = peers.stop_at((max(peers.progress(i) for i in survivors) // H + 3) * H)
            for i in survivors:
                assert peers.procs[i].wait(timeout=120) == 0, peers.diagnostics()
        finally:
            peers.close()
        records = {i: peers.records(i) for i in range(4)}

    joined = next(r for r in records[3] if "joined" in r)
    t, action, retrying = joined["cursor"]
    # the started sync fails at its start (t = send_at) or at its wait (overlap 1 later)
    assert retrying == 1 and t in (send_at, send_at + 1), f"the newcomer was not admitted in the retry: {joined}"
    first = [r for r in records[3] if "sync" in r][0]
    assert (first["sync"], first["fragment"], first["contributors"]) == (send_at, 0, 2), first
    retried = [r for r in records[0] if "sync" in r and r["sync"] == send_at]
    assert retried and retried[0]["retries"] >= 1 and retried[0]["digest"] == first["digest"], retried
    by_sync = {}
    for i in survivors:
        for r in records[i]:
            if "sync" in r:
                by_sync.setdefault((r["sync"], r["fragment"]), {})[i] = r["digest"]
    assert all(len(set(d.values())) == 1 for d in by_sync.values()), by_sync
    done = {i: next(r for r in records[i] if "done" in r) for i in survivors}
    assert {d["done"] for d in done.values()} == {stop}
    assert len({d["digest"] for d in done.values()}) == 1, done
