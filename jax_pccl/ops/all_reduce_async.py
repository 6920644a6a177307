"""all_reduce_start / all_reduce_wait: overlap communication with compute.

    h = pccl.all_reduce_start(grads, comm, op="avg")   # returns at once
    ...                                               # other work runs meanwhile
    grads = pccl.all_reduce_wait(h)

Both are primitives with the same ordered effect as all_reduce, so starts,
waits and plain all_reduces keep program order on every peer. start copies
its inputs and hands them to the engine's collective threads (up to 4 run at
once, matched across peers by sequence number); the handle is a
pytree (64-bit tickets as int32 pairs, then the world size, + static
shapes/dtypes) usable inside and outside jit, with or without
jax_enable_x64 (ffi/xla/ticket_words.h).

all_reduce_wait lowers to two custom calls: a synchronous one that hands the
tickets to the engine, then the asynchronous wait, whose only buffers are its
results. XLA's CPU runtime keeps any later kernel that reuses the bytes of an
unfinished asynchronous call's operands or results from starting; a wait that
read its tickets itself made compute placed after it in the schedule (and
sharing those bytes) wait for the whole collective (ffi/xla/bound_waits.h).
Every started collective must be waited for before update_topology().

On a CUDA GPU (a build with -DJAX_PCCL_CUDA=ON) the same calls run on the
device's stream: start copies the leaves to page-locked host memory and
starts each leaf's collective as soon as its own copy is over; the wait is
synchronous there and copies each result back as soon as it is in. Kernels
queued between start and wait run on the GPU while the ring runs.
Not differentiable and not batchable (use all_reduce for that).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _native
from ..validation import prepare_collective
from .all_reduce import AllReduceInfo
from .collective import register_lowering, translate_errors
from . import jax_internals as jx
from .effects import COLLECTIVE_EFFECT
from .lowering import chained_ffi_call, effectful_ffi_call, int_attr

START_TARGET = "jax_pccl_all_reduce_start"
WAIT_BIND_TARGET = "jax_pccl_all_reduce_wait_bind"
WAIT_TARGET = "jax_pccl_all_reduce_wait"

# Each 64-bit ticket rides in two int32 words (kTicketWords in
# ffi/xla/ticket_words.h): wrap-safe without jax_enable_x64.
TICKET_WORDS = 2

# Pairs each lowered wait's bind call with its wait call (the engine keys the
# handed-over tickets by communicator and site).
_wait_sites = itertools.count(1)


@jax.tree_util.register_pytree_node_class
class AllReduceHandle:
    """What all_reduce_start returns: pass it to all_reduce_wait exactly once."""

    def __init__(self, tickets, comm: int, treedef, avals: tuple):
        self.tickets = tickets  # int32[2 * num_leaves + 1]: ticket word pairs, then the world size
        self.comm = comm
        self.treedef = treedef
        self.avals = avals  # ((shape, dtype name), ...) per leaf

    def tree_flatten(self):
        return (self.tickets,), (self.comm, self.treedef, self.avals)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)


start_p = jx.Primitive("pccl_all_reduce_start")
start_p.def_impl(functools.partial(jx.apply_primitive, start_p))
wait_p = jx.Primitive("pccl_all_reduce_wait")
wait_p.multiple_results = True
wait_p.def_impl(functools.partial(jx.apply_primitive, wait_p))


def _start_abstract(*leaves, comm, op, quant):
    del comm, op, quant
    shape = (TICKET_WORDS * len(leaves) + 1,)
    return jax.core.ShapedArray(shape, jnp.int32), {COLLECTIVE_EFFECT}


def _wait_abstract(tickets, *, comm, avals):
    del tickets, comm
    return [jax.core.ShapedArray(shape, np.dtype(dtype)) for shape, dtype in avals], {COLLECTIVE_EFFECT}


start_p.def_effectful_abstract_eval(_start_abstract)
wait_p.def_effectful_abstract_eval(_wait_abstract)


def _start_lowering(ctx, *leaves, comm, op, quant):
    return effectful_ffi_call(ctx, START_TARGET, leaves, {
        "comm": int_attr(64, comm), "op": int_attr(32, op), "quant": int_attr(32, quant)})


def _wait_lowering(ctx, tickets, *, comm, avals):
    del avals
    attributes = {"comm": int_attr(64, comm), "site": int_attr(64, next(_wait_sites))}
    token = ctx.tokens_in.get(COLLECTIVE_EFFECT)
    token, _ = chained_ffi_call(ctx, WAIT_BIND_TARGET, token, [tickets], ctx.avals_in, [], attributes)
    token, results = chained_ffi_call(ctx, WAIT_TARGET, token, [], [], ctx.avals_out, attributes)
    ctx.set_tokens_out(ctx.tokens_in.update_tokens(jx.TokenSet({COLLECTIVE_EFFECT: token})))
    return results


# The same calls on CUDA where this build has the CUDA handlers
# (ffi/xla/cuda/all_reduce_async_cuda_handler.h: there the wait is synchronous).
register_lowering(start_p, _start_lowering, "all_reduce_start")
register_lowering(wait_p, _wait_lowering, "all_reduce_wait")


def all_reduce_start(x, comm, op: str = "sum", *, quantization=None) -> AllReduceHandle:
    """Starts reducing ``x`` (array or pytree) over ``comm``'s group; returns
    a handle for :func:`all_reduce_wait`. Same arguments as all_reduce."""
    leaves, treedef, handle, code, quant = prepare_collective(x, comm, op, quantization)
    if not leaves:
        raise ValueError("all_reduce_start needs at least one array")
    _native.ensure_ffi_registered()
    avals = tuple((tuple(v.shape), np.dtype(v.dtype).name) for v in leaves)
    traced = any(isinstance(v, jax.core.Tracer) for v in leaves)
    bind = functools.partial(start_p.bind, *leaves, comm=handle, op=code, quant=quant)
    tickets = bind() if traced else translate_errors(bind)
    return AllReduceHandle(tickets, handle, treedef, avals)


def all_reduce_wait(handle: AllReduceHandle, *, return_info: bool = False) -> Any:
    """Waits for a started all_reduce; returns its result (same structure as
    the input of all_reduce_start), plus AllReduceInfo with return_info=True."""
    if not isinstance(handle, AllReduceHandle):
        raise TypeError(f"all_reduce_wait needs the handle all_reduce_start returned, "
                        f"got {type(handle).__name__}")
    bind = functools.partial(wait_p.bind, handle.tickets, comm=handle.comm, avals=handle.avals)
    traced = isinstance(handle.tickets, jax.core.Tracer)
    outs = bind() if traced else translate_errors(bind)
    result = jax.tree_util.tree_unflatten(handle.treedef, outs)
    if not return_info:
        return result
    return result, AllReduceInfo(world_size=handle.tickets[TICKET_WORDS * len(outs)])
