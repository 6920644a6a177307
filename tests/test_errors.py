"""Errors: peers that disagree, bad local arguments, an unreachable master.

Nothing may hang: every peer runs under a hard deadline (tests/harness.py) and
every expected error must arrive within the communicator's timeout.
"""
import socket

import numpy as np
import pytest

import cases
import harness
from peer_scenarios import CONNECT_TIMEOUT, MISMATCH_LEN, bad_arg_calls

# A mismatch is a verdict of the header exchange, not a timeout: the bound
# below is half the communicator's timeout, so detection by timeout fails it,
# with room for a loaded machine.
MISMATCH_COMM_TIMEOUT = 20.0
VERDICT_BOUND_S = MISMATCH_COMM_TIMEOUT / 2
CONNECT_SLACK_S = 5.0  # a call that must end by its timeout, measured in a loaded peer process

# What a message must mention to "name the mismatch" / "name the argument".
# `(?!=)` skips "op=sum dtype=float32 shape=(16,)"-style descriptions of a
# call, which would otherwise match whatever field actually differed.
NAMES = {
    "shape": [r"shape(?!=)", r"element", r"count(?!=)", r"size(?!=)", r"length"],
    "shape_same_count": [r"shape(?!=)"],
    "dtype": [r"dtype(?!=)"],
    "op": [r"\bop\b(?!=)", r"\boperations?\b", r"reduce[ _-]?op\b(?!=)", r"reduction op\b(?!=)"],
}
ARG_NAMES = {
    "op": [r"\bop\b"],
    "dtype": [r"dtype"],
    "quantization": [r"quantization"],
}


# --- peers that disagree ------------------------------------------------------------

@pytest.fixture(scope="module")
def mismatch_run(pccl):
    return harness.run_scenario(pccl, "mismatch", timeout=180,
                             comm_timeout=MISMATCH_COMM_TIMEOUT)


def test_mismatch_peers_finished_cleanly(mismatch_run):
    assert not mismatch_run.problems, mismatch_run.diagnostics()


@pytest.mark.parametrize("kind", ["shape", "dtype", "op"])
def test_eager_mismatch_raises_collective_mismatch_error_on_every_peer(mismatch_run, kind):
    name = f"eager/{kind}"
    for i, (err, elapsed) in enumerate(mismatch_run.errors(name)):
        assert err["is_pccl_error"], f"{name}: peer {i} raised {err['type']} (not a PcclError): {err['message']}"
        assert err["type"] == "CollectiveMismatchError", (
            f"{name}: peer {i} raised {err['type']}, expected CollectiveMismatchError: {err['message']}")
        assert harness.message_mentions(err["message"], *NAMES[kind]), (
            f"{name}: peer {i} message does not name the {kind} mismatch: {err['message']!r}")
        assert elapsed < VERDICT_BOUND_S, f"{name}: peer {i} took {elapsed:.1f}s to fail"


@pytest.mark.parametrize("kind", ["shape", "dtype", "op"])
def test_jit_mismatch_raises_jax_runtime_error_on_every_peer(mismatch_run, kind):
    name = f"jit/{kind}"
    for i, (err, elapsed) in enumerate(mismatch_run.errors(name)):
        assert err["is_jax_runtime_error"], (
            f"{name}: peer {i} raised {err['type']} (not a JaxRuntimeError): {err['message']}")
        assert "CollectiveMismatchError" in err["message"], (  # the type, as API.md promises
            f"{name}: peer {i}: the jitted error does not name CollectiveMismatchError: {err['message']}")
        assert harness.message_mentions(err["message"], *NAMES[kind]), (
            f"{name}: peer {i} message does not name the {kind} mismatch: {err['message']!r}")
        assert elapsed < VERDICT_BOUND_S, f"{name}: peer {i} took {elapsed:.1f}s to fail"


def test_shape_mismatch_with_equal_element_count_is_detected(mismatch_run):
    """(4, 4) on two peers vs (2, 8) on the third: same bytes, different shape."""
    name = "eager/shape_same_count"
    for i, (err, elapsed) in enumerate(mismatch_run.errors(name)):
        assert err["type"] == "CollectiveMismatchError", f"{name}: peer {i} raised {err['type']}: {err['message']}"
        assert harness.message_mentions(err["message"], *NAMES["shape_same_count"]), (
            f"{name}: peer {i} message does not name the shape: {err['message']!r}")
        assert elapsed < VERDICT_BOUND_S, f"{name}: peer {i} took {elapsed:.1f}s to fail"


