"""Code that runs inside each peer process of the multi-process tests.

    python tests/peer_scenarios.py --master HOST:PORT --scenario NAME \
        --index I --world N --out RESULT.json [--timeout S] [--aux HOST:PORT]

A peer joins the run (connect, then update_topology until N peers are in),
runs the scenario's checks in a fixed order (identical on every peer, so the
collectives line up) and records one entry per check in RESULT.json:

    {"ok": true,  "value": ..., "elapsed": s}            or
    {"ok": false, "error": {"type", "mro", "message"}, "elapsed": s}

The file is rewritten after every check, so a peer that is killed on timeout
still shows how far it got. Arrays are reported as dtype, shape, sha256 of the
raw bytes and (when small) the bytes themselves; the test process rebuilds
every peer's input from tests/cases.py and compares against a numpy reference.

`--index` is the launch index (0..N-1): it selects this peer's input and its
role in the mismatch scenarios. It is deliberately not `comm.rank`, which the
engine may assign in any order.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
import concurrency_scenarios  # noqa: E402
import continuation_scenarios  # noqa: E402
import handler_edge_scenarios  # noqa: E402
import kinds_scenarios  # noqa: E402
import membership_scenarios  # noqa: E402
import native_builds  # noqa: E402
import state_scenarios  # noqa: E402
import striping_scenarios  # noqa: E402
import topology_scenarios  # noqa: E402

SMALL_BYTES = 16384


# --- reporting ---------------------------------------------------------------

def encode(arr) -> dict:
    a = np.ascontiguousarray(np.asarray(arr))
    out = {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": cases.sha256(a)}
    if a.nbytes <= SMALL_BYTES:
        out["hex"] = a.tobytes().hex()
    return out


def describe_error(exc: BaseException) -> dict:
    pccl = sys.modules.get("jax_pccl")
    jax = sys.modules.get("jax")
    return {
        "type": type(exc).__name__,
        "mro": [c.__name__ for c in type(exc).__mro__],
        "message": str(exc)[:4000],
        "is_pccl_error": bool(pccl is not None and isinstance(exc, pccl.PcclError)),
        "is_jax_runtime_error": bool(jax is not None and isinstance(exc, jax.errors.JaxRuntimeError)),
    }


class Recorder:
    def __init__(self, path: str, index: int):
        self.path = path
        self.data = {"index": index, "done": False, "fatal": None, "meta": {}, "checks": {}}
        self.flush()

    def flush(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)

    def check(self, name: str, fn):
        """Run fn() and record its JSON-able value or the exception it raised."""
        assert name not in self.data["checks"], name
        t0 = time.monotonic()
        try:
            entry = {"ok": True, "value": fn()}
        except Exception as exc:  # recorded, the test decides whether it was expected
            entry = {"ok": False, "error": describe_error(exc)}
        entry["elapsed"] = time.monotonic() - t0
        self.data["checks"][name] = entry
        self.flush()
        print(f"[peer {self.data['index']}] {name}: {'ok' if entry['ok'] else entry['error']['type']}"
              f" ({entry['elapsed']:.2f}s)", flush=True)
        return entry


def ready(tree):
    """Block on (and materialise) a result pytree so errors surface inside the check."""
    import jax
    return jax.tree_util.tree_map(lambda l: np.asarray(jax.block_until_ready(l)), tree)


# --- joining -----------------------------------------------------------------

def join(pccl, args):
    """Connect and wait until all args.world peers are accepted.

    join_mode "topology": the plain admission loop
        while world_size != N: update_topology(); sleep
    join_mode "step": the `loop { step; update_topology() }` shape from API.md,
        with a scalar all_reduce as the step (every accepted peer runs the
        same loop, so the step collectives line up).
    """
    # Striping tests give each peer its own connection count.
    extra = {}
    if "PCCL_TEST_CONNECTIONS" in os.environ:
        extra["connections"] = int(os.environ["PCCL_TEST_CONNECTIONS"])
    if "PCCL_TEST_CONCURRENCY" in os.environ:  # collectives in flight at once
        extra["concurrency"] = int(os.environ["PCCL_TEST_CONCURRENCY"])
    comm = pccl.Communicator(args.master, timeout=args.timeout, **extra)
    comm.connect()
    deadline = time.monotonic() + args.join_timeout
    rounds = 0
    while comm.world_size != args.world:
        if time.monotonic() > deadline:
            raise TimeoutError(f"world_size stuck at {comm.world_size} (expected {args.world}) after "
                               f"{args.join_timeout:.0f}s and {rounds} rounds of join mode {args.join_mode!r}")
        if args.join_mode == "step":
            import jax.numpy as jnp
            np.asarray(pccl.all_reduce(jnp.zeros((), jnp.int32), comm, op="sum"))
            comm.update_topology()
        else:
            comm.update_topology()
            time.sleep(0.05)
        rounds += 1
    return comm


def scenario_join_only(ctx):
    """Nothing beyond joining (the admission loop itself is under test) and one sum."""
    import jax.numpy as jnp
    x = jnp.asarray(cases.small_ints("join_only", ctx.index, (5,), "float32"))
    ctx.rec.check("sum", lambda: encode(ready(ctx.pccl.all_reduce(x, ctx.comm, op="sum"))))


EFFECT_ORDER_CALLS = 200


def effect_order_input(index: int, k: int) -> np.ndarray:
    # call k's shape is its own (a call paired with another would be a
    # mismatch error) and so are its values (a swap would show in the sums)
    return np.full((k % 7) + 1, 1000.0 * index + k, np.float32)


def scenario_effect_order(ctx):
    """EFFECT_ORDER_CALLS independent jitted all_reduces (no data dependency
    between them), all dispatched before any result is read: only the ordered
    effect token keeps each peer's calls in program order, so that call k
    meets call k everywhere."""
    import jax
    import jax.numpy as jnp
    comm, pccl = ctx.comm, ctx.pccl
    fns = [jax.jit(lambda v: pccl.all_reduce(v, comm, op="sum")) for _ in range(3)]
    inputs = [jnp.asarray(effect_order_input(ctx.index, k)) for k in range(EFFECT_ORDER_CALLS)]

    def run():
        outs = [fns[k % 3](x) for k, x in enumerate(inputs)]  # three executables, interleaved
        return [float(np.asarray(o)[0]) for o in ready(outs)]
    ctx.rec.check("independent_calls", run)


# --- scenarios ---------------------------------------------------------------

QUANT_ELEMENTS = 200_003  # several 64Ki-element wire chunks, uneven segments


def quant_input(index: int, dtype: str) -> np.ndarray:
    return np.random.default_rng(1000 + index).normal(size=QUANT_ELEMENTS).astype(cases.np_dtype(dtype))


def scenario_async(ctx):
    """all_reduce_start / all_reduce_wait: eager, jit with compute in between,
    pytrees, ordering against plain all_reduce, and the update_topology guard."""
    import jax
    import jax.numpy as jnp
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    tree = {"f": jnp.asarray(cases.small_ints("async", i, (7,), "float32")),
            "i": jnp.asarray(cases.small_ints("async-i", i, (3, 2), "int32"))}
    rec.check("input", lambda: {k: encode(v) for k, v in tree.items()})

    def eager():
        out = pccl.all_reduce_wait(pccl.all_reduce_start(tree, comm, op="sum"))
        return {k: encode(ready(v)) for k, v in out.items()}
    rec.check("eager/sum", eager)

    @jax.jit
    def overlapped(t, w):
        h = pccl.all_reduce_start(t, comm, op="max")
        busy = jnp.tanh(w @ w).sum()  # independent compute while the ring works
        out, info = pccl.all_reduce_wait(h, return_info=True)
        return out, info.world_size, busy
    rec.check("jit/max", lambda: (lambda o: {"out": {k: encode(v) for k, v in o[0].items()},
                                             "world": int(o[1])})(ready(overlapped(tree, jnp.eye(32)))))

    # Pipelined: each jitted step waits for the handle the previous step
    # returned and starts the next collective (README's recommended pattern).
    @jax.jit
    def pipelined_step(handle, x):
        previous = pccl.all_reduce_wait(handle)
        return pccl.all_reduce_start(x * 2, comm, op="sum"), previous

    def pipelined():
        handle = jax.jit(lambda x: pccl.all_reduce_start(x, comm, op="sum"))(tree["f"])
        results = []
        for _ in range(3):
            handle, previous = pipelined_step(handle, tree["f"])
            results.append(encode(ready(previous)))
        results.append(encode(ready(pccl.all_reduce_wait(handle))))
        return results
    rec.check("pipelined", pipelined)

    rec.check("compute_runs_while_waiting", lambda: compute_runs_while_waiting(ctx, tree["f"]))

    def interleaved():
        h1 = pccl.all_reduce_start(tree["f"], comm, op="sum")
        h2 = pccl.all_reduce_start(tree["f"] * 2, comm, op="sum")
        plain = pccl.all_reduce(tree["i"], comm, op="sum")  # runs after both starts
        second, first = pccl.all_reduce_wait(h2), pccl.all_reduce_wait(h1)  # any wait order
        return {"first": encode(ready(first)), "second": encode(ready(second)),
                "plain": encode(ready(plain))}
    rec.check("interleaved", interleaved)

    def guard():
        h = pccl.all_reduce_start(tree["f"], comm)
        try:
            comm.update_topology()
            outcome = "no error"
        except pccl.PcclError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        pccl.all_reduce_wait(h)
        return outcome
    rec.check("guard", guard)


def compute_runs_while_waiting(ctx, x, patience: float = 8.0) -> dict:
    """Peer 0 runs start, compute, wait in one jit; the other peers join that
    collective only once peer 0's compute has run (a callback leaves a flag
    file). If XLA held the compute back until the collective ended, the
    others give up waiting for the flag after `patience` seconds and report
    flag_seen False (then join, so nothing hangs)."""
    import jax
    import jax.numpy as jnp
    pccl, comm = ctx.pccl, ctx.comm
    flag = os.path.join(os.path.dirname(ctx.args.out), "compute-ran.flag")

    def leave_flag(value):
        with open(flag, "w") as f:
            f.write(str(float(value)))
        return np.zeros((), np.float32)

    @jax.jit
    def step(x, w):
        h = pccl.all_reduce_start(x, comm, op="sum")
        for _ in range(40):  # a chain of matmuls like a model's forward pass
            w = jnp.tanh(w @ w) * 0.5
        done = jax.pure_callback(leave_flag, jax.ShapeDtypeStruct((), jnp.float32), w.sum())
        return pccl.all_reduce_wait(h), done

    w = jnp.eye(128, dtype=jnp.float32) * 0.5
    compiled = step.lower(x, w).compile() if ctx.index == 0 else None  # no compile in the window
    pccl.all_reduce(np.zeros(1, np.float32), comm)  # everyone here: the window starts now
    if ctx.index != 0:
        deadline = time.monotonic() + patience
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = os.path.exists(flag)
        out = pccl.all_reduce_wait(pccl.all_reduce_start(x, comm, op="sum"))
        return {"flag_seen": seen, "out": encode(ready(out))}
    out, _ = ready(compiled(x, w))
    return {"out": encode(out)}  # peer 0 left the flag: it has nothing to report on it


def scenario_quantized(ctx):
    """Every wire format x float dtype: identical bytes everywhere, bounded error, fewer bytes."""
    import jax
    import jax.numpy as jnp
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        inputs = [quant_input(k, dtype) for k in range(ctx.args.world)]
        exact = np.sum([x.astype(np.float64) for x in inputs], axis=0)
        for q in (None, "minmax_uint8", "zero_point_uint8", "bfloat16"):
            f = jax.jit(lambda v, q=q: pccl.all_reduce(v, comm, op="sum", quantization=q))

            def measure(f=f, x=jnp.asarray(inputs[i])):
                before = comm.stats()["bytes_sent"]
                y = np.asarray(ready(f(x))).astype(np.float64)
                sent = comm.stats()["bytes_sent"] - before
                err = float(np.max(np.abs(y - exact)))
                return {"sha256": cases.sha256(np.asarray(f(x))), "bytes_sent": int(sent),
                        "max_abs_err": err, "rel_err": err / float(np.max(np.abs(exact)))}
            rec.check(f"quantized/{q}/{dtype}", measure)

def scenario_ops(ctx):
    """Every op x dtype, eager and jitted, plus rounding-avg and large arrays."""
    import jax
    import jax.numpy as jnp
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index

    def run(name, op, x, mode):
        if mode == "eager":
            rec.check(name, lambda: encode(ready(pccl.all_reduce(jnp.asarray(x), comm, op=op))))
        else:
            f = jax.jit(lambda v: pccl.all_reduce(v, comm, op=op))
            rec.check(name, lambda: encode(ready(f(jnp.asarray(x)))))

    for mode in cases.MODES:
        for op in cases.OPS:
            for dtype in cases.DTYPES:
                run(f"{mode}/{op}/{dtype}", op, cases.all_inputs(op, dtype)[i], mode)
        for dtype in cases.FLOAT_DTYPES:
            x = cases.all_inputs("avg", dtype, variant="rounding")[i]
            run(f"{mode}/avg_rounding/{dtype}", "avg", x, mode)
        for op, dtype in cases.LARGE_CASES:
            x = cases.all_inputs(op, dtype, shape=cases.LARGE_SHAPE)[i]
            run(f"{mode}/large/{op}/{dtype}", op, x, mode)

    # A plain numpy array (not a jax array) is accepted as input too.
    x = cases.all_inputs("sum", "float32")[i]
    rec.check("eager/numpy_input/sum/float32", lambda: encode(ready(pccl.all_reduce(x, comm, op="sum"))))


def scenario_transforms(ctx):
    """pytrees, return_info, several collectives per jit, scan, vmap, grad."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index

    def tree_report(tree):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        return {"treedef": str(jax.tree_util.tree_structure(tree)),
                "paths": [jax.tree_util.keystr(p) for p, _ in leaves],
                "leaves": [encode(l) for _, l in leaves]}

    # pytrees
    tree = jax.tree_util.tree_map(jnp.asarray, cases.pytree_input(i))
    rec.check("pytree/input", lambda: tree_report(tree))
    rec.check("pytree/eager/sum", lambda: tree_report(ready(pccl.all_reduce(tree, comm, op="sum"))))
    f_tree_sum = jax.jit(lambda t: pccl.all_reduce(t, comm, op="sum"))
    rec.check("pytree/jit/sum", lambda: tree_report(ready(f_tree_sum(tree))))
    f_tree_max = jax.jit(lambda t: pccl.all_reduce(t, comm, op="max"))
    rec.check("pytree/jit/max", lambda: tree_report(ready(f_tree_max(tree))))

    # return_info
    x_info = jnp.asarray(cases.small_ints("info", i, (6,), "float32"))

    def info_report(out):
        y, info = out  # info may not be a registered pytree: read its field directly
        ws = np.asarray(jax.block_until_ready(info.world_size))
        return {"y": encode(ready(y)), "world_size": int(ws), "ws_dtype": str(ws.dtype),
                "ws_shape": list(ws.shape)}

    rec.check("return_info/eager", lambda: info_report(
        pccl.all_reduce(x_info, comm, op="avg", return_info=True)))
    f_info = jax.jit(lambda v: pccl.all_reduce(v, comm, op="avg", return_info=True))
    rec.check("return_info/jit", lambda: info_report(f_info(x_info)))

    # several collectives in one jitted function, independent and chained
    ins = {k: jnp.asarray(cases.small_ints(("two", k), i, shape, dtype, -2 if op == "prod" else -9,
                                           2 if op == "prod" else 9))
           for k, (op, shape, dtype) in cases.TWO_OPS_SPECS.items()}

    @jax.jit
    def several(d):
        return {k: pccl.all_reduce(d[k], comm, op=cases.TWO_OPS_SPECS[k][0]) for k in ("a", "b", "c")}

    rec.check("ordering/independent", lambda: {k: encode(v) for k, v in ready(several(ins)).items()})

    a_chain = jnp.asarray(cases.small_ints("chain.a", i, (7,), "float32"))
    b_chain = jnp.asarray(cases.small_ints("chain.b", i, (7,), "float32"))

    @jax.jit
    def chained(a, b):
        s = pccl.all_reduce(a, comm, op="sum")
        return s, pccl.all_reduce(s + b, comm, op="max")

    rec.check("ordering/chained", lambda: [encode(v) for v in ready(chained(a_chain, b_chain))])

    # lax.scan with an all_reduce in the body
    xs = jnp.asarray(cases.small_ints("scan", i, (cases.SCAN_STEPS, cases.SCAN_WIDTH), "float32"))

    def scan_fn(xs):
        def body(carry, x_t):
            y = pccl.all_reduce(carry + x_t, comm, op="sum")
            return y, y
        return lax.scan(body, jnp.zeros((cases.SCAN_WIDTH,), jnp.float32), xs)

    rec.check("scan/eager", lambda: [encode(v) for v in ready(scan_fn(xs))])
    rec.check("scan/jit", lambda: [encode(v) for v in ready(jax.jit(scan_fn)(xs))])

    # vmap over a batch dimension
    xb = jnp.asarray(cases.small_ints("vmap", i, (cases.VMAP_BATCH, cases.VMAP_WIDTH), "int32"))
    v_sum = jax.vmap(lambda v: pccl.all_reduce(v, comm, op="sum"))
    rec.check("vmap/eager/sum", lambda: encode(ready(v_sum(xb))))
    rec.check("vmap/jit/sum", lambda: encode(ready(jax.jit(v_sum)(xb))))
    v_max_axis1 = jax.jit(jax.vmap(lambda v: pccl.all_reduce(v, comm, op="max"), in_axes=1))
    rec.check("vmap/jit/max_in_axes1", lambda: encode(ready(v_max_axis1(xb))))

    # grad through sum and avg
    xg = jnp.asarray(cases.small_ints("grad.x", i, (cases.GRAD_SIZE,), "float32"))
    wg = jnp.asarray(cases.small_ints("grad.w", i, (cases.GRAD_SIZE,), "float32"))
    for op in ("sum", "avg"):
        def loss(x, op=op):
            return jnp.sum(pccl.all_reduce(x, comm, op=op) * wg)
        vg = jax.value_and_grad(loss)
        rec.check(f"grad/eager/{op}", lambda vg=vg: [encode(v) for v in ready(vg(xg))])
        rec.check(f"grad/jit/{op}", lambda vg=vg: [encode(v) for v in ready(jax.jit(vg)(xg))])

    # donate=True: the result takes over the input's buffer (in-place engine
    # path), on the inline (small) and the ring (large) path.
    for size in cases.DONATE_SIZES:
        def donated_input(size=size):
            return jnp.asarray(cases.small_ints(("donate", size), i, (size,), "float32"))

        def eager_donated(size=size):
            x = donated_input()
            y = ready(pccl.all_reduce(x, comm, op="sum", donate=True))
            return {"y": encode(y), "input_deleted": x.is_deleted()}

        def jit_donated_argument(size=size):
            x = donated_input()
            f = jax.jit(lambda v: pccl.all_reduce(v, comm, op="sum", donate=True), donate_argnums=0)
            y = ready(f(x))
            return {"y": encode(y), "input_deleted": x.is_deleted()}

        def jit_intermediate(size=size):
            f = jax.jit(lambda v: pccl.all_reduce(v * 2, comm, op="avg", donate=True))
            return encode(ready(f(donated_input())))

        def jit_input_kept(size=size):
            x = donated_input()
            f = jax.jit(lambda v: (pccl.all_reduce(v, comm, op="max", donate=True), v + 0))
            y, again = ready(f(x))
            return {"y": encode(y), "input_after": encode(again)}

        rec.check(f"donate/{size}/eager", eager_donated)
        rec.check(f"donate/{size}/jit_argument", jit_donated_argument)
        rec.check(f"donate/{size}/jit_intermediate", jit_intermediate)
        rec.check(f"donate/{size}/jit_input_kept", jit_input_kept)


