"""The ordered effect that sequences every collective in program order.

JAX threads a token through all primitives carrying an ordered effect; our
custom calls take and return it, so XLA can neither reorder two collectives
nor run them concurrently, and every peer issues them in the same order.
"""

from __future__ import annotations

from jax._src import effects as _effects


class CollectiveEffect(_effects.Effect):
    __str__ = lambda self: "PcclCollective"  # noqa: E731


COLLECTIVE_EFFECT = CollectiveEffect()

_effects.ordered_effects.add_type(CollectiveEffect)
_effects.lowerable_effects.add_type(CollectiveEffect)
_effects.control_flow_allowed_effects.add_type(CollectiveEffect)
_effects.custom_derivatives_allowed_effects.add_type(CollectiveEffect)
_effects.remat_allowed_effects.add_type(CollectiveEffect)


def clear_failed_tokens() -> None:
    """Forgets runtime tokens left in an error state by a failed collective.

    JAX chains the ordered-effect token from one jitted call into the next.
    When a collective fails, its output token carries the error, and every
    later collective would fail with that same stale error without running.
    Recovery (``update_topology()``) therefore drops failed tokens; the next
    collective starts a fresh chain. Healthy tokens are kept, so the order of
    collectives still in flight is untouched.
    """
    from jax._src import dispatch

    tokens = dispatch.runtime_tokens
    token = tokens.current_tokens.get(COLLECTIVE_EFFECT)
    if token is not None and _failed(token):
        tokens.current_tokens.pop(COLLECTIVE_EFFECT, None)
    for device, runtime_token in list(tokens.output_runtime_tokens.items()):
        if _failed(runtime_token):
            tokens.output_runtime_tokens.pop(device, None)


def _failed(token) -> bool:
    try:
        token.block_until_ready()
        return False
    except Exception:  # noqa: BLE001 - any error state means the chain is poisoned
        return True