def test_shape_mismatch_between_small_and_large_inputs_is_detected(mismatch_run):
    """Small inputs travel with the header, large ones over the ring: a peer
    on each path must still make everyone fail with the shape named."""
    name = "eager/shape_across_paths"
    for i, (err, elapsed) in enumerate(mismatch_run.errors(name)):
        assert err["type"] == "CollectiveMismatchError", f"{name}: peer {i}: {err['type']}: {err['message']}"
        assert harness.message_mentions(err["message"], *NAMES["shape"]), (
            f"{name}: peer {i} message does not name the shape: {err['message']!r}")
        assert elapsed < VERDICT_BOUND_S, f"{name}: peer {i} took {elapsed:.1f}s to fail"


@pytest.mark.parametrize("case", ["eager/shape", "eager/dtype", "eager/op", "jit/shape", "jit/dtype",
                                  "jit/op", "eager/shape_same_count", "eager/shape_across_paths"])
def test_communicator_still_works_after_a_mismatch(mismatch_run, case):
    name = f"recover/{case}"
    stacked = np.stack([cases.small_ints(("recover", case), i, (MISMATCH_LEN,), "float32")
                        for i in range(cases.N_PEERS)])
    harness.assert_exact(mismatch_run.values(name), cases.reference("sum", stacked, "float32"), name)


# --- bad arguments, rejected before any network traffic ----------------------------------

@pytest.fixture(scope="module")
def bad_args_run(pccl):
    return harness.run_scenario(pccl, "bad_args", timeout=120, comm_timeout=15)


def test_bad_args_peers_finished_cleanly(bad_args_run):
    assert not bad_args_run.problems, bad_args_run.diagnostics()


@pytest.mark.parametrize("mode", cases.MODES)
@pytest.mark.parametrize("call,argument", [(c[0], c[1]) for c in bad_arg_calls()])
def test_bad_argument_raises_type_or_value_error_naming_it(bad_args_run, mode, call, argument):
    name = f"{mode}/{call}"
    [(err, elapsed)] = bad_args_run.errors(name, peers=[0])
    assert {"TypeError", "ValueError"} & set(err["mro"]), (
        f"{name}: raised {err['type']} (mro {err['mro']}), expected TypeError/ValueError: {err['message']}")
    assert harness.message_mentions(err["message"], *ARG_NAMES[argument]), (
        f"{name}: message does not name the bad {argument}: {err['message']!r}")


def test_rejected_calls_sent_nothing_to_the_ring(bad_args_run):
    """Only peer 0 made the bad calls; the next collective must still line up on all peers."""
    stacked = np.stack([cases.small_ints("after_bad", i, (9,), "float32") for i in range(cases.N_PEERS)])
    harness.assert_exact(bad_args_run.values("after/sum"), cases.reference("sum", stacked, "float32"),
                         "after/sum")


# --- master unreachable ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def unreachable_run(pccl):
    # A listener that completes the TCP handshake but never says a word.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent_addr = "127.0.0.1:%d" % silent.getsockname()[1]
        closed_addr = "127.0.0.1:%d" % harness.closed_port()
        return harness.run_peers(closed_addr, "unreachable", n=1, timeout=60, aux=silent_addr)


def test_unreachable_peer_finished_cleanly(unreachable_run):
    assert not unreachable_run.problems, unreachable_run.diagnostics()


def test_connect_to_closed_port_raises_master_unreachable_within_timeout(unreachable_run):
    [(err, elapsed)] = unreachable_run.errors("closed_port")
    assert "MasterUnreachableError" in err["mro"] and err["is_pccl_error"], (
        f"connect() to a closed port raised {err['type']} (mro {err['mro']}): {err['message']}")
    assert elapsed < CONNECT_TIMEOUT + CONNECT_SLACK_S, f"connect() took {elapsed:.1f}s with timeout={CONNECT_TIMEOUT}"


def test_connect_to_silent_master_fails_within_timeout(unreachable_run):
    [(err, elapsed)] = unreachable_run.errors("silent_master")
    assert err["is_pccl_error"], f"connect() to a silent master raised {err['type']}: {err['message']}"
    assert elapsed < CONNECT_TIMEOUT + CONNECT_SLACK_S, f"connect() took {elapsed:.1f}s with timeout={CONNECT_TIMEOUT}"


# --- a compiled function that outlived its communicator ---------------------------