MISMATCH_LEN = 16


def scenario_mismatch(ctx):
    """Peer index 2 disagrees with the others on shape, dtype or op.

    After each mismatch every peer calls update_topology() and runs a correct
    sum ("recover/<case>") to show the communicator is still usable and the
    next case starts from a clean state.
    """
    import jax
    import jax.numpy as jnp
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    odd = i == 2
    base = cases.small_ints("mismatch", i, (MISMATCH_LEN,), "float32")

    def case_args(kind):
        if kind == "shape":
            return (np.append(base, 1.0).astype(np.float32) if odd else base), "sum"
        if kind == "dtype":  # same itemsize: only the dtype tells them apart
            return (base.astype(np.int32) if odd else base), "sum"
        if kind == "op":
            return base, ("max" if odd else "sum")
        if kind == "shape_same_count":  # (4, 4) vs (2, 8): equal element count
            return base.reshape((2, 8) if odd else (4, 4)), "sum"
        raise ValueError(kind)

    for mode in cases.MODES:
        for kind in ("shape", "dtype", "op"):
            x, op = case_args(kind)
            if mode == "eager":
                rec.check(f"{mode}/{kind}", lambda: encode(ready(pccl.all_reduce(jnp.asarray(x), comm, op=op))))
            else:
                f = jax.jit(lambda v, op=op: pccl.all_reduce(v, comm, op=op))
                rec.check(f"{mode}/{kind}", lambda: encode(ready(f(jnp.asarray(x)))))
            recover(ctx, f"{mode}/{kind}")

    x, op = case_args("shape_same_count")
    rec.check("eager/shape_same_count", lambda: encode(ready(pccl.all_reduce(jnp.asarray(x), comm, op=op))))
    recover(ctx, "eager/shape_same_count")

    # 128 KiB on the odd peer, 64 bytes elsewhere: the odd one takes the ring
    # path, the others attach their input to the header (inline path).
    x = np.zeros(32 << 10, np.float32) if odd else base
    rec.check("eager/shape_across_paths", lambda: encode(ready(pccl.all_reduce(jnp.asarray(x), comm))))
    recover(ctx, "eager/shape_across_paths")


