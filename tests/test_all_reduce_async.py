"""all_reduce_start / all_reduce_wait on 3 peer processes: exact, identical on
every peer, ordered with plain all_reduce, and guarded against update_topology."""
import numpy as np
import pytest

import cases
import harness

N = cases.N_PEERS


@pytest.fixture(scope="module")
def run(pccl):
    return harness.run_scenario(pccl, "async", timeout=150, comm_timeout=20)


def inputs(run):
    return [{k: harness.decode(v) for k, v in peer.items()} for peer in run.values("input")]


def test_peers_finished_cleanly(run):
    assert not run.problems, run.diagnostics()


def test_eager_start_wait_reduces_a_pytree_exactly(run):
    ins = inputs(run)
    for peer in run.values("eager/sum"):
        for key in ("f", "i"):
            expected = np.sum([x[key] for x in ins], axis=0).astype(ins[0][key].dtype)
            np.testing.assert_array_equal(harness.decode(peer[key]), expected)
    assert len({p["f"]["sha256"] for p in run.values("eager/sum")}) == 1


def test_jitted_start_wait_with_compute_in_between(run):
    ins = inputs(run)
    for peer in run.values("jit/max"):
        assert peer["world"] == N
        for key in ("f", "i"):
            np.testing.assert_array_equal(harness.decode(peer["out"][key]),
                                          np.max([x[key] for x in ins], axis=0))


def test_handles_cross_jitted_steps_in_a_pipeline(run):
    total_f = np.sum([x["f"] for x in inputs(run)], axis=0)
    for peer in run.values("pipelined"):
        got = [harness.decode(r) for r in peer]
        np.testing.assert_array_equal(got[0], total_f)  # started before the loop
        for reduced in got[1:]:
            np.testing.assert_array_equal(reduced, 2 * total_f)


def test_compute_in_the_same_jit_runs_while_the_collective_waits(run):
    """Peer 0's jitted matmul chain sits between start and wait; the other
    peers join the collective only after that chain has run. Before the wait
    took its tickets in a separate call, XLA's buffer reuse made the chain wait
    for the collective's end: a deadlock broken only by the others' patience."""
    total = np.sum([x["f"] for x in inputs(run)], axis=0)
    results = run.values("compute_runs_while_waiting")
    assert len(results) >= 2  # the claim is about the others: peer 0 only leaves the flag
    for index, peer in enumerate(results):
        if index > 0:
            assert peer["flag_seen"], f"peer {index} joined before peer 0's compute had run"
        np.testing.assert_array_equal(harness.decode(peer["out"]), total)


def test_started_collectives_keep_program_order_with_plain_all_reduce(run):
    ins = inputs(run)
    total_f = np.sum([x["f"] for x in ins], axis=0)
    total_i = np.sum([x["i"] for x in ins], axis=0)
    for peer in run.values("interleaved"):
        np.testing.assert_array_equal(harness.decode(peer["first"]), total_f)
        np.testing.assert_array_equal(harness.decode(peer["second"]), 2 * total_f)
        np.testing.assert_array_equal(harness.decode(peer["plain"]), total_i)


def test_update_topology_with_a_started_collective_raises_pccl_error(run):
    for outcome in run.values("guard"):
        assert outcome.startswith("PcclError") and "all_reduce_wait" in outcome, outcome
