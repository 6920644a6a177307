"""Lowering of our ordered-effect FFI custom calls (shared by every collective).

Each call takes JAX's token for COLLECTIVE_EFFECT as its first operand and
returns the next token as its first result: that chain is what keeps
collectives in program order (see effects.py).
"""

from __future__ import annotations

from . import jax_internals as jx
from .effects import COLLECTIVE_EFFECT
from .jax_internals import ir


def row_major(aval) -> tuple[int, ...]:
    return tuple(range(len(aval.shape) - 1, -1, -1))


def int_attr(bits: int, value: int) -> ir.Attribute:
    return ir.IntegerAttr.get(ir.IntegerType.get_signless(bits), value)


def effectful_ffi_call(ctx: jx.LoweringRuleContext, target: str, operands, attributes: dict,
                       *, in_place: bool = False):
    """Emits the custom call, threading the collective token through it.

    ``in_place``: result i+1 aliases operand i+1 (after the token), so XLA hands
    the handler the same buffer for both (copying first only if the operand is
    still needed elsewhere).
    """
    token, results = chained_ffi_call(ctx, target, ctx.tokens_in.get(COLLECTIVE_EFFECT), operands,
                                      ctx.avals_in, ctx.avals_out, attributes, in_place=in_place)
    ctx.set_tokens_out(ctx.tokens_in.update_tokens(jx.TokenSet({COLLECTIVE_EFFECT: token})))
    return results


def chained_ffi_call(ctx: jx.LoweringRuleContext, target: str, token, operands, avals_in,
                     avals_out, attributes: dict, *, in_place: bool = False):
    """One side-effecting custom call after ``token``: (its token, its results).
    For lowerings that emit several calls in a row (the caller sets the
    rule's output token to the last one)."""
    types = [jx.token_type()] + [jx.aval_to_ir_type(ctx, a) for a in avals_out]
    call = jx.custom_call(
        target,
        result_types=types,
        operands=[token, *operands],
        backend_config=attributes,
        has_side_effect=True,
        api_version=4,
        operand_layouts=[()] + [row_major(a) for a in avals_in],
        result_layouts=[()] + [row_major(a) for a in avals_out],
        operand_output_aliases={i: i for i in range(1, len(operands) + 1)} if in_place else None,
    )
    results = list(call.results)
    return results[0], results[1:]
