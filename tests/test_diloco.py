"""DiLoCo in one process: the outer step against a hand-computed Nesterov
reference, the fragments and their schedule, async's one-step delay, and the
driver on a single peer replayed in numpy (tests/diloco/reference.py)."""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "diloco"))
import problem  # noqa: E402
import reference  # noqa: E402

from jax_pccl import MasterUnreachableError, PeerFailureError, diloco  # noqa: E402

RTOL, ATOL = 2e-5, 2e-6  # float32 runs against a float64 replay


# --- the outer step, no communication ----------------------------------------

def test_pseudo_gradient_is_global_minus_local_per_leaf():
    g = {"a": jnp.array([1.0, 2.0]), "b": (jnp.array(3.0), jnp.ones((2, 2)))}
    l = {"a": jnp.array([0.5, 3.0]), "b": (jnp.array(1.0), jnp.zeros((2, 2)))}
    pg = diloco.pseudo_gradient(g, l)
    np.testing.assert_array_equal(pg["a"], [0.5, -1.0])
    np.testing.assert_array_equal(pg["b"][0], 2.0)
    np.testing.assert_array_equal(pg["b"][1], np.ones((2, 2)))


def test_default_outer_optimizer_is_nesterov_sgd_07_09_by_hand():
    """Two outer steps of the default optimizer, each number computed by hand:
    m1 = g1;              x1 = x0 - 0.7 (g1 + 0.9 m1)
    m2 = g2 + 0.9 m1;     x2 = x1 - 0.7 (g2 + 0.9 m2)"""
    x0 = {"w": jnp.array([1.0, -2.0], jnp.float32), "b": jnp.array(0.5, jnp.float32)}
    state = diloco.outer_init(x0)  # default outer optimizer
    g1 = {"w": jnp.array([0.2, -0.4]), "b": jnp.array(0.1)}
    g2 = {"w": jnp.array([-0.1, 0.3]), "b": jnp.array(0.0)}
    state = diloco.apply_outer_update(state, g1)
    # w: 1 - 0.7*(0.2 + 0.18) = 0.734; -2 - 0.7*(-0.4 - 0.36) = -1.468; b: 0.5 - 0.7*0.19 = 0.367
    np.testing.assert_allclose(state.params["w"], [0.734, -1.468], rtol=1e-6)
    np.testing.assert_allclose(state.params["b"], 0.367, rtol=1e-6)
    state = diloco.apply_outer_update(state, g2)
    # m2 = (-0.1 + 0.18, 0.3 - 0.36) = (0.08, -0.06); w -= 0.7*(g2 + 0.9 m2) = 0.7*(-0.028, 0.246)
    # m2_b = 0.09; b -= 0.7 * 0.081
    np.testing.assert_allclose(state.params["w"], [0.7536, -1.6402], rtol=1e-6)
    np.testing.assert_allclose(state.params["b"], 0.367 - 0.0567, rtol=1e-6)
    assert int(state.step) == 2


def test_outer_sgd_lr_1_without_momentum_is_model_averaging():
    """global - mean(global - local_i) = mean(local_i): DiLoCo with outer SGD(1) is FedAvg."""
    rng = np.random.default_rng(0)
    x0 = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    locals_ = [{"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)} for _ in range(4)]
    mean_pg = jax.tree_util.tree_map(lambda *xs: sum(xs) / 4,
                                     *[diloco.pseudo_gradient(x0, l) for l in locals_])
    state = diloco.apply_outer_update(diloco.outer_init(x0, optax.sgd(1.0)), mean_pg, optax.sgd(1.0))
    np.testing.assert_allclose(state.params["w"], sum(l["w"] for l in locals_) / 4, rtol=1e-5, atol=1e-6)


def test_apply_outer_update_takes_any_optax_transformation_and_jits():
    outer = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.1))
    x0 = {"w": jnp.ones(3)}
    pg = {"w": jnp.array([3.0, 0.0, -4.0])}
    eager = diloco.apply_outer_update(diloco.outer_init(x0, outer), pg, outer)
    jitted = jax.jit(lambda s, g: diloco.apply_outer_update(s, g, outer))(diloco.outer_init(x0, outer), pg)
    # Adam's first step moves each non-zero coordinate by lr against the sign of its gradient.
    np.testing.assert_allclose(eager.params["w"], [0.9, 1.0, 1.1], rtol=1e-5)
    np.testing.assert_array_equal(eager.params["w"], jitted.params["w"])


# --- fragments and their schedule --------------------------------------------

