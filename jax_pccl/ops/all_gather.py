"""all_gather: every peer's ``x``, stacked in rank order, on every peer.

- Result shape ``(world_size, *x.shape)``; ``world_size`` is fixed at trace
  time (default: the group's size then). A group of another size at run
  time fails the call on every peer with CollectiveMismatchError.
- vmap: the batch axis of a leaf moves one place right (the world axis
  comes first).
- grad: the transpose is reduce_scatter(sum) of the cotangent: rank r's
  input receives the sum over peers of their cotangents of row r.
"""

from __future__ import annotations

import functools

import jax

from ..validation import check_communicator, check_dtypes, leaves_of
from . import collective
from . import jax_internals as jx
from .reduce_scatter import reduce_scatter_leaves


def _out_aval(x, *, comm, world):
    del comm
    return jax.core.ShapedArray((world, *x.shape), x.dtype)


all_gather_p = collective.primitive("pccl_all_gather", _out_aval)


def _lowering(ctx: jx.LoweringRuleContext, *leaves, comm, world):
    return collective.lower(ctx, leaves, comm=comm, kind="all_gather", world=world)


collective.register_lowering(all_gather_p, _lowering, "all_gather")


def _batching_rule(args, dims, *, comm, world):
    outs = all_gather_p.bind(*args, comm=comm, world=world)
    return outs, [None if d is None else d + 1 for d in dims] + [None]


jx.primitive_batchers[all_gather_p] = _batching_rule


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def all_gather_leaves(leaves: tuple, comm: int, world: int) -> tuple:
    *outs, _facts = all_gather_p.bind(*leaves, comm=comm, world=world)
    return tuple(outs)


def _fwd(leaves, comm, world):
    return all_gather_leaves(leaves, comm, world), None


def _bwd(comm, world, _residual, cotangents):
    # Row r of every peer's result is rank r's input: its cotangent is the
    # sum of row r over peers, which reduce_scatter delivers to rank r.
    summed = reduce_scatter_leaves(tuple(cotangents), comm, "sum", world)
    return (tuple(s.reshape(s.shape[1:]) for s in summed),)


all_gather_leaves.defvjp(_fwd, _bwd)


def all_gather(x, comm, *, world_size: int | None = None):
    """Every peer's ``x`` (an array or pytree of arrays), stacked in rank order.

    Each leaf of the result has shape ``(world_size, *leaf.shape)``, identical
    bytes on every peer. Works eagerly and under ``jax.jit`` / ``scan`` /
    ``vmap`` / ``grad``. ``world_size`` (default: ``comm.group_world_size``
    read when the function is traced) is baked into the result shape: if the
    group has another size when the call runs, it raises
    ``CollectiveMismatchError`` on every peer (trace the function again).
    """
    handle = check_communicator(comm)
    leaves, treedef = leaves_of(x)
    check_dtypes(leaves, "all_gather")
    world = collective.group_size(comm, world_size)
    if not leaves:
        return x
    return collective.apply(lambda ls: all_gather_leaves(ls, handle, world), leaves, treedef)
