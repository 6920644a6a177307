"""reduce_scatter: rank r gets slice r (along axis 0) of the reduction of
every peer's ``x``.

- ``x.shape[0]`` must be divisible by ``world_size`` (fixed at trace time,
  default: the group's size then); the result has shape
  ``(x.shape[0] // world_size, *x.shape[1:])``. A group of another size at
  run time fails the call on every peer with CollectiveMismatchError.
- vmap: the batch axis moves to position 1, so that axis 0 is still the one
  scattered; the result's batch axis is 1.
- grad (sum, avg): the transpose is all_gather of the cotangent, rows in
  rank order (divided by the world size for avg).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..validation import REDUCE_OPS, check_communicator, check_dtypes, leaves_of, op_code
from . import collective
from . import jax_internals as jx


def _out_aval(x, *, comm, op, world):
    del comm, op
    return jax.core.ShapedArray((x.shape[0] // world, *x.shape[1:]), x.dtype)


reduce_scatter_p = collective.primitive("pccl_reduce_scatter", _out_aval)


def _lowering(ctx: jx.LoweringRuleContext, *leaves, comm, op, world):
    return collective.lower(ctx, leaves, comm=comm, kind="reduce_scatter", op=op, world=world)


collective.register_lowering(reduce_scatter_p, _lowering, "reduce_scatter")


def _batching_rule(args, dims, *, comm, op, world):
    # Axis 0 is the one scattered: a batch axis goes right after it.
    moved = [a if d is None else jnp.moveaxis(a, d, 1) for a, d in zip(args, dims)]
    outs = reduce_scatter_p.bind(*moved, comm=comm, op=op, world=world)
    return outs, [None if d is None else 1 for d in dims] + [None]


jx.primitive_batchers[reduce_scatter_p] = _batching_rule


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def reduce_scatter_leaves(leaves: tuple, comm: int, op: str, world: int) -> tuple:
    *outs, _facts = reduce_scatter_p.bind(*leaves, comm=comm, op=REDUCE_OPS[op], world=world)
    return tuple(outs)


def _fwd(leaves, comm, op, world):
    return reduce_scatter_leaves(leaves, comm, op, world), None


def _bwd(comm, op, world, _residual, cotangents):
    from .all_gather import all_gather_leaves  # each is the other's transpose

    if op not in ("sum", "avg"):
        raise NotImplementedError("reduce_scatter is differentiable only for op='sum' and op='avg'")
    gathered = all_gather_leaves(tuple(cotangents), comm, world)
    grads = [g.reshape((g.shape[0] * g.shape[1], *g.shape[2:])) for g in gathered]
    if op == "avg":
        grads = [g / world if jnp.issubdtype(g.dtype, jnp.inexact) else g // world for g in grads]
    return (tuple(grads),)


reduce_scatter_leaves.defvjp(_fwd, _bwd)


def reduce_scatter(x, comm, op: str = "sum", *, world_size: int | None = None):
    """Slice ``rank`` (along axis 0) of ``x`` reduced over every peer.

    ``x`` (an array or pytree of arrays) needs ``x.shape[0]`` divisible by
    ``world_size``; each leaf of the result has shape
    ``(x.shape[0] // world_size, *x.shape[1:])``. ``op`` as for all_reduce
    (``avg`` divides by the world size). Works eagerly and under ``jax.jit``
    / ``scan`` / ``vmap`` / ``grad`` (sum, avg). ``world_size`` (default:
    ``comm.group_world_size`` read when the function is traced) is baked into
    the result shape: a group of another size when the call runs raises
    ``CollectiveMismatchError`` on every peer (trace the function again).
    """
    op_code(op)
    handle = check_communicator(comm)
    leaves, treedef = leaves_of(x)
    check_dtypes(leaves, "reduce_scatter")
    world = collective.group_size(comm, world_size)
    for i, leaf in enumerate(leaves):
        if leaf.ndim == 0:
            raise ValueError(f"reduce_scatter splits axis 0: x (leaf {i}) is 0-d")
        if leaf.shape[0] % world:
            raise ValueError(
                f"reduce_scatter needs x.shape[0] divisible by world_size={world}; x (leaf {i}) "
                f"has shape {tuple(leaf.shape)}")
    if not leaves:
        return x
    return collective.apply(lambda ls: reduce_scatter_leaves(ls, handle, op, world), leaves,
                            treedef)