def test_fragments_are_balanced_contiguous_ranges_and_round_trip():
    params = {"a": jnp.arange(7.0), "b": jnp.arange(10.0, 20.0).reshape(2, 5)}  # 17 elements
    frag = diloco.Fragments(params, 3)
    assert frag.sizes() == [6, 5, 6] and sum(frag.sizes()) == 17
    flat = np.concatenate([np.arange(7.0), np.arange(10.0, 20.0)])
    for p, (lo, hi) in enumerate(zip(frag.bounds, frag.bounds[1:])):
        np.testing.assert_array_equal(frag.gather(params, p), flat[lo:hi])
    replaced = frag.scatter(params, 1, -jnp.ones(5))
    np.testing.assert_array_equal(replaced["a"], [0, 1, 2, 3, 4, 5, -1])
    np.testing.assert_array_equal(replaced["b"].reshape(-1), [-1, -1, -1, -1] + list(range(14, 20)))
    one = diloco.Fragments(params, 1)
    assert one.gather(params, 0) is params  # F = 1: the pytree itself, not flattened


def test_streaming_schedule_staggers_fragments_and_waits_after_overlap():
    s = diloco.Schedule(inner_steps=12, fragments=4, overlap=2)
    sends = [(t, s.sends_at(t)) for t in range(1, 37) if s.sends_at(t)]
    assert sends == [(3, [0]), (6, [1]), (9, [2]), (12, [3]), (15, [0]), (18, [1]), (21, [2]), (24, [3]),
                     (27, [0]), (30, [1]), (33, [2]), (36, [3])]
    waits = [(t, s.waits_at(t)) for t in range(1, 37) if s.waits_at(t)]
    assert waits == [(t + 2, p) for t, p in sends if t + 2 <= 36]
    assert [t for t in range(1, 37) if s.is_boundary(t)] == [12, 24, 36]
    # every fragment is synced exactly once per H inner steps
    for p in range(4):
        assert [t for t, ps in sends if p in ps] == [3 * (p + 1) + 12 * k for k in range(3)]


def test_sync_and_async_schedules():
    sync = diloco.Schedule(inner_steps=5)
    assert [t for t in range(1, 16) if sync.sends_at(t)] == [5, 10, 15]
    assert not any(sync.waits_at(t) for t in range(1, 16))  # blocking: completed when sent
    asy = diloco.Schedule(inner_steps=5, overlap=5)
    assert [t for t in range(1, 16) if asy.waits_at(t)] == [10, 15]  # one outer step late


@pytest.mark.parametrize("kwargs, message", [
    (dict(inner_steps=0), "inner_steps"),
    (dict(inner_steps=4, fragments=5), "fragments"),
    (dict(inner_steps=8, fragments=4, overlap=3), "overlap"),
    (dict(inner_steps=8, overlap=-1), "overlap"),
])
def test_schedule_rejects_bad_configurations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        diloco.Schedule(**kwargs)


# --- the driver on one peer ----------------------------------------------------

@pytest.fixture
def comm(pccl):
    with pccl.Master(host="127.0.0.1", port=0) as master:
        with pccl.Communicator(master.address, timeout=20.0).connect() as c:
            yield c


def run_single(comm, steps: int, **config):
    """Trains problem's peer 0 alone; returns the driver and {t sent: flat global after}."""
    run = diloco.DiLoCo(comm, diloco.nesterov(problem.OUTER_LR, problem.OUTER_MOMENTUM),
                        shared_state=True, **config)
    local = run.init(problem.initial_params())
    target = problem.target(0)
    step = jax.jit(lambda p: jax.tree_util.tree_map(
        lambda x, g: x - problem.INNER_LR * g, p, jax.grad(problem.loss)(p, target)))
    seen = {}
    for _ in range(steps):
        local = run.step(step(local))
        if run.tally.syncs and run.tally.syncs[-1].t not in seen:
            seen[run.tally.syncs[-1].t] = problem.flat(run.global_params)
    run.finish(local)
    seen[run.tally.syncs[-1].t] = problem.flat(run.global_params)
    return run, seen


@pytest.mark.parametrize("mode", ["sync", "streaming", "async"])
def test_single_peer_driver_matches_the_numpy_replay(comm, mode):
    config = problem.MODES[mode]
    run, seen = run_single(comm, problem.STEPS, **config)
    want, sent_log, after = reference.simulate(1, problem.STEPS, **config)
    assert [(r.t, r.fragment) for r in run.tally.syncs] == sent_log
    for t, glob in seen.items():
        np.testing.assert_allclose(glob, after[t], rtol=RTOL, atol=ATOL, err_msg=f"{mode}, sync sent at t={t}")
    np.testing.assert_allclose(problem.flat(run.global_params), want, rtol=RTOL, atol=ATOL)
    assert all(r.contributors == 1 for r in run.tally.syncs)


