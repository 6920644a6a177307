"""Many all-reduces in flight at once on 3 peer processes: the leaves of one
pytree (started together by the XLA handler) and many all_reduce_start
handles, inside and outside jit. Mixed sizes take every path (inline, ring on
a small slot, striped on the bulk slot); every result exact and identical on
every peer (tests/concurrency_scenarios.py)."""
import numpy as np
import pytest

import cases
import concurrency_scenarios as sc
import harness

N = cases.N_PEERS


@pytest.fixture(scope="module", params=[1, 4], ids=["concurrency1", "concurrency4"])
def run(pccl, request):
    """The same calls one at a time (the default) and 4 in flight at once."""
    env = {i: {"PCCL_TEST_CONCURRENCY": str(request.param)} for i in range(N)}
    return harness.run_scenario(pccl, "concurrent", timeout=240, comm_timeout=30,
                                peer_env_extra=env)


def reference(op):
    ins = [sc.leaf_inputs(k) for k in range(N)]
    reduce = {"sum": np.sum, "max": np.max}[op]
    return [reduce([x[j] for x in ins], axis=0).astype(ins[0][j].dtype) for j in range(len(sc.LEAVES))]


def test_peers_finished_cleanly(run):
    assert not run.problems, run.diagnostics()


@pytest.mark.parametrize("check, op", [("jit/pytree", "sum"), ("eager/pytree", "sum"),
                                       ("eager/start_each", "sum"), ("jit/start_each", "max")])
def test_every_leaf_exact_and_identical_on_every_peer(run, check, op):
    expected = reference(op)
    peers = run.values(check)
    assert len(peers) == N
    for j, want in enumerate(expected):
        harness.assert_exact([p[j] for p in peers], want, f"{check} leaf {j}")


def test_each_leaf_is_one_collective(run):
    # 32 leaves x 4 checks, counted between two stats() reads around them:
    # exactly one collective per leaf per check, none merged, none lost.
    for before, after in zip(run.values("stats_before"), run.values("stats")):
        assert after["collectives_done"] - before["collectives_done"] == 4 * len(sc.LEAVES)
        assert after["collectives_failed"] == before["collectives_failed"] == 0


@pytest.mark.parametrize("bad", [0, 5, 1.5, True, "4"])
def test_concurrency_out_of_range_is_refused_before_any_network(pccl, bad):
    with pytest.raises(ValueError, match="concurrency"):
        pccl.Communicator("127.0.0.1:1", concurrency=bad)


def test_concurrency_defaults_to_one_at_a_time(pccl):
    comm = pccl.Communicator("127.0.0.1:1")
    try:
        assert comm.concurrency == 1
    finally:
        comm.close()
