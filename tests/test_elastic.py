"""pccl.DataParallel with real peer processes: staggered starts, a late
joiner, a peer killed mid-run, a quorum lost and regained, and the README's
first example in the same situations. Every peer that finishes must hold
bit-identical state (the same digest) at the same step count, and the final
params must be what an independent replay of the run computes."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import optax
import pytest

import elastic_peer
import harness
import jax_pccl as pccl

TESTS = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(TESTS, "elastic_peer.py")
README_FIRST = os.path.join(harness.REPO_ROOT, "examples", "readme_first.py")
README_RUNNER = os.path.join(TESTS, "elastic_readme_peer.py")
WAIT_S = 90  # bound on any one wait for the peers (2 busy cores, jax imports)


class Peers:
    """Peer processes against one master, started and killed one by one.

    Each writes JSON lines (tests/elastic_peer.py) to peer<i>.jsonl and its
    output to peer<i>.log in a scratch directory."""

    def __init__(self, master, script: str = PEER):
        self.master, self.script = master, script
        self.dir = tempfile.mkdtemp(prefix="pccl-elastic-")
        self.procs: dict[int, subprocess.Popen] = {}
        self.killed: set[int] = set()

    def start(self, index: int, *args: str) -> None:
        cmd = [sys.executable, self.script, "--master", self.master.address, "--index", str(index),
               "--out", self.path(index), "--stop-file", os.path.join(self.dir, "stop"),
               "--hold-file", os.path.join(self.dir, "hold"), "--die-file", self.path(index, "die"),
               *args]
        with open(self.path(index, "log"), "wb") as log:
            self.procs[index] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, cwd=self.dir,
                                                 env=harness.peer_env(), start_new_session=True)

    def path(self, index: int, ext: str = "jsonl") -> str:
        return os.path.join(self.dir, f"peer{index}.{ext}")

    def records(self, index: int) -> list[dict]:
        return harness.complete_jsonl(self.path(index))

    def log(self, index: int) -> str:
        with open(self.path(index, "log"), errors="replace") as f:
            return f.read()

    def steps(self, index: int) -> list[dict]:
        return [r for r in self.records(index) if "world" in r]

    def progress(self, index: int) -> int:
        steps = self.steps(index)
        return steps[-1]["step"] if steps else 0

    def joined(self, index: int) -> dict | None:
        return next((r for r in self.records(index) if "joined" in r), None)

    def final(self, index: int) -> dict:
        return next((r for r in self.records(index) if "done" in r or "error" in r or "fatal" in r), {})

    def wait_until(self, predicate, what: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            broken = [i for i, p in self.procs.items() if i not in self.killed and p.poll() not in (None, 0)]
            if broken:
                break
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}\n{self.diagnostics()}")

    def stop_at(self, step: int) -> int:
        """Every running peer stops once the run reaches `step` (pick one they read in time)."""
        return self._write("stop", step)

    def hold_at(self, step: int) -> int:
        """Peers pause before a step while the run is at `step` or beyond
        (they do not admit anyone meanwhile); a larger number releases them."""
        return self._write("hold", step)

    def _write(self, name: str, value: int) -> int:
        tmp = os.path.join(self.dir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(str(value))
        os.replace(tmp, os.path.join(self.dir, name))
        return value

    def pending(self) -> int:
        return sum(p["state"] == "pending" for p in self.master.status()["peers"])

    def die_at(self, index: int, step: int) -> None:
        """Peer `index` (started with --die-file) kills itself inside its step
        after the run reached `step`."""
        self._write(f"peer{index}.die", step)

    def wait_dead(self, index: int) -> None:
        try:
            code = self.procs[index].wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"peer {index} did not die\n{self.diagnostics()}")
        assert code == -signal.SIGKILL, f"peer {index} exited with {code}\n{self.diagnostics()}"
        self.killed.add(index)

    def kill(self, index: int) -> None:
        assert self.procs[index].poll() is None, f"peer {index} ended before the kill\n{self.diagnostics()}"
        os.killpg(self.procs[index].pid, signal.SIGKILL)
        self.procs[index].wait()
        self.killed.add(index)

    def join(self, indices, timeout: float = WAIT_S) -> None:
        for i in indices:
            try:
                code = self.procs[i].wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"peer {i} did not finish\n{self.diagnostics()}")
            assert code == 0, f"peer {i} exited with {code}\n{self.diagnostics()}"

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def diagnostics(self) -> str:
        parts = [f"peer files in {self.dir}"]
        for i in self.procs:
            parts.append(f"--- peer {i} (exit {self.procs[i].poll()}): last records "
                         f"{json.dumps(self.records(i)[-3:])[:1500]}\n{self.log(i)[-2500:]}")
        return "\n".join(parts)


def assert_finished_identical(peers: Peers, indices) -> dict:
    finals = {i: peers.final(i) for i in indices}
    bad = {i: f for i, f in finals.items() if "done" not in f}
    assert not bad, f"peers did not finish: {bad}\n{peers.diagnostics()}"
    assert len({f["done"] for f in finals.values()}) == 1, finals
    assert len({f["digest"] for f in finals.values()}) == 1, f"peers ended with different state: {finals}"
    return finals[indices[0]]


def assert_identical_at_every_step(peers: Peers, indices) -> None:
    by_step: dict[int, list] = {}
    for i in indices:
        for r in peers.steps(i):
            by_step.setdefault(r["step"], []).append((i, r["digest"]))
    differ = {s: d for s, d in by_step.items() if len({digest for _, digest in d}) > 1}
    assert not differ, f"peers held different state after these steps: {differ}"


def reference_params(peers: Peers, final_step: int) -> dict:
    """Replays the run in this process: at each step, the average gradient of
    the batches of the peers that took part: those that recorded it, plus the
    killed peers that were at the step before, where the step's world size
    says they contributed (when that is ambiguous, it raises ValueError)."""
    import jax
    import jax.numpy as jnp

    took_part: dict[int, set] = {}
    world: dict[int, int] = {}
    for i in peers.procs:
        for r in peers.steps(i):
            took_part.setdefault(r["step"], set()).add(i)
            world[r["step"]] = max(world.get(r["step"], 0), r["world"])
    opt = elastic_peer.optimizer()

    @jax.jit
    def step(params, state, xs, ys):  # xs, ys: the batches of the peers that took part
        grads = jax.vmap(jax.grad(elastic_peer.loss_fn), in_axes=(None, 0))(params, (xs, ys))
        avg = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), grads)
        updates, state = opt.update(avg, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree_util.tree_map(jnp.asarray, elastic_peer.initial_params())
    state = opt.init(params)
    last_seen = {}  # killed peer -> the last step count it recorded
    for i in peers.killed:
        recorded = [r["step"] for r in peers.steps(i)] or [r["joined"] for r in peers.records(i) if "joined" in r]
        if recorded:
            last_seen[i] = recorded[-1]
    for s in range(1, final_step + 1):
        members = took_part.get(s, set())
        missing = world.get(s, 0) - len(members)
        if missing:  # a killed peer's gradient made it into a step it did not record
            candidates = {i for i, last in last_seen.items() if last == s - 1}
            if missing != len(candidates):
                raise ValueError(f"step {s}: {missing} unrecorded contributors among {candidates}")
            members = members | candidates
        assert members, f"nobody recorded step {s}"
        batches = [elastic_peer.batch(i, s - 1) for i in sorted(members)]
        params, state = step(params, state, np.stack([b[0] for b in batches]),
                             np.stack([b[1] for b in batches]))
    return {k: np.asarray(v) for k, v in params.items()}


def assert_matches_reference(peers: Peers, final: dict) -> None:
    expected = reference_params(peers, final["done"])
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(final["params"][name], np.float32), value,
                                   rtol=1e-4, atol=1e-5, err_msg=f"params[{name!r}]")


# --- a. staggered starts, b. a late joiner, c. a peer killed: one run ----------

@pytest.fixture(scope="module")
def churn():
    """3 peers started 1 s apart with connect(min_peers=3) train to step 5; a
    4th joins there; at step 15 peer 1 SIGKILLs itself inside the step, while
    the others wait for it in that step's all-reduce (and peer 2 acts as if
    step 14 had failed on it alone: see the last test of this group); the 3
    survivors go on to step 25. (Holds pause the run where the test needs it.)"""
    with pccl.Master(host="127.0.0.1", port=0) as master:
        peers = Peers(master)
        try:
            peers.hold_at(5)
            for i in range(3):
                peers.start(i, "--connect-min", "3", *(["--rollback-at", "14"] if i == 2 else []))
                time.sleep(1.0)
            peers.wait_until(lambda: all(peers.progress(i) >= 5 for i in range(3)), "3 peers at step 5")
            peers.start(3)
            peers.wait_until(peers.pending, "the joiner registered")
            peers.hold_at(12)
            peers.wait_until(lambda: all(peers.progress(i) >= 12 for i in range(4)), "4 peers at step 12")
            peers.die_at(1, KILLED_AT)  # inside step KILLED_AT + 1, before its all-reduce
            peers.stop_at(25)
            peers.hold_at(1 << 30)
            peers.wait_dead(1)
            survivors = [0, 2, 3]
            peers.join(survivors)
            yield peers, survivors
        finally:
            peers.close()


KILLED_AT = 14


def test_staggered_starts_nobody_trains_alone(churn):
    peers, _ = churn
    for i in range(3):
        joined = peers.joined(i)
        assert joined == {**joined, "joined": 0, "group": 3}, joined
    before_join = {i: [r for r in peers.steps(i) if r["step"] <= 5] for i in range(3)}
    assert all([r["step"] for r in b] == [1, 2, 3, 4, 5] for b in before_join.values()), before_join
    assert all(r["world"] == 3 for b in before_join.values() for r in b), before_join


def test_late_joiner_receives_params_opt_state_and_step(churn):
    peers, _ = churn
    joined = peers.joined(3)
    assert joined["joined"] == 5, joined
    at_join = {r["digest"] for i in (0, 2) for r in peers.steps(i) if r["step"] == 5}
    assert at_join == {joined["digest"]}, "the joiner's state after init() is not the run's"
    assert peers.steps(3)[0] == {**peers.steps(3)[0], "step": 6, "world": 4}


def test_survivors_redo_the_failed_step_and_finish_identical(churn):
    peers, survivors = churn
    final = assert_finished_identical(peers, survivors)
    assert final["done"] == 25
    assert_identical_at_every_step(peers, range(4))
    assert peers.progress(1) == KILLED_AT  # it died inside the next step
    # that step failed on every survivor, which took it again without peer 1
    redone = {i: next(r for r in peers.steps(i) if r["step"] == KILLED_AT + 1) for i in survivors}
    assert all(r["world"] == 3 and r["retries"] == 1 for r in redone.values()), redone
    after = [r for i in survivors for r in peers.steps(i) if r["step"] > KILLED_AT]
    assert len(after) == 3 * (25 - KILLED_AT) and all(r["world"] == 3 for r in after), after
    assert [r["step"] for r in peers.steps(0)] == list(range(1, 26))
    assert_matches_reference(peers, final)


def test_a_step_that_completed_on_some_peers_only_is_not_taken_twice(churn):
    """A dying peer can break a step's all-reduce on some survivors after the
    others got the whole result. Simulated: after step 14 peer 2 takes its
    state back to step 13 and calls step() again with the same batch (as if
    step 14 had failed there), while peer 1 dies inside step 15. Peers 0, 2, 3
    all fail, recover and sync: peers 0 and 3 hold the highest step count, so
    peer 2 receives their step 14 (which has its gradient in it) and returns
    without stepping; then all three take step 15."""
    peers, _ = churn
    assert "step 14 completed on other peers while it failed here" in peers.log(2), peers.log(2)[-2000:]
    steps = [r["step"] for r in peers.steps(2)]
    assert steps == list(range(1, 15)) + list(range(14, 26)), steps
    redone = [r for r in peers.steps(2) if r["step"] == 14][1]
    assert redone["retries"] == 1 and redone["digest"] == peers.steps(0)[13]["digest"], redone


# --- c. the quorum: wait (and resume when someone joins), or stop -------------

def test_survivor_below_min_peers_waits_says_so_and_resumes_with_a_newcomer():
    """min_peers=2, 2 peers; peer 1 dies inside step 6. Peer 0 waits (and says
    so) until peer 2 joins, then takes step 6 with it and goes on to step 12."""
    with pccl.Master(host="127.0.0.1", port=0) as master:
        peers = Peers(master)
        try:
            peers.die_at(1, 5)
            peers.stop_at(12)
            for i in range(2):
                peers.start(i, "--connect-min", "2", "--min-peers", "2")
            peers.wait_dead(1)
            peers.wait_until(lambda: "waiting for peers to join" in peers.log(0), "the survivor's log line")
            peers.start(2, "--min-peers", "2")
            peers.join([0, 2])
            final = assert_finished_identical(peers, [0, 2])
        finally:
            peers.close()
    assert final["done"] == 12
    line = next(l for l in peers.log(0).splitlines() if "waiting for peers to join" in l)
    assert "1 peer in group 0, min_peers=2 needed" in line and "before step 6" in line, line
    assert "2 peers in group 0 again" in peers.log(0)  # it said when the quorum was back
    assert [r["step"] for r in peers.steps(0)] == list(range(1, 13)), peers.steps(0)
    assert peers.steps(0)[5]["retries"] == 1
    # nothing happened while it waited: no step at world size 1
    assert all(r["world"] == 2 for i in (0, 2) for r in peers.steps(i)), [peers.steps(i) for i in (0, 2)]
    assert peers.joined(2)["joined"] == 5
    assert_identical_at_every_step(peers, range(3))
    assert_matches_reference(peers, final)


def test_survivor_below_min_peers_with_stop_raises_quorum_error():
    with pccl.Master(host="127.0.0.1", port=0) as master:
        peers = Peers(master)
        try:
            peers.die_at(1, 3)
            for i in range(2):
                peers.start(i, "--connect-min", "2", "--min-peers", "2", "--below-min", "stop")
            peers.wait_dead(1)
            peers.join([0])
        finally:
            peers.close()
    error = peers.final(0)
    assert error.get("error") == "QuorumError", f"{error}\n{peers.diagnostics()}"
    assert "1 peer in group 0, min_peers=2 needed" in error["message"], error
    assert "below_min='stop'" in error["message"], error
    assert error["step"] == 3 and error["digest"] == peers.steps(1)[-1]["digest"], error


# --- in one process: arguments, the quorum timeout, alone -----------------------

def test_quorum_wait_times_out_with_quorum_error(monkeypatch, caplog):
    """min_peers larger than the run ever gets: the wait logs and ends at wait_timeout."""
    import jax_pccl.elastic as elastic

    monkeypatch.setattr(elastic, "WAIT_LOG_EVERY_S", 0.2)
    with pccl.Master(host="127.0.0.1", port=0) as master, \
            pccl.Communicator(master.address, timeout=5).connect() as comm:
        trainer = pccl.DataParallel(comm, elastic_peer.loss_fn, optax.sgd(0.1), min_peers=3,
                                    wait_timeout=1.0)
        trainer.init(elastic_peer.initial_params())
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="jax_pccl"):
            with pytest.raises(pccl.QuorumError, match=r"1 peer in group 0, min_peers=3 needed.*"
                                                       r"wait_timeout=1 s"):
                trainer.step(elastic_peer.batch(0, 0))
        assert time.monotonic() - t0 >= 1.0
        waiting = [r for r in caplog.records if "waiting for peers to join" in r.getMessage()]
        assert len(waiting) >= 2 and waiting[0].name == "jax_pccl.elastic", caplog.records
        assert trainer.step_count == 0 and trainer.world_size == 0


def test_stop_raises_before_any_step(master):
    with pccl.Communicator(master.address, timeout=5).connect() as comm:
        trainer = pccl.DataParallel(comm, elastic_peer.loss_fn, optax.sgd(0.1), min_peers=2,
                                    below_min="stop")
        trainer.init(elastic_peer.initial_params())
        with pytest.raises(pccl.QuorumError, match="1 peer in group 0, min_peers=2 needed"):
            trainer.step(elastic_peer.batch(0, 0))
        assert trainer.step_count == 0


def test_one_peer_trains_like_plain_optax(master):
    """Alone, a step is value_and_grad + the optimizer update: bit-identical
    to the same jitted computation without jax_pccl, aux included."""
    import jax
    def loss_aux(params, batch):
        loss = elastic_peer.loss_fn(params, batch)
        return loss, {"twice": 2 * loss}

    opt = optax.adam(0.05)
    with pccl.Communicator(master.address, timeout=5).connect() as comm:
        trainer = pccl.DataParallel(comm, loss_aux, opt, has_aux=True)
        with pytest.raises(RuntimeError, match="init"):
            trainer.step(elastic_peer.batch(0, 0))
        trainer.init(elastic_peer.initial_params())
        with pytest.raises(RuntimeError, match="already"):
            trainer.init(elastic_peer.initial_params())
        losses = [trainer.step(elastic_peer.batch(0, s)) for s in range(5)]

    @jax.jit
    def plain(params, state, batch):
        (loss, aux), grads = jax.value_and_grad(loss_aux, has_aux=True)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, (loss, aux)

    params = jax.tree_util.tree_map(jax.numpy.asarray, elastic_peer.initial_params())
    state = opt.init(params)
    for s in range(5):
        params, state, (loss, aux) = plain(params, state, elastic_peer.batch(0, s))
        assert float(losses[s][0]) == float(loss) and float(losses[s][1]["twice"]) == float(aux["twice"])
    assert trainer.step_count == 5 and trainer.world_size == 1
    for name in params:
        np.testing.assert_array_equal(np.asarray(trainer.params[name]), np.asarray(params[name]))
    assert re.fullmatch(r"[0-9a-f]{64}", trainer.digest())


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(min_peers=0), ValueError, "min_peers"),
    (dict(min_peers=True), ValueError, "min_peers"),
    (dict(min_peers=2.0), ValueError, "min_peers"),
    (dict(below_min="leave"), ValueError, "below_min"),
    (dict(wait_timeout=0), ValueError, "wait_timeout"),
    (dict(wait_timeout="5"), ValueError, "wait_timeout"),
    (dict(has_aux=1), TypeError, "has_aux"),
    (dict(max_retries=-1), ValueError, "max_retries"),
    (dict(comm="127.0.0.1:1"), TypeError, "comm"),
    (dict(loss_fn=None), TypeError, "loss_fn"),
    (dict(optimizer=object()), TypeError, "optimizer"),
])
def test_arguments_are_validated_before_any_traffic(kwargs, exc, name):
    comm = pccl.Communicator(f"127.0.0.1:{harness.closed_port()}")  # never connected
    args = dict(comm=comm, loss_fn=elastic_peer.loss_fn, optimizer=optax.sgd(0.1))
    positional = [kwargs.pop(k, args[k]) for k in ("comm", "loss_fn", "optimizer")]
    with pytest.raises(exc, match=name):
        pccl.DataParallel(*positional, **kwargs)
    comm.close()


# --- the README's first example (examples/readme_first.py), run as written ---

def test_readme_contains_the_first_example_verbatim():
    with open(README_FIRST) as f:
        snippet = f.read()
    with open(os.path.join(harness.REPO_ROOT, "README.md")) as f:
        assert snippet in f.read(), "README.md does not show examples/readme_first.py as it is"


def test_readme_first_example_with_staggered_starts_a_joiner_and_a_peer_killed():
    """Peer 1 starts 1 s after peer 0, peer 2 joins mid-run, peer 1 is killed;
    the survivors print the same step and state. The snippet's min_peers=2
    keeps peer 0 from training alone before peer 1 is in. Holds (the runner
    pauses the run at a step) make sure each event happens before the run ends."""
    with pccl.Master(host="127.0.0.1", port=0) as master:
        peers = Peers(master, README_RUNNER)
        try:
            peers.hold_at(30)
            peers.start(0)
            time.sleep(1.0)
            peers.start(1)
            peers.wait_until(lambda: all(peers.progress(i) >= 30 for i in range(2)), "2 peers at step 30")
            peers.start(2)
            peers.wait_until(peers.pending, "the joiner registered")
            peers.hold_at(60)
            peers.wait_until(lambda: all(peers.progress(i) >= 60 for i in range(3)), "3 peers at step 60")
            peers.kill(1)
            peers.hold_at(1 << 30)
            survivors = [0, 2]
            peers.join(survivors)
        finally:
            peers.close()
    lines = {i: peers.log(i).strip().splitlines()[-1] for i in survivors}
    parsed = {i: re.fullmatch(r"step (\d+): loss (\S+), state ([0-9a-f]{16})", line) for i, line in lines.items()}
    assert all(parsed.values()), f"unexpected last lines: {lines}\n{peers.diagnostics()}"
    assert {m[1] for m in parsed.values()} == {"300"}, lines
    assert len({m[3] for m in parsed.values()}) == 1, f"survivors ended with different state: {lines}"
    assert all(float(m[2]) < 1e-3 for m in parsed.values()), lines  # it learned
    assert "1 peer in group 0, min_peers=2 needed" in peers.log(0)  # peer 0 waited for peer 1
    assert_identical_at_every_step(peers, range(3))
    world = {}
    for i in range(3):
        for r in peers.steps(i):
            world.setdefault(r["step"], set()).add(r["world"])
    assert all(len(w) == 1 for w in world.values()), world
    world = {s: w.pop() for s, w in world.items()}
    assert sorted(world) == list(range(1, 301)), "steps missing"
    assert min(world.values()) >= 2, f"a peer trained alone: {world}"
    assert [world[s] for s in (1, 30, 31, 60, 61, 300)] == [2, 2, 3, 3, 2, 2], world
    assert peers.steps(2)[0]["step"] == 31, "the joiner did not join at the hold"