def recover(ctx, name):
    import jax.numpy as jnp
    x = jnp.asarray(cases.small_ints(("recover", name), ctx.index, (MISMATCH_LEN,), "float32"))

    def run():
        ctx.comm.update_topology()
        return encode(ready(ctx.pccl.all_reduce(x, ctx.comm, op="sum")))

    ctx.rec.check(f"recover/{name}", run)


def bad_arg_calls():
    """(check name, argument that is wrong, input dtype or "tree", all_reduce kwargs)."""
    return [
        ("op_median", "op", "float32", {"op": "median"}),
        ("dtype_complex64", "dtype", "complex64", {"op": "sum"}),
        ("dtype_bool", "dtype", "bool", {"op": "sum"}),
        ("quantization_of_int", "quantization", "int32", {"op": "sum", "quantization": "minmax_uint8"}),
        ("pytree_with_one_bad_leaf", "dtype", "tree", {"op": "sum"}),
    ]


def scenario_bad_args(ctx):
    """Only peer 0 makes invalid calls; then everyone runs a correct sum.

    If an invalid call had sent anything to the ring, the following sum would
    be out of step with the other peers (mismatch, wrong result or timeout).
    """
    import jax
    import jax.numpy as jnp
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    if i == 0:
        for name, _kind, dtype, kwargs in bad_arg_calls():
            if dtype == "tree":
                x = {"ok": jnp.ones((3,), jnp.float32), "bad": jnp.ones((3,), jnp.complex64)}
            else:
                x = jnp.ones((4,), dtype)
            rec.check(f"eager/{name}", lambda: encode(ready(pccl.all_reduce(x, comm, **kwargs))))
            f = jax.jit(lambda v, kw=kwargs: pccl.all_reduce(v, comm, **kw))
            rec.check(f"jit/{name}", lambda: encode(ready(f(x))))
    x = jnp.asarray(cases.small_ints("after_bad", i, (9,), "float32"))
    rec.check("after/sum", lambda: encode(ready(pccl.all_reduce(x, comm, op="sum"))))


