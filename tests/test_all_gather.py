"""all_gather across 3 peer processes (tests/kinds_scenarios.py): every
dtype eagerly and under jit, a large array, a 0-d leaf, a pytree, vmap, grad,
and a program traced for another group size. Expected values are numpy's,
from every peer's input rebuilt here and the ranks the peers report."""
import numpy as np
import pytest

import cases
import harness
from kinds_scenarios import LARGE


@pytest.fixture(scope="module")
def run(pccl):
    return harness.run_scenario(pccl, "all_gather", timeout=240, comm_timeout=20)


def by_rank(run) -> list:
    """Launch index of the peer at each rank."""
    ranks = [r["meta"]["rank"] for r in run.reports]
    assert sorted(ranks) == list(range(cases.N_PEERS)), ranks
    return [ranks.index(r) for r in range(cases.N_PEERS)]


def gathered(run, inputs: np.ndarray) -> np.ndarray:
    """Rows in rank order: what every peer must hold."""
    return np.stack([inputs[i] for i in by_rank(run)])


def test_peers_finished_cleanly(run):
    assert not run.problems, run.diagnostics()


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("mode", cases.MODES)
def test_every_dtype_is_exact_and_identical(run, mode, dtype):
    expected = gathered(run, cases.all_inputs("sum", dtype))
    harness.assert_exact(run.values(f"{mode}/{dtype}"), expected, f"{mode}/{dtype}")


@pytest.mark.parametrize("mode", cases.MODES)
def test_large_and_scalar(run, mode):
    harness.assert_exact(run.values(f"{mode}/large"),
                         gathered(run, cases.all_inputs("sum", "float32", shape=LARGE)), "large")
    harness.assert_exact(run.values(f"{mode}/scalar"),
                         gathered(run, cases.all_inputs("sum", "int32", shape=())), "scalar")


def test_pytree(run):
    got = run.values("jit/pytree")
    harness.assert_exact([g["a"] for g in got],
                         gathered(run, cases.all_inputs("sum", "float32", shape=(3,))), "a")
    harness.assert_exact([g["b"] for g in got],
                         gathered(run, cases.all_inputs("sum", "int16", shape=(2, 2))), "b")


def test_vmap_keeps_the_batch_axis_first(run):
    # vmap over axis 0 of a (4, 5) input: result[b] = all_gather(x[b]), shape (4, 3, 5).
    rows = gathered(run, cases.all_inputs("sum", "float32", shape=(4, 5)))  # (3, 4, 5)
    harness.assert_exact(run.values("jit/vmap"), np.swapaxes(rows, 0, 1), "vmap")


def test_grad_is_the_reduce_scatter_of_the_cotangent(run):
    # Every peer weighs row r by r + 1, so rank r's input gets N (r + 1).
    ranks = [r["meta"]["rank"] for r in run.reports]
    for i, enc in enumerate(run.values("jit/grad")):
        want = np.full(4, cases.N_PEERS * (ranks[i] + 1), np.float32)
        harness.assert_exact([enc], want, f"grad on peer {i} (rank {ranks[i]})")


def test_in_a_scan(run):
    harness.assert_exact(run.values("jit/scan"), np.full(2, 54.0, np.float32), "scan")


def test_a_program_traced_for_another_group_size_fails_on_every_peer(run):
    for err, _ in run.errors("jit/world_mismatch"):
        assert "CollectiveMismatchError" in err["message"], err
        assert "sized for 2 peers, the group has 3" in err["message"], err
        assert "trace the function again" in err["message"], err
    # ... and the ring stays usable.
    expected = gathered(run, np.stack([np.ones(4, np.float32) * (i + 1) for i in range(cases.N_PEERS)]))
    harness.assert_exact(run.values("eager/after_mismatch"), expected, "after the mismatch")
