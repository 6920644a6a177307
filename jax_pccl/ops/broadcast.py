"""broadcast: the root's ``x`` on every peer.

- ``root`` is a rank of the group (checked when the call runs, on every
  peer alike). Every peer passes an ``x`` of the same shape and dtype; only
  the root's values are read.
- vmap: element-wise, the batch axis stays where it is.
- grad: the cotangents of every peer are summed onto the root's input; the
  other peers' inputs get zeros (their values were never used).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..validation import REDUCE_OPS, check_communicator, check_dtypes, leaves_of
from . import collective
from . import jax_internals as jx


def _out_aval(x, *, comm, root):
    del comm, root
    return jax.core.ShapedArray(x.shape, x.dtype)


broadcast_p = collective.primitive("pccl_broadcast", _out_aval)


def _lowering(ctx: jx.LoweringRuleContext, *leaves, comm, root):
    return collective.lower(ctx, leaves, comm=comm, kind="broadcast", root=root)


collective.register_lowering(broadcast_p, _lowering, "broadcast")


def _batching_rule(args, dims, *, comm, root):
    outs = broadcast_p.bind(*args, comm=comm, root=root)
    return outs, [*dims, None]


jx.primitive_batchers[broadcast_p] = _batching_rule


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def broadcast_leaves(leaves: tuple, comm: int, root: int) -> tuple:
    *outs, _facts = broadcast_p.bind(*leaves, comm=comm, root=root)
    return tuple(outs)


def _fwd(leaves, comm, root):
    *outs, facts = broadcast_p.bind(*leaves, comm=comm, root=root)
    return tuple(outs), facts[1]  # this peer's rank when the broadcast ran


def _bwd(comm, root, rank, cotangents):
    from .all_reduce import all_reduce_p

    *summed, _world = all_reduce_p.bind(*cotangents, comm=comm, op=REDUCE_OPS["sum"], quant=0,
                                        donate=False)
    return (tuple(jnp.where(rank == root, s, jnp.zeros_like(s)) for s in summed),)


broadcast_leaves.defvjp(_fwd, _bwd)


def broadcast(x, comm, root: int = 0):
    """The root's ``x`` (an array or pytree of arrays) on every peer.

    ``root`` is a rank of the group (``comm.rank`` on that peer). Every peer
    passes an ``x`` of the same structure, shapes and dtypes (a mismatch
    raises ``CollectiveMismatchError`` everywhere); the result is the root's
    bytes, identical on every peer. Works eagerly and under ``jax.jit`` /
    ``scan`` / ``vmap`` / ``grad`` (the cotangents are summed onto the root).
    """
    if not isinstance(root, int) or isinstance(root, bool) or root < 0:
        raise ValueError(f"root must be a rank (an int >= 0); got {root!r}")
    handle = check_communicator(comm)
    leaves, treedef = leaves_of(x)
    check_dtypes(leaves, "broadcast")
    if not leaves:
        return x
    return collective.apply(lambda ls: broadcast_leaves(ls, handle, root), leaves, treedef)
