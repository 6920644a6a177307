"""Argument checks for collectives, done before anything touches the network."""

from __future__ import annotations

import numpy as np

from . import _pccl

# The engine's codes (they travel on the wire): its tables, not copies.
REDUCE_OPS = dict(_pccl.REDUCE_OPS)
# quantization=None is the engine's "none".
QUANTIZATIONS = {(None if name == "none" else name): code for name, code in _pccl.QUANTIZATIONS.items()}
DTYPE_CODES = dict(_pccl.DTYPES)
SUPPORTED_DTYPES = frozenset(DTYPE_CODES)


def op_code(op) -> int:
    if not isinstance(op, str):
        raise TypeError(f"op must be a string, one of {sorted(REDUCE_OPS)}; got {op!r}")
    if op not in REDUCE_OPS:
        raise ValueError(f"op must be one of {sorted(REDUCE_OPS)}; got {op!r}")
    return REDUCE_OPS[op]


def check_dtypes(leaves, what: str = "all_reduce") -> None:
    for i, leaf in enumerate(leaves):
        name = np.dtype(leaf.dtype).name
        if name not in SUPPORTED_DTYPES:
            raise TypeError(
                f"x (leaf {i}) has dtype {name}, which {what} does not support; "
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


def leaves_of(x):
    """The leaves of pytree ``x`` as jax arrays (tracers kept as they are), and its treedef."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree_util.tree_flatten(x)
    return [v if isinstance(v, jax.core.Tracer) else jnp.asarray(v) for v in leaves], treedef


def prepare_collective(x, comm, op, quantization):
    """Everything a collective checks before touching the network.

    Returns (leaves, treedef, comm handle, op code, quantization code); leaves
    are jax arrays (tracers are kept as they are).
    """
    code = op_code(op)
    handle = check_communicator(comm)
    leaves, treedef = leaves_of(x)
    check_dtypes(leaves)
    return leaves, treedef, handle, code, quantization_code(quantization, leaves)
