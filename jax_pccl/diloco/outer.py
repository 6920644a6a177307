"""The outer step of DiLoCo as pure functions over pytrees.

Every peer trains its own copy of the parameters (the *local* params) for H
inner steps from the run's *global* params. The pseudo-gradient is

    pseudo_gradient = global - local

(a descent direction, like a gradient: plain SGD with lr 1 on its average
lands exactly on the peers' averaged local params). Peers average it with
``all_reduce(op="avg")`` and feed it to any optax ``GradientTransformation``,
the *outer* optimizer, whose update moves the global params:

    state = outer_init(params, outer)
    state = outer_step(state, local_params, comm, outer)      # jit-friendly

``outer_step`` is the whole sync-DiLoCo outer step in one traceable function;
``pseudo_gradient`` and ``apply_outer_update`` are its two halves, for code
that reduces the pseudo-gradient some other way.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..ops.all_reduce import all_reduce


class OuterState(NamedTuple):
    """The run's outer state: what every peer holds bit-identically.

    Attributes:
        params: the global params (a pytree).
        opt_state: the outer optimizer's state.
        step: int32 scalar: outer steps applied so far.
    """

    params: Any  # the global params (a pytree)
    opt_state: Any  # the outer optimizer's state
    step: Any  # int32 scalar: outer steps applied so far


def nesterov(learning_rate: float = 0.7, momentum: float = 0.9) -> optax.GradientTransformation:
    """DiLoCo's default outer optimizer: SGD with Nesterov momentum."""
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


def outer_init(params, outer: optax.GradientTransformation | None = None) -> OuterState:
    """The outer state of a run starting from ``params``."""
    outer = nesterov() if outer is None else outer
    return OuterState(params, outer.init(params), jnp.zeros((), jnp.int32))


def pseudo_gradient(global_params, local_params):
    """global - local, leaf by leaf."""
    return jax.tree_util.tree_map(lambda g, l: g - l, global_params, local_params)


def apply_outer_update(state: OuterState, pseudo_grad, outer: optax.GradientTransformation | None = None
                       ) -> OuterState:
    """One outer optimizer step on the (already averaged) pseudo-gradient."""
    outer = nesterov() if outer is None else outer
    updates, opt_state = outer.update(pseudo_grad, state.opt_state, state.params)
    return OuterState(optax.apply_updates(state.params, updates), opt_state, state.step + 1)


def outer_step(state: OuterState, local_params, comm, outer: optax.GradientTransformation | None = None,
               *, quantization: str | None = None) -> OuterState:
    """Sync DiLoCo's outer step: average the pseudo-gradient over the peers
    (optionally quantized on the wire), then apply the outer optimizer.

    Every peer gets bit-identical bytes from the all_reduce and runs the same
    update, so the returned state is bit-identical on every peer. Start the
    next inner phase from ``new_state.params``. Works eagerly and under jit
    (close over ``comm`` and ``outer``)."""
    # The pseudo-gradient is a temporary: its buffers can hold the result.
    pseudo_grad = all_reduce(pseudo_gradient(state.params, local_params), comm, op="avg",
                             quantization=quantization, donate=True)
    return apply_outer_update(state, pseudo_grad, outer)
