"""all_reduce composed with JAX: pytrees, return_info, several collectives in one
jit, lax.scan, vmap and grad. One launch of 3 peers (scenario_transforms)."""
import jax
import numpy as np
import pytest

import cases
import harness

N = cases.N_PEERS


@pytest.fixture(scope="module")
def run(pccl):
    return harness.run_scenario(pccl, "transforms", timeout=150, comm_timeout=20)


def all_peers(fn):
    """Stack fn(index) over peers: the inputs every peer used."""
    return np.stack([fn(i) for i in range(N)])


def test_peers_finished_cleanly(run):
    assert not run.problems, run.diagnostics()


# --- pytrees ------------------------------------------------------------------

def _tree_reference(op):
    trees = [cases.pytree_input(i) for i in range(N)]
    leaves_per_peer = [jax.tree_util.tree_leaves(t) for t in trees]
    return [cases.reference(op, np.stack(ls), str(ls[0].dtype)) for ls in zip(*leaves_per_peer)]


@pytest.mark.parametrize("name,op", [("pytree/eager/sum", "sum"), ("pytree/jit/sum", "sum"),
                                     ("pytree/jit/max", "max")])
def test_pytree_keeps_structure_and_reduces_every_leaf(run, name, op):
    inputs = run.values("pytree/input")
    results = run.values(name)
    for i, (inp, res) in enumerate(zip(inputs, results)):
        assert res["treedef"] == inp["treedef"], f"{name}: peer {i} structure {res['treedef']} != {inp['treedef']}"
        assert res["paths"] == inp["paths"], f"{name}: peer {i} leaf paths {res['paths']} != {inp['paths']}"
    for k, (path, expected) in enumerate(zip(inputs[0]["paths"], _tree_reference(op))):
        harness.assert_exact([r["leaves"][k] for r in results], expected, f"{name} leaf {path}")


# --- return_info ----------------------------------------------------------------

@pytest.mark.parametrize("mode", cases.MODES)
def test_return_info_reports_world_size(run, mode):
    name = f"return_info/{mode}"
    results = run.values(name)
    for i, r in enumerate(results):
        assert r["world_size"] == N, f"{name}: peer {i} info.world_size = {r['world_size']}, expected {N}"
        assert r["ws_dtype"] == "int32" and r["ws_shape"] == [], (
            f"{name}: peer {i} info.world_size is {r['ws_dtype']}{r['ws_shape']}, expected an int32 scalar")
    expected = cases.reference("avg", all_peers(lambda i: cases.small_ints("info", i, (6,), "float32")), "float32")
    harness.assert_exact([r["y"] for r in results], expected, name)


# --- several collectives in one jit ------------------------------------------------

def test_independent_collectives_in_one_jit_each_get_their_own_result(run):
    results = run.values("ordering/independent")
    for k, (op, shape, dtype) in cases.TWO_OPS_SPECS.items():
        lo, hi = (-2, 2) if op == "prod" else (-9, 9)
        stacked = all_peers(lambda i: cases.small_ints(("two", k), i, shape, dtype, lo, hi))
        harness.assert_exact([r[k] for r in results], cases.reference(op, stacked, dtype),
                             f"ordering/independent[{k}] ({op} {dtype}{shape})")


def test_chained_collectives_in_one_jit_run_in_program_order(run):
    results = run.values("ordering/chained")
    a = all_peers(lambda i: cases.small_ints("chain.a", i, (7,), "float32"))
    b = all_peers(lambda i: cases.small_ints("chain.b", i, (7,), "float32"))
    s = a.sum(axis=0)
    harness.assert_exact([r[0] for r in results], s, "ordering/chained first (sum)")
    harness.assert_exact([r[1] for r in results], (s + b).max(axis=0), "ordering/chained second (max of sum + b)")


# --- lax.scan -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", cases.MODES)
def test_scan_with_all_reduce_in_body(run, mode):
    name = f"scan/{mode}"
    results = run.values(name)
    xs = all_peers(lambda i: cases.small_ints("scan", i, (cases.SCAN_STEPS, cases.SCAN_WIDTH), "float32"))
    carry, ys = cases.scan_reference(xs)
    harness.assert_exact([r[0] for r in results], carry.astype(np.float32), f"{name} final carry")
    harness.assert_exact([r[1] for r in results], ys.astype(np.float32), f"{name} stacked outputs")


