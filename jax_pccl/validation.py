"""Argument checks for collectives, done before anything touches the network."""

from __future__ import annotations

import numpy as np

REDUCE_OPS = {"sum": 0, "avg": 1, "min": 2, "max": 3, "prod": 4}
QUANTIZATIONS = {None: 0, "minmax_uint8": 1, "zero_point_uint8": 2, "bfloat16": 3}
SUPPORTED_DTYPES = frozenset(
    [
        "float32", "float64", "float16", "bfloat16",
        "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64",
    ]
)


def op_code(op) -> int:
    if not isinstance(op, str):
        raise TypeError(f"op must be a string, one of {sorted(REDUCE_OPS)}; got {op!r}")
    if op not in REDUCE_OPS:
        raise ValueError(f"op must be one of {sorted(REDUCE_OPS)}; got {op!r}")
    return REDUCE_OPS[op]


def check_dtypes(leaves) -> None:
    for i, leaf in enumerate(leaves):
        name = np.dtype(leaf.dtype).name
        if name not in SUPPORTED_DTYPES:
            raise TypeError(
                f"x (leaf {i}) has dtype {name}, which all_reduce does not support; "
                f"supported: {', '.join(sorted(SUPPORTED_DTYPES))}"
            )


def quantization_code(quantization, leaves) -> int:
    """Validates the wire format; returns its engine code (0: none)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {list(QUANTIZATIONS)}; got {quantization!r}"
        )
    if quantization is not None:
        for i, leaf in enumerate(leaves):
            name = np.dtype(leaf.dtype).name
            if name not in ("float32", "float64", "float16", "bfloat16"):
                raise TypeError(
                    f"quantization={quantization!r} applies to floating inputs only; "
                    f"x (leaf {i}) has dtype {name}"
                )
    return QUANTIZATIONS[quantization]


def check_communicator(comm) -> int:
    from .communicator import Communicator

    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a jax_pccl.Communicator, got {type(comm).__name__}")
    return comm._handle


def prepare_collective(x, comm, op, quantization):
    """Everything a collective checks before touching the network.

    Returns (leaves, treedef, comm handle, op code, quantization code); leaves
    are jax arrays (tracers are kept as they are).
    """
    import jax
    import jax.numpy as jnp

    code = op_code(op)
    handle = check_communicator(comm)
    leaves, treedef = jax.tree_util.tree_flatten(x)
    leaves = [v if isinstance(v, jax.core.Tracer) else jnp.asarray(v) for v in leaves]
    check_dtypes(leaves)
    return leaves, treedef, handle, code, quantization_code(quantization, leaves)