CONNECT_TIMEOUT = 2.0


def scenario_unreachable(ctx):
    """No run to join: --master is a closed port, --aux a listener that never answers."""
    pccl, rec = ctx.pccl, ctx.rec

    def attempt(address):
        def run():
            comm = pccl.Communicator(address, timeout=CONNECT_TIMEOUT)
            try:
                comm.connect()
            finally:
                comm.close()
            return "connected"
        return run

    rec.check("closed_port", attempt(ctx.args.master))
    if ctx.args.aux:
        rec.check("silent_master", attempt(ctx.args.aux))


SCENARIOS = {
    # name: (function, joins the run?)
    "ops": (scenario_ops, True),
    "transforms": (scenario_transforms, True),
    "mismatch": (scenario_mismatch, True),
    "bad_args": (scenario_bad_args, True),
    "unreachable": (scenario_unreachable, False),
    "join_only": (scenario_join_only, True),
    "effect_order": (scenario_effect_order, True),
    "quantized": (scenario_quantized, True),
    "async": (scenario_async, True),
}
SCENARIOS.update(state_scenarios.SCENARIOS)
SCENARIOS.update(striping_scenarios.SCENARIOS)
SCENARIOS.update(concurrency_scenarios.SCENARIOS)
SCENARIOS.update(continuation_scenarios.SCENARIOS)
SCENARIOS.update(handler_edge_scenarios.SCENARIOS)
SCENARIOS.update(membership_scenarios.SCENARIOS)
SCENARIOS.update(topology_scenarios.SCENARIOS)
SCENARIOS.update(kinds_scenarios.SCENARIOS)


