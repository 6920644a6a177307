"""The XLA FFI handlers at their edges (issue #17), on 2 peer processes:
64-bit tickets (defect 6) and no C++ exception across the FFI boundary
(defect 9b). See tests/handler_edge_scenarios.py."""
import numpy as np
import pytest

import handler_edge_scenarios as sc
import harness

N = 2


@pytest.fixture(scope="module")
def tickets(pccl):
    return harness.run_scenario(pccl, "ticket_wrap", N, timeout=120, comm_timeout=10)


@pytest.fixture(scope="module")
def faults(pccl):
    return harness.run_scenario(pccl, "handler_faults", N, timeout=120, comm_timeout=10)


def sums():
    trees = [sc.peer_tree(i) for i in range(N)]
    return {k: np.sum([t[k] for t in trees], axis=0).astype(trees[0][k].dtype) for k in trees[0]}


def test_ticket_wrap_peers_finished_cleanly(tickets):
    assert not tickets.problems, tickets.diagnostics()


@pytest.mark.parametrize("round_", range(len(sc.TICKET_STARTS[0])))
def test_tickets_past_32_bits_still_wait(tickets, round_):
    want = sums()
    top = np.max([sc.peer_tree(i)["a"] for i in range(N)], axis=0)
    for peer in tickets.values(f"eager/{round_}"):
        for k, v in want.items():
            np.testing.assert_array_equal(harness.decode(peer["tree"][k]), v)
        np.testing.assert_array_equal(harness.decode(peer["max"]), top)
    for peer in tickets.values(f"jit/{round_}"):
        assert peer["world"] == N
        for k, v in want.items():
            np.testing.assert_array_equal(harness.decode(peer["tree"][k]), v)


def test_handler_faults_peers_finished_cleanly(faults):
    assert not faults.problems, faults.diagnostics()


@pytest.mark.parametrize("fault", sorted(sc.FAULTS))
def test_a_throwing_handler_fails_the_call_and_the_communicator_lives_on(faults, fault):
    for outcome in faults.values(f"{fault}/raised"):
        # The handler caught it and returned our error: Python classifies it
        # (a PcclError, not XLA's generic "FFI call failed"), naming the cause.
        assert outcome.startswith("PcclError: "), outcome
        assert "bad_alloc" in outcome, outcome
    a = sums()["a"]
    expected = {"all_reduce": a, "start": a, "wait_bind": 2 * a, "wait": 2 * a}[fault]
    for peer in faults.values(f"{fault}/after"):
        np.testing.assert_array_equal(harness.decode(peer), expected)
    for peer in faults.values("final"):
        np.testing.assert_array_equal(harness.decode(peer), a)


def test_tickets_past_32_bits_without_x64_in_one_process(pccl, master):
    """The handle stays int32 (word pairs) when jax_enable_x64 is off, the
    default; one peer, in this process, its ticket counter moved past 2^32."""
    import jax
    import jax.numpy as jnp
    from jax_pccl import _pccl

    was = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        with pccl.Communicator(master.address).connect() as comm:
            _pccl._set_next_ticket_for_testing(comm._native, 2**32 - 1)
            tree = {"a": jnp.arange(3.0), "b": jnp.arange(4)}
            handle = pccl.all_reduce_start(tree, comm)
            out, info = pccl.all_reduce_wait(handle, return_info=True)
            assert handle.tickets.dtype == jnp.int32 and handle.tickets.shape == (5,)
            np.testing.assert_array_equal(out["a"], np.arange(3.0, dtype=np.float32))
            np.testing.assert_array_equal(out["b"], np.arange(4, dtype=np.int32))
            assert int(info.world_size) == 1
            f = jax.jit(lambda x: pccl.all_reduce_wait(pccl.all_reduce_start(x, comm), return_info=True))
            for _ in range(3):  # tickets 2^32 + 1 .. 2^32 + 3
                y, info = f(jnp.full((2,), 7.0))
                np.testing.assert_array_equal(y, [7.0, 7.0])
                assert int(info.world_size) == 1
    finally:
        jax.config.update("jax_enable_x64", was)
