"""What every collective op shares: the one FFI call, its lowering on CPU
and CUDA, the eager path and its typed errors.

Every kind (all_reduce, all_gather, broadcast, reduce_scatter) lowers to the
``jax_pccl_collective`` custom call (ffi/xla/collective_handler.h) with its
kind's code among the attributes; an op module holds only its primitive's
rules (shapes, vmap, transpose) and its user function.
"""

from __future__ import annotations

import jax

from .. import _pccl
from ..errors import error_from_message
from . import jax_internals as jx
from .effects import clear_failed_tokens
from .lowering import effectful_ffi_call, int_attr

FFI_TARGET = "jax_pccl_collective"
# The engine's codes, by name (they travel on the wire: its table, not a copy).
KINDS = dict(_pccl.COLLECTIVE_KINDS)


def lower(ctx: jx.LoweringRuleContext, leaves, *, comm: int, kind: str, op: int = 0,
          root: int = 0, world: int = 0, quant: int = 0, donate: bool = False):
    """The custom call of one collective over ``leaves`` (see collective_handler.h)."""
    return effectful_ffi_call(ctx, FFI_TARGET, leaves, {
        "comm": int_attr(64, comm), "kind": int_attr(32, KINDS[kind]), "op": int_attr(32, op),
        "root": int_attr(32, root), "world": int_attr(32, world), "quant": int_attr(32, quant)},
        in_place=donate)


def register_lowering(primitive, rule, name: str) -> None:
    """``rule`` on CPU, and on CUDA where this build has the CUDA handler."""
    jx.register_lowering(primitive, rule, platform="cpu")

    def cuda_rule(ctx, *args, **params):
        if not _pccl.CUDA_BUILT:
            raise NotImplementedError(
                f"jax_pccl.{name} on a CUDA device: this jax_pccl was built without its CUDA "
                "handler. Rebuild it with `pip install . -C cmake.define.JAX_PCCL_CUDA=ON` (CUDA "
                "runtime headers and libcudart needed), or put the operand on the CPU "
                "(jax.device_put(x, jax.devices('cpu')[0])).")
        return rule(ctx, *args, **params)

    jx.register_lowering(primitive, cuda_rule, platform="cuda")


def apply(fn, leaves: list, treedef):
    """fn(tuple of leaves) -> result leaves, under a trace or eagerly (then
    to completion, with typed errors), as the caller's pytree."""
    from .. import _native

    _native.ensure_ffi_registered()
    run = lambda: fn(tuple(leaves))  # noqa: E731
    outs = run() if is_traced(leaves) else translate_errors(run)
    return jax.tree_util.tree_unflatten(treedef, list(outs))


def is_traced(leaves) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in leaves)


def translate_errors(run):
    """Runs an eager collective to completion; raises typed jax_pccl errors."""
    try:
        return jax.block_until_ready(run())
    except jax.errors.JaxRuntimeError as exc:
        clear_failed_tokens()  # the failure must not poison later eager calls
        typed = error_from_message(str(exc))
        if typed is None:
            raise
        raise typed from None


def primitive(name: str, out_aval, facts_shape=(2,)):
    """A primitive over a pytree's leaves with the collective effect: its
    results are ``out_aval(leaf_aval, **params)`` per leaf, then the int32
    facts the handler writes (world size, rank: collective_handler.h)."""
    import jax.numpy as jnp

    from .effects import COLLECTIVE_EFFECT

    prim = jx.Primitive(name)
    prim.multiple_results = True
    prim.def_impl(lambda *args, **params: jx.apply_primitive(prim, *args, **params))

    def abstract_eval(*leaves, **params):
        outs = [out_aval(x, **params) for x in leaves]
        outs.append(jax.core.ShapedArray(facts_shape, jnp.int32))
        return outs, {COLLECTIVE_EFFECT}

    prim.def_effectful_abstract_eval(abstract_eval)
    return prim


def group_size(comm, world_size) -> int:
    """The group size a result shape is built for: ``world_size`` if given,
    else the communicator's group as it is now (read at trace time)."""
    world = comm.group_world_size if world_size is None else world_size
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise ValueError(f"world_size must be a positive int; got {world!r}")
    return world
