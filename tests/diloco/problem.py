"""The toy problem of the DiLoCo tests, numpy-only (peers and tests share it).

Peer i minimises 0.5 * ||params - target(i)||^2 with plain SGD, so every
inner step is a known affine map and a numpy replay of the run
(tests/diloco/reference.py) can be compared to what the peers computed.
"""
from __future__ import annotations

import numpy as np

INNER_LR = 0.1
OUTER_LR = 0.7
OUTER_MOMENTUM = 0.9
SHAPES = {"b": (5,), "w": (3, 4)}  # 17 parameters; flattened in this (sorted-key) order
STEPS = 12

# name -> DiLoCo(...) keyword arguments
MODES = {
    "sync": dict(inner_steps=4),
    "streaming": dict(inner_steps=6, fragments=3, overlap=1),
    "async": dict(inner_steps=4, overlap=4),
    "quantized": dict(inner_steps=4, quantization="minmax_uint8"),
}


def _tree(values: np.ndarray) -> dict:
    out, at = {}, 0
    for name, shape in SHAPES.items():
        n = int(np.prod(shape))
        out[name] = values[at:at + n].reshape(shape).astype(np.float32)
        at += n
    return out


def size() -> int:
    return sum(int(np.prod(s)) for s in SHAPES.values())


def initial_params() -> dict:
    return _tree(np.linspace(-1.0, 1.0, size()))


def target(index: int) -> dict:
    return _tree(np.random.default_rng(10 + index).normal(size=size()))


def local_params(index: int, outer_step: int) -> dict:
    """Local params peer `index` hands to the outer step number `outer_step`."""
    return _tree(np.random.default_rng(1000 * outer_step + index).normal(size=size()))


def flat(tree: dict) -> np.ndarray:
    return np.concatenate([np.asarray(tree[k], np.float64).reshape(-1) for k in SHAPES])


def loss(params, target_params):
    return sum(0.5 * ((params[k] - target_params[k]) ** 2).sum() for k in SHAPES)
