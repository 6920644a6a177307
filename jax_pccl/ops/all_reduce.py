"""all_reduce: a JAX primitive lowered to the ``jax_pccl_collective`` FFI call.

- One primitive call reduces a whole pytree (variadic operands), returning the
  reduced leaves plus an int32 scalar: the number of peers that took part.
- Ordered effect (see effects.py): collectives run in program order.
- vmap: a batched operand is simply a larger array; reduction is element-wise.
- grad (sum/avg): the cotangent is all-reduced the same way, which is the
  gradient of the sum of all peers' losses (unlike an identity transpose).
- Eager calls run synchronously and raise typed jax_pccl errors.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _native
from ..validation import REDUCE_OPS, prepare_collective
from . import collective
from . import jax_internals as jx
from .effects import COLLECTIVE_EFFECT


class AllReduceInfo(NamedTuple):
    """Facts about one all_reduce call (a pytree, usable under jit).

    Attributes:
        world_size: int32 scalar array: the peers that took part.
    """

    world_size: Any  # int32 scalar array: peers that took part


all_reduce_p = jx.Primitive("pccl_all_reduce")
all_reduce_p.multiple_results = True
all_reduce_p.def_impl(functools.partial(jx.apply_primitive, all_reduce_p))


def _abstract_eval(*leaves, comm, op, quant, donate):
    del comm, op, quant, donate
    outs = [jax.core.ShapedArray(x.shape, x.dtype) for x in leaves]
    outs.append(jax.core.ShapedArray((), jnp.int32))
    return outs, {COLLECTIVE_EFFECT}


all_reduce_p.def_effectful_abstract_eval(_abstract_eval)


def _lowering(ctx: jx.LoweringRuleContext, *leaves, comm, op, quant, donate):
    return collective.lower(ctx, leaves, comm=comm, kind="all_reduce", op=op, quant=quant,
                            donate=donate)


collective.register_lowering(all_reduce_p, _lowering, "all_reduce")


def _batching_rule(args, dims, *, comm, op, quant, donate):
    # Element-wise across peers: the batch axis needs no special treatment.
    outs = all_reduce_p.bind(*args, comm=comm, op=op, quant=quant, donate=donate)
    return outs, [*dims, None]  # world_size is not batched


jx.primitive_batchers[all_reduce_p] = _batching_rule


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _all_reduce_leaves(leaves: tuple, comm: int, op: int, quant: int, donate: bool):
    *outs, world = all_reduce_p.bind(*leaves, comm=comm, op=op, quant=quant, donate=donate)
    return tuple(outs), world


def _fwd(leaves, comm, op, quant, donate):
    return _all_reduce_leaves(leaves, comm, op, quant, donate), None


def _bwd(comm, op, quant, donate, _residual, cotangents):
    ct_leaves, _ct_world = cotangents
    if op not in (REDUCE_OPS["sum"], REDUCE_OPS["avg"]):
        raise NotImplementedError("all_reduce is differentiable only for op='sum' and op='avg'")
    *reduced, _ = all_reduce_p.bind(*ct_leaves, comm=comm, op=op, quant=quant, donate=donate)
    return (tuple(reduced),)


_all_reduce_leaves.defvjp(_fwd, _bwd)


def all_reduce(x, comm, op: str = "sum", *, quantization=None, return_info: bool = False,
               donate: bool = False):
    """Reduces ``x`` (an array or pytree of arrays) over all peers of ``comm``'s group.

    Works eagerly and under ``jax.jit`` / ``scan`` / ``cond`` / ``vmap`` /
    ``grad`` (sum and avg). Every peer receives bit-identical bytes. ``avg``
    divides by the number of peers that took part (integers truncate toward
    zero). ``quantization`` ("minmax_uint8", "zero_point_uint8", "bfloat16")
    compresses floating leaves on the wire; results keep the input dtype and
    stay bit-identical across peers. With ``return_info=True`` returns
    ``(result, AllReduceInfo)``.

    ``donate=True`` lets the result take over ``x``'s buffers instead of new
    ones: eagerly ``x`` is consumed (like ``jax.jit(..., donate_argnums)``);
    under jit XLA reuses the buffer when ``x`` is not needed afterwards (an
    intermediate such as gradients, or a donated argument) and copies it
    first otherwise. For large arrays this saves the memory and the cost of
    faulting in fresh pages.
    """
    leaves, treedef, handle, code, quant = prepare_collective(x, comm, op, quantization)
    if not leaves:
        info = AllReduceInfo(world_size=jnp.asarray(comm.group_world_size, jnp.int32))
        return (x, info) if return_info else x
    _native.ensure_ffi_registered()
    if collective.is_traced(leaves):
        outs, world = _all_reduce_leaves(tuple(leaves), handle, code, quant, donate)
    else:
        outs, world = _run_eagerly(tuple(leaves), handle, code, quant, donate)
    result = jax.tree_util.tree_unflatten(treedef, list(outs))
    return (result, AllReduceInfo(world_size=world)) if return_info else result


def _run_eagerly(leaves, handle, code, quant, donate):
    if donate:
        run = _donating_call(handle, code, quant)
        return collective.translate_errors(lambda: run(leaves))
    return collective.translate_errors(lambda: _all_reduce_leaves(leaves, handle, code, quant, False))


@functools.lru_cache(maxsize=64)
def _donating_call(handle, code, quant):
    """An eager call that consumes its input buffers (one compiled function per setting)."""
    return jax.jit(lambda leaves: _all_reduce_leaves(leaves, handle, code, quant, True),
                   donate_argnums=0)
