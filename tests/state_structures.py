"""Shared-state pytrees of every shape the engine must round-trip exactly.

Built by the peer processes (tests/state_scenarios.py) from a seed: real
optax adam state (its ``count`` is a 0-d int32), bfloat16/float16 leaves, a
0-d leaf of every dtype as numpy array, numpy scalar and jax array, empty
leaves ((0,) and (3, 0)), and nested dict/list/tuple/NamedTuple containers.
``layout`` is what a peer reports about a pytree, so the test can compare
what came back with what went in, leaf by leaf.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

import cases

ZERO_D_DTYPES = cases.DTYPES + ("bool",)
LEARNING_RATE = 1e-2


class Pair(NamedTuple):
    left: object
    right: object


def _zero_d(name: str, seed: int, i: int):
    """One 0-d value of dtype `name` that differs between seeds 1 and 2."""
    dtype = np.dtype(bool) if name == "bool" else cases.np_dtype(name)
    value = (seed + i) % 2 == 0 if name == "bool" else (seed * 7 + i) % 100
    return np.asarray(value, dtype=dtype)


def structured_state(seed: int):
    import jax.numpy as jnp
    import optax
    rng = np.random.default_rng(9000 + seed)
    params = {
        "w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(3), jnp.bfloat16),
        "h": jnp.asarray(rng.standard_normal((2, 2)), jnp.float16),
    }
    numpy_0d = {n: _zero_d(n, seed, i) for i, n in enumerate(ZERO_D_DTYPES)}
    return {
        "params": params,
        "opt": optax.adam(LEARNING_RATE).init(params),
        "zero_d": {
            "numpy": numpy_0d,
            "scalar": {n: v[()] for n, v in numpy_0d.items()},  # np.generic
            "jax": {n: jnp.asarray(v) for n, v in numpy_0d.items()},
        },
        "empty": {"e0": np.zeros((0,), np.float32), "e30": jnp.zeros((3, 0), jnp.int32)},
        "nested": [
            (jnp.arange(seed, seed + 5, dtype=jnp.int16), [np.full((2, 1), seed, np.uint32)]),
            Pair(left=np.asarray(seed, np.float64), right={"deep": jnp.full((3,), seed, jnp.bfloat16)}),
        ],
        "step": int(seed),
        "lr": float(seed) / 10,
    }


def adam_step(state):
    """One optax adam update with a fixed gradient: every peer computes the same."""
    import jax
    import jax.numpy as jnp
    import optax
    grads = jax.tree_util.tree_map(jnp.ones_like, state["params"])
    updates, opt = optax.adam(LEARNING_RATE).update(grads, state["opt"], state["params"])
    return dict(state, params=optax.apply_updates(state["params"], updates), opt=opt)


def layout(pccl, state) -> dict:
    """Tree definition and, per leaf, shape, dtype, Python type and engine hash."""
    import jax
    leaves, treedef = jax.tree_util.tree_flatten(state)
    return {
        "treedef": str(treedef),
        "shapes": [list(np.shape(x)) for x in leaves],
        "dtypes": [np.asarray(x).dtype.name for x in leaves],
        "kinds": [type(x).__name__ for x in leaves],
        "hashes": [str(pccl.content_hash(x)) for x in leaves],
    }
