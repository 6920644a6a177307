"""Every use of JAX's internals, in one place, with a fallback per version.

jax_pccl defines JAX primitives with an ordered effect and lowers them to XLA
FFI custom calls: that needs pieces JAX does not export publicly (dispatch,
the MLIR lowering helpers, the batching table, the effect registries, the
runtime token set). Nothing else in jax_pccl imports ``jax._src``; when a JAX
release moves or changes one of these, the fix goes here.

Supported: jax 0.8.3 to 0.10.x (pyproject.toml). Differences handled:
- ``mlir.aval_to_ir_type`` takes the module context first since jax 0.9
  (``aval_to_ir_type(ctx, aval)``), the aval alone before.
"""

from __future__ import annotations

import inspect

from jax._src import core as _core
from jax._src import dispatch as _dispatch
from jax._src import effects as _effects
from jax._src.interpreters import batching as _batching
from jax._src.interpreters import mlir as _mlir
from jax.extend.core import Primitive  # noqa: F401  (re-exported: public since jax 0.4.36)
from jax.interpreters.mlir import ir  # noqa: F401  (re-exported)

LoweringRuleContext = _mlir.LoweringRuleContext
TokenSet = _mlir.TokenSet
custom_call = _mlir.custom_call
token_type = _mlir.token_type
register_lowering = _mlir.register_lowering
apply_primitive = _dispatch.apply_primitive
primitive_batchers = _batching.primitive_batchers
Effect = _effects.Effect
Token = _core.Token


def _takes_context(fn) -> bool:
    try:
        return len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):  # not introspectable: the newer form
        return True


_AVAL_TYPE_TAKES_CONTEXT = _takes_context(_mlir.aval_to_ir_type)


def aval_to_ir_type(ctx, aval):
    """The MLIR type of ``aval`` in the module being lowered."""
    if _AVAL_TYPE_TAKES_CONTEXT:
        return _mlir.aval_to_ir_type(ctx.module_context, aval)
    return _mlir.aval_to_ir_type(aval)


def register_ordered_effect(effect_type) -> None:
    """An ordered effect that may appear in control flow, custom derivatives
    and remat, and is lowered with a token."""
    for registry in (_effects.ordered_effects, _effects.lowerable_effects,
                     _effects.control_flow_allowed_effects,
                     _effects.custom_derivatives_allowed_effects, _effects.remat_allowed_effects):
        registry.add_type(effect_type)


def runtime_tokens():
    """JAX's runtime token set (the ordered effects' tokens between calls)."""
    return _dispatch.runtime_tokens


def runtime_token_set_class():
    """The class of ``runtime_tokens()``, or None where JAX has another layout."""
    return getattr(_dispatch, "RuntimeTokenSet", None)