# --- vmap ---------------------------------------------------------------------------

def _vmap_inputs():
    return all_peers(lambda i: cases.small_ints("vmap", i, (cases.VMAP_BATCH, cases.VMAP_WIDTH), "int32"))


@pytest.mark.parametrize("mode", cases.MODES)
def test_vmap_reduces_each_batch_element(run, mode):
    name = f"vmap/{mode}/sum"
    harness.assert_exact(run.values(name), _vmap_inputs().sum(axis=0, dtype=np.int32), name)


def test_vmap_over_a_non_leading_axis(run):
    name = "vmap/jit/max_in_axes1"
    # vmap(in_axes=1) maps over columns and stacks the per-column results on axis 0
    harness.assert_exact(run.values(name), _vmap_inputs().max(axis=0).T, name)


# --- grad ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["sum", "avg"])
@pytest.mark.parametrize("mode", cases.MODES)
def test_grad_is_gradient_of_the_sum_of_all_peers_losses(run, mode, op):
    """loss_p = sum(all_reduce(x_p, op) * w_p); d(sum_q loss_q)/dx_p = sum_q w_q (/ N for avg)."""
    name = f"grad/{mode}/{op}"
    results = run.values(name)
    x = all_peers(lambda i: cases.small_ints("grad.x", i, (cases.GRAD_SIZE,), "float32")).astype(np.float64)
    w = all_peers(lambda i: cases.small_ints("grad.w", i, (cases.GRAD_SIZE,), "float32")).astype(np.float64)
    scale = 1.0 if op == "sum" else 1.0 / N
    reduced_x = x.sum(axis=0) * scale
    expected_grad = w.sum(axis=0) * scale
    harness.assert_identical_across_peers([r[1] for r in results], f"{name} gradient")
    for i, r in enumerate(results):
        loss, grad = harness.decode(r[0]), harness.decode(r[1])
        assert grad.dtype == np.float32 and grad.shape == (cases.GRAD_SIZE,), (
            f"{name}: peer {i} gradient is {grad.dtype}{grad.shape}")
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=0,
                                   err_msg=f"{name}: peer {i} gradient != sum_q w_q{' / N' if op == 'avg' else ''}")
        terms = reduced_x * w[i]
        np.testing.assert_allclose(loss, terms.sum(), rtol=1e-6, atol=1e-6 * np.abs(terms).sum(),
                                   err_msg=f"{name}: peer {i} loss value")


# --- donate=True: results in the input's buffer ----------------------------------

def _donate_inputs(size):
    return np.stack([cases.small_ints(("donate", size), i, (size,), "float32") for i in range(N)])


@pytest.mark.parametrize("size", cases.DONATE_SIZES)
def test_donated_eager_and_jit_argument_reduce_exactly_and_consume_input(run, size):
    expected = cases.reference("sum", _donate_inputs(size), "float32")
    for mode in ("eager", "jit_argument"):
        results = run.values(f"donate/{size}/{mode}")
        harness.assert_exact([r["y"] for r in results], expected, f"donate/{size}/{mode}")
        assert all(r["input_deleted"] for r in results), f"{mode}: the donated input is still alive"


@pytest.mark.parametrize("size", cases.DONATE_SIZES)
def test_donated_intermediate_reduces_exactly(run, size):
    expected = cases.reference("avg", _donate_inputs(size) * 2, "float32")
    harness.assert_exact(run.values(f"donate/{size}/jit_intermediate"), expected,
                         f"donate/{size}/jit_intermediate")


@pytest.mark.parametrize("size", cases.DONATE_SIZES)
def test_donated_input_still_needed_is_copied_not_clobbered(run, size):
    inputs = _donate_inputs(size)
    results = run.values(f"donate/{size}/jit_input_kept")
    harness.assert_exact([r["y"] for r in results], cases.reference("max", inputs, "float32"),
                         f"donate/{size}/jit_input_kept")
    for i, r in enumerate(results):
        harness.assert_exact([r["input_after"]], inputs[i], f"peer {i}'s input after the call")
