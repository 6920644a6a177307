"""reduce_scatter across 3 peer processes (tests/kinds_scenarios.py): every
dtype with three ops eagerly and under jit, a large array, a pytree, vmap,
grad (sum, avg), a program traced for another group size and an axis 0 that
does not split. Rank r must get rows [r * s, (r + 1) * s) of numpy's
reduction of every peer's input (the ranks are the peers' own reports)."""
import numpy as np
import pytest

import cases
import harness
from kinds_scenarios import LARGE, OPS_FOR, SCATTER_SHAPE
from test_all_gather import by_rank


@pytest.fixture(scope="module")
def run(pccl):
    return harness.run_scenario(pccl, "reduce_scatter", timeout=240, comm_timeout=20)


def assert_slices(run, name: str, full: np.ndarray) -> None:
    """Peer i (rank r) holds slice r of `full` along axis 0, exactly."""
    n = cases.N_PEERS
    s = full.shape[0] // n
    ranks = [r["meta"]["rank"] for r in run.reports]
    for i, enc in enumerate(run.values(name)):
        r = ranks[i]
        want = np.ascontiguousarray(full[r * s:(r + 1) * s])
        assert enc["dtype"] == str(want.dtype) and tuple(enc["shape"]) == want.shape, (name, enc, want.shape)
        assert enc["sha256"] == cases.sha256(want), (
            f"{name}: peer {i} (rank {r}) got {harness.decode(enc)}, expected {want}")


def test_peers_finished_cleanly(run):
    assert not run.problems, run.diagnostics()


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("mode", cases.MODES)
def test_every_dtype_and_op_is_exact(run, mode, dtype):
    for op in OPS_FOR["float" if cases.is_float(dtype) else "int"]:
        stacked = cases.all_inputs(op, dtype, shape=SCATTER_SHAPE)
        assert_slices(run, f"{mode}/{op}/{dtype}", cases.reference(op, stacked, dtype))


def test_large(run):
    stacked = cases.all_inputs("sum", "float32", shape=LARGE)
    assert_slices(run, "jit/large", cases.reference("sum", stacked, "float32"))


def test_pytree_and_vmap(run):
    got = run.values("jit/pytree")
    for k, (dtype, shape) in enumerate((("float32", (3, 2)), ("int32", (9,)))):
        full = cases.reference("sum", cases.all_inputs("sum", dtype, shape=shape), dtype)
        s = shape[0] // cases.N_PEERS
        ranks = [r["meta"]["rank"] for r in run.reports]
        for i, leaves in enumerate(got):
            want = np.ascontiguousarray(full[ranks[i] * s:(ranks[i] + 1) * s])
            assert leaves[k]["sha256"] == cases.sha256(want), (k, i)
    # vmap over axis 0 of (4, 6): each row of 6 is scattered: result (4, 2).
    full = cases.reference("sum", cases.all_inputs("sum", "int32", shape=(4, 6)), "int32")
    ranks = [r["meta"]["rank"] for r in run.reports]
    for i, enc in enumerate(run.values("jit/vmap")):
        want = np.ascontiguousarray(full[:, ranks[i] * 2:(ranks[i] + 1) * 2])
        assert enc["sha256"] == cases.sha256(want), (i, harness.decode(enc), want)


@pytest.mark.parametrize("op,scale", [("sum", 3.0), ("avg", 1.0)])
def test_grad_is_the_all_gather_of_the_cotangent(run, op, scale):
    # d(sum over peers of sum(3 * rs(x)))/dx = 3 everywhere (avg: 3 / N).
    want = np.full(6, scale, np.float32)
    harness.assert_exact(run.values(f"jit/grad/{op}"), want, f"grad {op}")


def test_in_a_scan(run):
    harness.assert_exact(run.values("jit/scan"), np.full(6, 27.0, np.float32), "scan")


def test_errors_fail_alike_and_the_ring_goes_on(run):
    for err, _ in run.errors("jit/world_mismatch"):
        assert "CollectiveMismatchError" in err["message"], err
        assert "sized for 2 peers, the group has 3" in err["message"], err
    for err, _ in run.errors("eager/not_divisible"):
        assert err["type"] == "ValueError", err
        assert "divisible by world_size=3" in err["message"], err
    full = np.full(3, float(sum(range(cases.N_PEERS))))
    assert_slices(run, "eager/after_errors", full)