@pytest.mark.parametrize("kind", ["all_reduce", "start_wait"])
def test_function_jitted_over_a_closed_communicator_says_re_jit(pccl, kind):
    """After an eviction users create a new Communicator; a function jitted
    over the old one must say how to fix it, not just that it failed."""
    import jax

    with pccl.Master() as master:
        comm = pccl.Communicator(master.address, timeout=10.0).connect(timeout=20.0)
        if kind == "all_reduce":
            step = jax.jit(lambda x: pccl.all_reduce(x, comm, op="sum"))
        else:
            step = jax.jit(lambda x: pccl.all_reduce_wait(pccl.all_reduce_start(x, comm)))
        x = np.arange(4, dtype=np.float32)
        np.testing.assert_array_equal(np.asarray(step(x)), x)  # compiled while open
        comm.close()
        with pytest.raises(Exception, match=r"closed: re-jit the function with the new Communicator"):
            np.asarray(step(x))


# --- close() from another thread cancels what this one waits for ---------------------------

CANCEL_COMM_TIMEOUT = 30.0
CANCEL_BOUND_S = CANCEL_COMM_TIMEOUT / 3  # "promptly": by the cancellation, not the timeout


@pytest.fixture
def stranded(pccl):
    """Two accepted peers of one group in this process; `b` never joins a
    collective, so any collective `a` starts waits for it (until `timeout`)."""
    import threading
    import time

    from jax_pccl.ops.effects import clear_failed_tokens

    with pccl.Master(host="127.0.0.1", port=0) as master:
        a = pccl.Communicator(master.address, timeout=CANCEL_COMM_TIMEOUT).connect(timeout=20)
        b = pccl.Communicator(master.address, timeout=CANCEL_COMM_TIMEOUT)
        joiner = threading.Thread(target=lambda: b.connect(timeout=30), daemon=True)
        joiner.start()
        deadline = time.monotonic() + 30
        while a.group_world_size < 2 and time.monotonic() < deadline:
            a.update_topology()
            time.sleep(0.02)
        joiner.join(30)
        assert (a.group_world_size, b.group_world_size) == (2, 2)
        try:
            yield a
        finally:
            a.close()
            b.close()
            clear_failed_tokens()  # a cancelled jitted call leaves its token failed


def _close_once_in_flight(comm, seq_before: int):
    """Closes comm from a helper thread once a collective of it is placed
    (stats' seq moved past seq_before); returns (thread, close-time box)."""
    import threading
    import time

    closed_at = []

    def run():
        deadline = time.monotonic() + 60
        while comm.stats()["seq"] <= seq_before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the caller is now blocked in it
        closed_at.append(time.monotonic())
        comm.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, closed_at


def test_cancelled_error_is_exported_and_a_pccl_error(pccl):
    assert "CancelledError" in pccl.__all__
    assert issubclass(pccl.CancelledError, pccl.PcclError)
    assert issubclass(pccl.CancelledError, RuntimeError)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_close_from_another_thread_cancels_a_blocked_collective(pccl, stranded, mode):
    import time

    import jax

    comm = stranded
    fn = (lambda v: pccl.all_reduce(v, comm)) if mode == "eager" else jax.jit(
        lambda v: pccl.all_reduce(v, comm))
    x = np.arange(8, dtype=np.float32)
    closer, closed_at = _close_once_in_flight(comm, comm.stats()["seq"])
    with pytest.raises(Exception) as info:
        np.asarray(fn(x))
    ended = time.monotonic()
    closer.join(10)
    assert closed_at, "the collective never showed as placed (stats()['seq'] did not move)"
    if mode == "eager":
        assert type(info.value) is pccl.CancelledError, repr(info.value)
    else:  # a jitted call: JaxRuntimeError naming it (API.md)
        assert isinstance(info.value, jax.errors.JaxRuntimeError), repr(info.value)
        assert "CancelledError" in str(info.value), str(info.value)
    assert ended - closed_at[0] < CANCEL_BOUND_S, f"cancelled after {ended - closed_at[0]:.1f} s"
    assert np.array_equal(x, np.arange(8, dtype=np.float32))  # input untouched


def test_wait_after_close_raises_cancelled_error(pccl, stranded):
    """A start still in flight when close() ran: its wait says it was
    cancelled (it used to say "re-jit the function", about a jitted function
    there never was)."""
    import time

    comm = stranded
    seq_before = comm.stats()["seq"]
    handle = pccl.all_reduce_start(np.ones(8, np.float32), comm)
    deadline = time.monotonic() + 30
    while comm.stats()["seq"] <= seq_before and time.monotonic() < deadline:
        time.sleep(0.01)
    comm.close()
    t0 = time.monotonic()
    with pytest.raises(pccl.CancelledError, match="close"):
        pccl.all_reduce_wait(handle)
    assert time.monotonic() - t0 < CANCEL_BOUND_S
    # and a new collective on the closed communicator says it is closed
    with pytest.raises(pccl.PcclError, match="closed"):
        pccl.all_reduce(np.ones(2, np.float32), comm)
