"""pccl.retry_on_peer_failure(comm, fn, max_retries=, backoff=, master_grace=).

The retry logic against a fake communicator and step (every attempt and
every update_topology() counted), then a real master process killed and
restarted on the same port under a step of this process's communicator.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_pccl as pccl
from test_fault_tolerance import _launch_master, _start_master_process


class FakeComm:
    """update_topology() counts its calls and raises the queued errors first."""

    def __init__(self, errors=()):
        self.updates = 0
        self.errors = list(errors)

    def update_topology(self):
        self.updates += 1
        if self.errors:
            raise self.errors.pop(0)


class Step:
    """Raises the queued errors (one per call), then returns 2 * x."""

    def __init__(self, errors=()):
        self.errors = list(errors)
        self.args = []

    def __call__(self, x, *, scale=2.0):
        self.args.append(x)
        if self.errors:
            raise self.errors.pop(0)
        return x * scale


def jitted_failure(name: str = "PeerFailureError") -> Exception:
    # What a jitted call raises: JaxRuntimeError, the type named in its message.
    return jax.errors.JaxRuntimeError(f"INTERNAL: {name}: neighbour 127.0.0.1:1 closed the link")


def test_peer_failures_are_retried_after_update_topology_then_succeed():
    comm = FakeComm()
    step = Step([pccl.PeerFailureError("first"), jitted_failure()])
    x = jnp.arange(3.0)
    out = pccl.retry_on_peer_failure(comm, step, max_retries=2, backoff=0.0)(x, scale=3.0)
    np.testing.assert_array_equal(out, [0.0, 3.0, 6.0])
    assert len(step.args) == 3 and all(a is x for a in step.args)  # the same, untouched inputs
    assert comm.updates == 2  # one recovery per failure


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_gives_up_after_max_retries_with_the_last_error(max_retries):
    comm = FakeComm()
    step = Step([pccl.PeerFailureError(f"attempt {k}") for k in range(1, 10)])
    with pytest.raises(pccl.PeerFailureError) as info:
        pccl.retry_on_peer_failure(comm, step, max_retries=max_retries, backoff=0.0)(jnp.ones(2))
    assert len(step.args) == max_retries + 1
    assert str(info.value) == f"attempt {max_retries + 1}"
    assert comm.updates == max_retries  # no recovery after the last attempt


@pytest.mark.parametrize("error", [
    ValueError("bad input"),
    pccl.CollectiveMismatchError("peer 2 called op=max, this peer op=sum"),
    pccl.PcclError("shared-state sync refused"),
    pccl.MasterUnreachableError("lost connection to master"),  # master_grace=0: not retried
    jitted_failure("CollectiveMismatchError"),
], ids=lambda e: type(e).__name__ + ("(jit)" if isinstance(e, jax.errors.JaxRuntimeError) else ""))
def test_other_errors_propagate_at_once_without_update_topology(error):
    comm = FakeComm()
    step = Step([error])
    with pytest.raises(type(error)) as info:
        pccl.retry_on_peer_failure(comm, step, max_retries=5, backoff=0.0)(jnp.ones(2))
    assert info.value is error
    assert len(step.args) == 1 and comm.updates == 0


def test_a_peer_failure_during_recovery_is_retried_within_max_retries():
    comm = FakeComm([pccl.PeerFailureError("another peer died during the vote")])
    step = Step([pccl.PeerFailureError("first")])
    out = pccl.retry_on_peer_failure(comm, step, max_retries=2, backoff=0.0)(jnp.ones(2))
    np.testing.assert_array_equal(out, [2.0, 2.0])
    assert len(step.args) == 2 and comm.updates == 2


def test_master_grace_rides_out_an_unreachable_master():
    outage = [pccl.MasterUnreachableError("master down")] * 3
    comm = FakeComm(outage)
    step = Step([pccl.MasterUnreachableError("lost connection to master")])
    out = pccl.retry_on_peer_failure(comm, step, master_grace=60.0, backoff=0.0)(jnp.ones(2))
    np.testing.assert_array_equal(out, [2.0, 2.0])
    assert len(step.args) == 2
    assert comm.updates == 4  # three refused while the master was away, then recovered


def test_master_grace_runs_out():
    grace = 0.5
    comm = FakeComm([pccl.MasterUnreachableError("master down")] * 1000)
    step = Step([jitted_failure("MasterUnreachableError")])
    t0 = time.monotonic()
    with pytest.raises(pccl.MasterUnreachableError, match="master down"):
        pccl.retry_on_peer_failure(comm, step, master_grace=grace, backoff=0.0)(jnp.ones(2))
    assert len(step.args) == 1 and comm.updates >= 1
    assert time.monotonic() - t0 < grace + 10  # bounded by the grace (slack for a loaded box)


@pytest.mark.parametrize("kwargs,exc", [
    ({"max_retries": -1}, ValueError), ({"max_retries": 1.5}, TypeError),
    ({"max_retries": True}, TypeError), ({"max_retries": "3"}, TypeError),
    ({"backoff": -0.1}, ValueError), ({"backoff": math.nan}, ValueError),
    ({"backoff": "0"}, TypeError), ({"master_grace": -1.0}, ValueError),
    ({"master_grace": math.nan}, ValueError), ({"master_grace": math.inf}, ValueError),
    ({"master_grace": None}, TypeError),
], ids=lambda v: repr(v) if not isinstance(v, type) else v.__name__)
def test_bad_arguments_are_refused_when_wrapping(kwargs, exc):
    """max_retries=-1 used to skip the step entirely: the wrapper raised
    AssertionError("unreachable") without calling fn once."""
    step = Step()
    with pytest.raises(exc, match=next(iter(kwargs))):
        pccl.retry_on_peer_failure(FakeComm(), step, **kwargs)
    assert not step.args


# --- a real master restart -----------------------------------------------------------------

@pytest.fixture
def master_procs():
    procs, threads = [], []
    yield procs, threads
    for thread in threads:  # a restart still under way
        thread.join(60)
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _kill(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("grace", [30.0, 0.0])
def test_master_restart_on_the_same_port_within_master_grace(master_procs, grace):
    """This process's communicator, a master process. The master is killed;
    the first failed attempt restarts it on the same port. With a grace the
    step comes back with the right result; without one, the outage
    propagates after that one attempt.

    Alone in its ring, a step needs no master (update_topology() with
    nothing pending and the all_reduce are local), so steps succeed until the
    peer has seen the killed master's connection close; under load that took
    a while and a single step after the kill succeeded. So steps run until
    the first failure, each with the right result, within a bound."""
    procs, threads = master_procs
    first, port = _launch_master()
    procs.append(first)
    comm = pccl.Communicator(f"127.0.0.1:{port}", timeout=5.0).connect(timeout=20)
    try:
        failures, restarted = [], threading.Event()

        def step(x):
            try:
                comm.update_topology()  # a training step's shape
                return pccl.all_reduce(x, comm, op="sum")
            except Exception as exc:
                failures.append(exc)
                if len(failures) == 1 and grace:  # back only after the step saw it gone
                    threads.append(threading.Thread(target=lambda: (
                        procs.append(_start_master_process(port)), restarted.set()), daemon=True))
                    threads[0].start()
                raise

        x = np.arange(4, dtype=np.float32)
        wrapped = pccl.retry_on_peer_failure(comm, step, master_grace=grace, max_retries=3)
        np.testing.assert_array_equal(np.asarray(wrapped(x)), x)  # healthy
        _kill(procs[0])
        deadline = time.monotonic() + 20
        if grace:
            while not failures and time.monotonic() < deadline:
                np.testing.assert_array_equal(np.asarray(wrapped(x)), x)
            assert failures, "no step saw the master gone within 20 s"
            assert restarted.wait(30)
            assert isinstance(failures[0], pccl.MasterUnreachableError), failures
            assert all(pccl.is_peer_failure(e) or isinstance(e, pccl.MasterUnreachableError)
                       for e in failures), failures
            assert comm.world_size == 1
        else:
            with pytest.raises(pccl.MasterUnreachableError):
                while time.monotonic() < deadline:
                    np.testing.assert_array_equal(np.asarray(wrapped(x)), x)
            assert len(failures) == 1
    finally:
        comm.close()
