"""all_reduce across 3 peer processes: every op x every dtype, eager and under jit.

One launch of 3 peers runs all checks (tests/peer_scenarios.py: scenario_ops);
each test below inspects one check. Every peer's input is rebuilt here from
tests/cases.py and the expected result is computed with numpy; results must
match it exactly and be bit-identical on every peer.
"""
import numpy as np
import pytest

import cases
import harness


@pytest.fixture(scope="module")
def ops_run(pccl):
    return harness.run_scenario(pccl, "ops", timeout=200, comm_timeout=20)


def test_peers_joined_and_finished_cleanly(ops_run):
    assert not ops_run.problems, ops_run.diagnostics()
    metas = [r["meta"] for r in ops_run.reports]
    assert [m["world_size"] for m in metas] == [cases.N_PEERS] * cases.N_PEERS, metas
    assert sorted(m["rank"] for m in metas) == list(range(cases.N_PEERS)), f"ranks not a permutation: {metas}"


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("op", cases.OPS)
@pytest.mark.parametrize("mode", cases.MODES)
def test_result_is_exact_and_identical_on_all_peers(ops_run, mode, op, dtype):
    name = f"{mode}/{op}/{dtype}"
    results = ops_run.values(name)
    expected = cases.reference(op, cases.all_inputs(op, dtype), dtype)
    harness.assert_exact(results, expected, name)


@pytest.mark.parametrize("dtype", cases.FLOAT_DTYPES)
@pytest.mark.parametrize("mode", cases.MODES)
def test_float_avg_that_needs_rounding_is_within_one_ulp(ops_run, mode, dtype):
    name = f"{mode}/avg_rounding/{dtype}"
    results = ops_run.values(name)
    harness.assert_identical_across_peers(results, name)
    stacked = cases.all_inputs("avg", dtype, variant="rounding")
    exact = stacked.astype(np.float64).sum(axis=0) / cases.N_PEERS
    got = harness.decode(results[0]).astype(np.float64)
    tol = cases.ulp(dtype) * np.abs(exact)
    err = np.abs(got - exact)
    assert results[0]["dtype"] == dtype, f"{name}: result dtype {results[0]['dtype']}"
    assert (err <= tol).all(), (
        f"{name}: worst error {err.max()} at {np.argmax(err - tol)}, allowed {tol.reshape(-1)[np.argmax(err - tol)]}")


@pytest.mark.parametrize("op,dtype", cases.LARGE_CASES)
@pytest.mark.parametrize("mode", cases.MODES)
def test_large_array_is_exact_and_identical_on_all_peers(ops_run, mode, op, dtype):
    name = f"{mode}/large/{op}/{dtype}"
    results = ops_run.values(name)
    expected = cases.reference(op, cases.all_inputs(op, dtype, shape=cases.LARGE_SHAPE), dtype)
    harness.assert_exact(results, expected, name)


def test_numpy_input_is_accepted(ops_run):
    name = "eager/numpy_input/sum/float32"
    results = ops_run.values(name)
    expected = cases.reference("sum", cases.all_inputs("sum", "float32"), "float32")
    harness.assert_exact(results, expected, name)
