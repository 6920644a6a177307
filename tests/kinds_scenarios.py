"""Peer-side checks of all_gather, broadcast and reduce_scatter (run by
tests/peer_scenarios.py; one scenario per op, its test file beside it:
tests/test_all_gather.py, test_broadcast.py, test_reduce_scatter.py).

Inputs come from tests/cases.py by launch index; the test process rebuilds
every peer's input and computes the expected result with numpy, using the
ranks the peers report (rows of an all_gather, a broadcast's root and a
reduce_scatter's slice are by rank).
"""
from __future__ import annotations

import numpy as np

import cases

# reduce_scatter needs axis 0 divisible by the group size (cases.N_PEERS = 3).
SCATTER_SHAPE = (6, 7)
LARGE = (1_000_002,)
OPS_FOR = {"float": ("sum", "avg", "max"), "int": ("sum", "min", "prod")}


def _enc():
    from peer_scenarios import encode, ready
    return encode, ready


def _modes(fn):
    """fn eagerly and under jit, by the names of the checks' `<mode>/...`."""
    import jax
    return {"eager": fn, "jit": jax.jit(fn)}


def scenario_all_gather(ctx):
    import jax
    import jax.numpy as jnp
    encode, ready = _enc()
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    rec.data["meta"]["ranks"] = [int(comm.rank)]
    gather = lambda v: pccl.all_gather(v, comm)  # noqa: E731
    for mode, f in _modes(gather).items():
        for dtype in cases.DTYPES:
            x = jnp.asarray(cases.all_inputs("sum", dtype)[i])
            rec.check(f"{mode}/{dtype}", lambda: encode(ready(f(x))))
        big = jnp.asarray(cases.all_inputs("sum", "float32", shape=LARGE)[i])
        rec.check(f"{mode}/large", lambda: encode(ready(f(big))))
        scalar = jnp.asarray(cases.all_inputs("sum", "int32", shape=())[i])
        rec.check(f"{mode}/scalar", lambda: encode(ready(f(scalar))))
    tree = {"a": jnp.asarray(cases.all_inputs("sum", "float32", shape=(3,))[i]),
            "b": [jnp.asarray(cases.all_inputs("sum", "int16", shape=(2, 2))[i])]}
    rec.check("jit/pytree", lambda: {k: encode(v) for k, v in
                                     zip(("a", "b"), jax.tree_util.tree_leaves(
                                         ready(jax.jit(gather)(tree))))})
    batch = jnp.asarray(cases.all_inputs("sum", "float32", shape=(4, 5))[i])
    rec.check("jit/vmap", lambda: encode(ready(jax.jit(jax.vmap(gather))(batch))))
    # Every peer weighs row r by r + 1: d(sum over peers)/dx_r = N (r + 1).
    weights = jnp.arange(1, cases.N_PEERS + 1, dtype=jnp.float32)[:, None]
    loss = lambda v: jnp.sum(pccl.all_gather(v, comm) * weights)  # noqa: E731
    ones = jnp.ones(4, jnp.float32)
    rec.check("jit/grad", lambda: encode(ready(jax.jit(jax.grad(loss))(ones))))
    # In a scan: 3 steps of carry <- sum of every peer's carry (1 + 2 + 3 = 6, 18, 54).
    def gather_steps(c):
        return jax.lax.scan(lambda c, _: (pccl.all_gather(c, comm).sum(axis=0), None), c,
                            None, length=3)[0]
    start = jnp.full(2, float(i + 1), jnp.float32)
    rec.check("jit/scan", lambda: encode(ready(jax.jit(gather_steps)(start))))
    # Traced for a group of 2 while it has 3: every peer refuses the call.
    stale = jax.jit(lambda v: pccl.all_gather(v, comm, world_size=2))
    rec.check("jit/world_mismatch", lambda: encode(ready(stale(ones))))
    rec.check("eager/after_mismatch", lambda: encode(ready(gather(ones * (i + 1)))))