def test_async_applies_the_outer_update_one_outer_step_late(comm):
    H = 4
    run = diloco.DiLoCo(comm, inner_steps=H, overlap=H, shared_state=False)
    x0 = {"w": jnp.zeros(3)}
    local = run.init(x0)
    globals_at, locals_at = [], []
    for t in range(1, 3 * H + 1):
        local = run.step(jax.tree_util.tree_map(lambda x: x + 1.0, local))  # "training": +1 per step
        globals_at.append(np.asarray(run.global_params["w"]).copy())
        locals_at.append(np.asarray(local["w"]).copy())
    # The first pseudo-gradient (global - local = -H, sent at t=H) lands at t=2H, not before.
    assert all((g == 0).all() for g in globals_at[:2 * H - 1]), globals_at
    first = 0.7 * (1 + 0.9) * H  # Nesterov's first step on g = -H
    np.testing.assert_allclose(globals_at[2 * H - 1], first, rtol=1e-6)
    # The H steps made while it was in flight are kept on top of the new global params.
    np.testing.assert_allclose(locals_at[2 * H - 1], first + H, rtol=1e-6)
    run.finish(local)  # the sync sent at t=3H is still in flight
    assert [(r.t, r.fragment) for r in run.tally.syncs] == [(H, 0), (2 * H, 0), (3 * H, 0)]


