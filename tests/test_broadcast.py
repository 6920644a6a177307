"""broadcast across 3 peer processes (tests/kinds_scenarios.py): every dtype
eagerly and under jit, every root, large arrays (a pipelined chain of
chunks), a pytree, vmap, grad, and a root outside the group. Expected values
are the root's input, rebuilt here (roots are ranks: the peers report theirs)."""
import numpy as np
import pytest

import cases
import harness
from kinds_scenarios import LARGE
from test_all_gather import by_rank


@pytest.fixture(scope="module")
def run(pccl):
    return harness.run_scenario(pccl, "broadcast", timeout=240, comm_timeout=20)


def root_input(run, root: int, inputs: np.ndarray) -> np.ndarray:
    return inputs[by_rank(run)[root]]


def test_peers_finished_cleanly(run):
    assert not run.problems, run.diagnostics()


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("mode", cases.MODES)
def test_every_dtype_is_the_roots_bytes(run, mode, dtype):
    expected = root_input(run, 1, cases.all_inputs("sum", dtype))
    harness.assert_exact(run.values(f"{mode}/{dtype}"), expected, f"{mode}/{dtype}")


@pytest.mark.parametrize("root", range(cases.N_PEERS))
def test_every_root(run, root):
    expected = root_input(run, root, cases.all_inputs("sum", "float32"))
    harness.assert_exact(run.values(f"jit/root{root}"), expected, f"root {root}")


def test_large_arrays(run):
    harness.assert_exact(run.values("jit/large"),
                         root_input(run, 2, cases.all_inputs("sum", "float32", shape=LARGE)), "large")
    harness.assert_exact(run.values("eager/large_int64"),
                         root_input(run, 0, cases.all_inputs("sum", "int64", shape=LARGE)),
                         "large int64")


def test_pytree_and_vmap(run):
    a, b = zip(*run.values("jit/pytree"))
    harness.assert_exact(list(a), root_input(run, 2, cases.all_inputs("sum", "bfloat16", shape=(3,))), "a")
    harness.assert_exact(list(b), root_input(run, 2, cases.all_inputs("sum", "uint8", shape=())), "b")
    harness.assert_exact(run.values("jit/vmap"),
                         root_input(run, 0, cases.all_inputs("sum", "float32", shape=(4, 5))), "vmap")


def test_grad_sums_the_cotangents_onto_the_root(run):
    ranks = [r["meta"]["rank"] for r in run.reports]
    for i, enc in enumerate(run.values("jit/grad")):
        want = np.full(4, 2.0 * cases.N_PEERS if ranks[i] == 0 else 0.0, np.float32)
        harness.assert_exact([enc], want, f"grad on peer {i} (rank {ranks[i]})")


def test_in_a_scan(run):
    want = np.full(2, 3.0 * (by_rank(run)[0] + 1), np.float32)
    harness.assert_exact(run.values("jit/scan"), want, "scan")


def test_a_root_outside_the_group_fails_on_every_peer_and_the_ring_goes_on(run):
    for err, _ in run.errors("eager/bad_root"):
        assert err["is_pccl_error"], err
        assert "root 7 is not a rank of this group (3 peers)" in err["message"], err
    expected = np.full(3, float(by_rank(run)[0]))
    harness.assert_exact(run.values("eager/after_bad_root"), expected, "after the bad root")