def scenario_broadcast(ctx):
    import jax
    import jax.numpy as jnp
    encode, ready = _enc()
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    rec.data["meta"]["ranks"] = [int(comm.rank)]
    for mode in cases.MODES:
        for dtype in cases.DTYPES:
            x = jnp.asarray(cases.all_inputs("sum", dtype)[i])
            f = lambda v: pccl.broadcast(v, comm, root=1)  # noqa: E731
            f = jax.jit(f) if mode == "jit" else f
            rec.check(f"{mode}/{dtype}", lambda: encode(ready(f(x))))
    x = jnp.asarray(cases.all_inputs("sum", "float32")[i])
    for root in range(cases.N_PEERS):
        f = jax.jit(lambda v, r=root: pccl.broadcast(v, comm, root=r))
        rec.check(f"jit/root{root}", lambda: encode(ready(f(x))))
    big = jnp.asarray(cases.all_inputs("sum", "float32", shape=LARGE)[i])
    rec.check("jit/large", lambda: encode(ready(jax.jit(lambda v: pccl.broadcast(v, comm, root=2))(big))))
    in_place = jnp.asarray(cases.all_inputs("sum", "int64", shape=LARGE)[i])
    rec.check("eager/large_int64", lambda: encode(ready(pccl.broadcast(in_place, comm, root=0))))
    tree = {"a": jnp.asarray(cases.all_inputs("sum", "bfloat16", shape=(3,))[i]),
            "b": jnp.asarray(cases.all_inputs("sum", "uint8", shape=())[i])}
    rec.check("jit/pytree", lambda: [encode(v) for v in jax.tree_util.tree_leaves(
        ready(jax.jit(lambda t: pccl.broadcast(t, comm, root=2))(tree)))])
    batch = jnp.asarray(cases.all_inputs("sum", "float32", shape=(4, 5))[i])
    rec.check("jit/vmap", lambda: encode(ready(jax.jit(jax.vmap(
        lambda v: pccl.broadcast(v, comm, root=0)))(batch))))
    # d(sum over peers of sum(2 * broadcast(x)))/dx: 2 N on the root, 0 elsewhere.
    loss = lambda v: jnp.sum(2.0 * pccl.broadcast(v, comm, root=0))  # noqa: E731
    rec.check("jit/grad", lambda: encode(ready(jax.jit(jax.grad(loss))(jnp.ones(4, jnp.float32)))))
    # In a scan: carry <- broadcast(carry + index + 1) from rank 0, 3 times.
    def bcast_steps(c):
        return jax.lax.scan(lambda c, _: (pccl.broadcast(c + (i + 1), comm, root=0), None), c,
                            None, length=3)[0]
    rec.check("jit/scan", lambda: encode(ready(jax.jit(bcast_steps)(jnp.zeros(2, jnp.float32)))))
    # A root outside the group: every peer refuses it, and the ring goes on.
    rec.check("eager/bad_root", lambda: encode(ready(pccl.broadcast(jnp.ones(3), comm, root=7))))
    rec.check("eager/after_bad_root",
              lambda: encode(ready(pccl.broadcast(jnp.full(3, float(i)), comm, root=0))))


def scenario_reduce_scatter(ctx):
    import jax
    import jax.numpy as jnp
    encode, ready = _enc()
    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    rec.data["meta"]["ranks"] = [int(comm.rank)]
    for mode in cases.MODES:
        for dtype in cases.DTYPES:
            for op in OPS_FOR["float" if cases.is_float(dtype) else "int"]:
                x = jnp.asarray(cases.all_inputs(op, dtype, shape=SCATTER_SHAPE)[i])
                f = lambda v, o=op: pccl.reduce_scatter(v, comm, op=o)  # noqa: E731
                f = jax.jit(f) if mode == "jit" else f
                rec.check(f"{mode}/{op}/{dtype}", lambda: encode(ready(f(x))))
    big = jnp.asarray(cases.all_inputs("sum", "float32", shape=LARGE)[i])
    rec.check("jit/large", lambda: encode(ready(jax.jit(
        lambda v: pccl.reduce_scatter(v, comm, op="sum"))(big))))
    tree = {"a": jnp.asarray(cases.all_inputs("sum", "float32", shape=(3, 2))[i]),
            "b": jnp.asarray(cases.all_inputs("sum", "int32", shape=(9,))[i])}
    rec.check("jit/pytree", lambda: [encode(v) for v in jax.tree_util.tree_leaves(
        ready(jax.jit(lambda t: pccl.reduce_scatter(t, comm))(tree)))])
    batch = jnp.asarray(cases.all_inputs("sum", "int32", shape=(4, 6))[i])
    rec.check("jit/vmap", lambda: encode(ready(jax.jit(jax.vmap(
        lambda v: pccl.reduce_scatter(v, comm)))(batch))))
    for op in ("sum", "avg"):
        loss = lambda v, o=op: jnp.sum(3.0 * pccl.reduce_scatter(v, comm, op=o))  # noqa: E731
        rec.check(f"jit/grad/{op}",
                  lambda: encode(ready(jax.jit(jax.grad(loss))(jnp.ones(6, jnp.float32)))))
    # In a scan: carry (6,) <- its reduce_scatter (2,) tiled 3 times: 3, 9, 27.
    def scatter_steps(c):
        return jax.lax.scan(lambda c, _: (jnp.tile(pccl.reduce_scatter(c, comm), 3), None), c,
                            None, length=3)[0]
    rec.check("jit/scan", lambda: encode(ready(jax.jit(scatter_steps)(jnp.ones(6, jnp.float32)))))
    stale = jax.jit(lambda v: pccl.reduce_scatter(v, comm, world_size=2))
    rec.check("jit/world_mismatch", lambda: encode(ready(stale(jnp.ones(6)))))
    rec.check("eager/not_divisible", lambda: encode(ready(pccl.reduce_scatter(jnp.ones(4), comm))))
    rec.check("eager/after_errors",
              lambda: encode(ready(pccl.reduce_scatter(jnp.full(3, float(i)), comm))))


SCENARIOS = {
    "all_gather": (scenario_all_gather, True),
    "broadcast": (scenario_broadcast, True),
    "reduce_scatter": (scenario_reduce_scatter, True),
}
