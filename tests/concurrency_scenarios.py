"""Concurrency scenarios run inside each peer process (see peer_scenarios.py).

Many all-reduces in flight at once: the leaves of one pytree (the XLA handler
starts them all together), and many all_reduce_start handles outstanding at
once, inside and outside jit. Sizes mix every path: inline-small leaves,
ring leaves on the small slots, and striped ones on the bulk slot. The test
process rebuilds the inputs from tests/cases.py and checks exactness.
"""
from __future__ import annotations

import cases

# (shape, dtype) of every leaf: 4 KiB and smaller (inline), 100 KiB (ring on a
# small slot), 8 MiB (striped, bulk slot), in an interleaved order.
LEAVES = tuple(
    ((2 << 20,), "float32") if j % 16 == 5 else
    ((25_600,), "float32") if j % 5 == 2 else
    ((1024,), "int32") if j % 3 == 0 else
    ((32, 32), "float32")
    for j in range(32)
)


def leaf_inputs(index: int) -> list:
    return [cases.small_ints(("concurrent", j), index, shape, dtype)
            for j, (shape, dtype) in enumerate(LEAVES)]


def scenario_concurrent(ctx):
    import jax
    import jax.numpy as jnp
    from peer_scenarios import encode, ready

    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    leaves = [jnp.asarray(x) for x in leaf_inputs(i)]
    enc = lambda outs: [encode(x) for x in ready(outs)]  # noqa: E731

    f = jax.jit(lambda t: pccl.all_reduce(t, comm, op="sum"))
    rec.check("stats_before", lambda: {k: int(v) for k, v in comm.stats().items()})
    rec.check("jit/pytree", lambda: enc(f(leaves)))
    rec.check("eager/pytree", lambda: enc(pccl.all_reduce(leaves, comm, op="sum")))

    def started_eagerly():
        handles = [pccl.all_reduce_start(x, comm, op="sum") for x in leaves]
        return enc([pccl.all_reduce_wait(h) for h in reversed(handles)][::-1])
    rec.check("eager/start_each", started_eagerly)

    @jax.jit
    def started_in_jit(t):
        handles = [pccl.all_reduce_start(x, comm, op="max") for x in t]
        return [pccl.all_reduce_wait(h) for h in handles]
    rec.check("jit/start_each", lambda: enc(started_in_jit(leaves)))
    rec.check("stats", lambda: {k: int(v) for k, v in comm.stats().items()})


SCENARIOS = {"concurrent": (scenario_concurrent, True)}
