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