class Ctx:
    def __init__(self, args, pccl, comm, rec):
        self.args, self.pccl, self.comm, self.rec, self.index = args, pccl, comm, rec, args.index


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--aux", default=None)
    p.add_argument("--join-mode", choices=("step", "topology"), default="topology")
    p.add_argument("--join-timeout", type=float, default=60.0)
    args = p.parse_args(argv)

    rec = Recorder(args.out, args.index)
    comm = None
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax_pccl as pccl
        native_builds.check_sanitizer(pccl._pccl)  # a sanitized run really is one

        fn, joins = SCENARIOS[args.scenario]
        if joins:
            t0 = time.monotonic()
            comm = join(pccl, args)
            rec.data["meta"] = {"rank": int(comm.rank), "world_size": int(comm.world_size),
                                "join_s": time.monotonic() - t0}
            rec.flush()
        ctx = Ctx(args, pccl, comm, rec)
        fn(ctx)
        if ctx.comm is not None:
            ctx.comm.close()
        rec.data["done"] = True
        rec.flush()
        return 0
    except BaseException as exc:
        rec.data["fatal"] = dict(describe_error(exc), traceback=traceback.format_exc()[-4000:])
        rec.flush()
        traceback.print_exc()
        return 3


if __name__ == "__main__":
    sys.exit(main())