def test_streaming_payload_is_one_fragment(comm):
    run, _ = run_single(comm, 6, **problem.MODES["streaming"])
    sizes = diloco.Fragments(problem.initial_params(), 3).sizes()
    assert [r.payload_bytes for r in run.tally.syncs] == [4 * n for n in sizes]
    assert max(r.payload_bytes for r in run.tally.syncs) <= 4 * (-(-problem.size() // 3))


def test_driver_validates_quantization(comm):
    with pytest.raises(ValueError, match="quantization"):
        diloco.DiLoCo(comm, inner_steps=4, quantization="int4")


# --- max_retries and master_grace ----------------------------------------------------------

class FailingReduce:
    """Stands in for reduce.reduce_blocking: raises the queued errors, one
    per call, then does the real reduction. Counts calls."""

    def __init__(self, real, errors):
        self.real, self.errors, self.calls = real, list(errors), 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.real(*args, **kwargs)


def _sync_once(comm, **config):
    """A sync DiLoCo run (H=2) up to its first sync; returns the driver."""
    run = diloco.DiLoCo(comm, inner_steps=2, **config)
    local = run.init({"w": jnp.zeros(3)})
    for _ in range(2):
        local = run.step(jax.tree_util.tree_map(lambda x: x + 1.0, local))
    return run


@pytest.mark.parametrize("failures,max_retries", [(0, 0), (2, 2), (1, 3)])
def test_driver_retries_a_failed_sync_up_to_max_retries(comm, monkeypatch, failures, max_retries):
    from jax_pccl.diloco import reduce as reduce_module

    fake = FailingReduce(reduce_module.reduce_blocking,
                         [PeerFailureError(f"failure {k}") for k in range(failures)])
    monkeypatch.setattr(reduce_module, "reduce_blocking", fake)
    run = _sync_once(comm, max_retries=max_retries)
    (sync,) = run.tally.syncs
    assert (sync.t, sync.retries, sync.contributors) == (2, failures, 1)
    assert fake.calls == failures + 1 and run.tally.recoveries == failures
    np.testing.assert_allclose(run.global_params["w"], 0.7 * 1.9 * 2.0)  # one Nesterov step on g=-2


@pytest.mark.parametrize("max_retries", [0, 2])
def test_driver_gives_up_after_max_retries(comm, monkeypatch, max_retries):
    from jax_pccl.diloco import reduce as reduce_module

    errors = [PeerFailureError(f"failure {k}") for k in range(1, 10)]
    fake = FailingReduce(reduce_module.reduce_blocking, errors)
    monkeypatch.setattr(reduce_module, "reduce_blocking", fake)
    with pytest.raises(PeerFailureError, match=f"failure {max_retries + 1}$"):
        _sync_once(comm, max_retries=max_retries)
    assert fake.calls == max_retries + 1


class UnreachableFor:
    """Wraps comm.update_topology: the first n calls raise
    MasterUnreachableError (a master outage), then the real one runs."""

    def __init__(self, comm, n):
        self.real, self.left, self.calls = comm.update_topology, n, 0

    def __call__(self):
        self.calls += 1
        if self.left:
            self.left -= 1
            raise MasterUnreachableError("lost connection to master (test)")
        return self.real()


@pytest.mark.parametrize("grace", [30.0, 0.0])
def test_driver_rides_out_a_master_outage_at_a_boundary_within_master_grace(comm, grace):
    """DiLoCo(master_grace=S) used to raise the first MasterUnreachableError
    of its boundary's update_topology() (only a peer failure was recovered,
    and only then was the grace applied)."""
    unreachable = UnreachableFor(comm, 3)
    comm.update_topology = unreachable
    if grace:
        run = _sync_once(comm, master_grace=grace)
        assert unreachable.calls == 4 and [s.t for s in run.tally.syncs] == [2]
    else:
        with pytest.raises(MasterUnreachableError):
            _sync_once(comm, master_grace=grace)
        assert unreachable.calls == 1


@pytest.mark.parametrize("grace", [30.0, 0.0])
def test_driver_retries_a_sync_the_master_outage_broke_within_master_grace(comm, monkeypatch, grace):
    from jax_pccl.diloco import reduce as reduce_module

    fake = FailingReduce(reduce_module.reduce_blocking,
                         [MasterUnreachableError("lost connection to master (test)")])
    monkeypatch.setattr(reduce_module, "reduce_blocking", fake)
    if grace:
        run = _sync_once(comm, master_grace=grace)
        assert fake.calls == 2 and run.tally.syncs[0].retries == 1
    else:
        with pytest.raises(MasterUnreachableError):
            _sync_once(comm, master_grace=grace)
        assert fake.calls == 1


@pytest.mark.parametrize("grace", [30.0, 0.0])
def test_driver_retries_a_shared_state_sync_the_master_outage_broke_within_master_grace(comm, grace):
    real, calls = comm.sync_shared_state, []

    def sync(*args, **kwargs):
        calls.append(kwargs.get("revision"))
        if len(calls) == 2:  # the boundary's sync (the first is init()'s)
            raise MasterUnreachableError("lost connection to master (test)")
        return real(*args, **kwargs)
    comm.sync_shared_state = sync
    if grace:
        run = _sync_once(comm, master_grace=grace)
        assert len(calls) == 3 and calls[1] == calls[2] and run.tally.recoveries == 1
        assert [s.t for s in run.tally.syncs] == [2]
    else:
        with pytest.raises(MasterUnreachableError):
            _sync_once(comm, master_grace=grace)
        assert len(calls) == 2


@pytest.mark.parametrize("kwargs,exc", [
    ({"max_retries": -1}, ValueError), ({"max_retries": 2.0}, TypeError),
    ({"master_grace": -1}, ValueError), ({"master_grace": float("nan")}, ValueError),
])
def test_driver_validates_retry_arguments(comm, kwargs, exc):
    """max_retries=-1 reached the shared-state sync's loop as range(0), which
    then failed with UnboundLocalError."""
    with pytest.raises(exc, match=next(iter(kwargs))):
        diloco.DiLoCo(comm, inner_steps=4, **kwargs)


def test_driver_rides_out_a_real_master_restart_within_master_grace():
    """This process is the peer, the master a process. It is killed after
    the first sync; the driver's boundary update_topology() finds it gone,
    which restarts it on the same port; the run goes on and syncs again."""
    import os
    import signal
    import threading

    import jax_pccl as pccl
    from test_fault_tolerance import _launch_master, _start_master_process

    first, port = _launch_master()
    masters, restarts = [first], []
    try:
        with pccl.Communicator(f"127.0.0.1:{port}", timeout=5.0).connect(timeout=20) as comm:
            real, outages = comm.update_topology, []

            def watched():
                try:
                    return real()
                except MasterUnreachableError as exc:
                    if not outages:  # back only once the driver saw it gone
                        restarts.append(threading.Thread(target=lambda: masters.append(
                            _start_master_process(port)), daemon=True))
                        restarts[0].start()
                    outages.append(exc)
                    raise
            comm.update_topology = watched
            run = diloco.DiLoCo(comm, inner_steps=2, master_grace=30.0)
            local = run.init({"w": jnp.zeros(3)})
            for t in range(1, 7):
                if t == 3:
                    os.killpg(masters[0].pid, signal.SIGKILL)
                    masters[0].wait()
                local = run.step(jax.tree_util.tree_map(lambda x: x + 1.0, local))
            assert outages, "the driver never saw the master gone"
            assert [s.t for s in run.tally.syncs] == [2, 4, 6]
            revisions = [r for r, _, _ in run.tally.state_syncs]
            assert revisions == list(range(revisions[0], revisions[0] + 4)), revisions
    finally:
        for thread in restarts:
            thread.join(60)
        for m in masters:
            if m.poll() is None:
                os.killpg(m.pid, signal.SIGKILL)
            m.wait()
