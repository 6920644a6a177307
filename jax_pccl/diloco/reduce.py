"""Averaging pseudo-gradients over the peers that contributed to them.

A peer that has not trained since it received the global params (a joiner)
still takes part in the collective, so that every accepted peer issues the
same collectives, but with weight 0: peers all-reduce ``w * pseudo_grad``
(op "sum", optionally quantized on the wire) and the int32 count ``w``, and
divide. Every peer gets bit-identical bytes back and runs the same division,
so the mean is bit-identical too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..ops.all_reduce import all_reduce
from ..ops.all_reduce_async import all_reduce_start, all_reduce_wait


def weighted_payload(pseudo_grad, weight: float):
    """(w * pseudo_grad, int32 w): what one peer contributes."""
    scaled = jax.tree_util.tree_map(lambda g: g * jnp.asarray(weight, g.dtype), pseudo_grad)
    return scaled, np.asarray(int(weight), np.int32)


def reduce_blocking(payload, comm, quantization=None):
    """(sum of w * pseudo_grad, number of contributors), eagerly."""
    scaled, count = payload
    total = all_reduce(scaled, comm, op="sum", quantization=quantization)
    contributors = all_reduce(count, comm, op="sum")
    return jax.block_until_ready((total, contributors))


def reduce_start(payload, comm, quantization=None):
    """Starts both collectives; hand the result to ``reduce_wait``."""
    scaled, count = payload
    first = all_reduce_start(scaled, comm, op="sum", quantization=quantization)
    try:
        second = all_reduce_start(count, comm, op="sum")
    except Exception:
        _wait_quietly(first)
        raise
    return first, second


def reduce_wait(handles):
    """Waits for both started collectives (both, even if the first fails)."""
    first, second = handles
    try:
        total = jax.block_until_ready(all_reduce_wait(first))
    except Exception:
        _wait_quietly(second)
        raise
    contributors = jax.block_until_ready(all_reduce_wait(second))
    return total, contributors


def _wait_quietly(handle) -> None:
    # Every started collective must be waited for once, even when we already
    # know the step failed; its own error adds nothing.
    try:
        jax.block_until_ready(all_reduce_wait(handle))
    except Exception:  # noqa: BLE001
        pass


def mean(total, contributors):
    """total / contributors, leaf by leaf (zeros when nobody contributed)."""
    n = jnp.maximum(contributors, 1)
    return jax.tree_util.tree_map(lambda s: s / n.astype(s.dtype), total)


def barrier(comm) -> None:
    """Returns once every peer has reached it: an all_reduce needs everyone's input."""
    jax.block_until_ready(all_reduce(np.zeros((), np.int32), comm, op="sum"))
