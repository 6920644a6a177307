"""Inputs and numpy references shared by the peer processes and the tests.

numpy-only on purpose: the peers build their inputs from here, and the tests
rebuild every peer's inputs from the same deterministic generators to compute
the reference result. Nothing here touches jax or jax_pccl.

Value ranges are chosen so that every reference is exact: sums never overflow
and are exactly representable (for floats: integers below 2**mantissa_bits),
products use factors whose n-fold product fits, and `avg` of floats used for
exact comparison has sums divisible by the number of peers.
"""
from __future__ import annotations

import hashlib
import zlib

import ml_dtypes
import numpy as np

N_PEERS = 3
OPS = ("sum", "avg", "min", "max", "prod")
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
SIGNED_DTYPES = ("int8", "int16", "int32", "int64")
UNSIGNED_DTYPES = ("uint8", "uint16", "uint32", "uint64")
DTYPES = FLOAT_DTYPES + SIGNED_DTYPES + UNSIGNED_DTYPES
MODES = ("eager", "jit")

# Odd, 2-D, and not a multiple of the peer count: exercises uneven ring chunks
# and checks that the shape survives the round trip.
SHAPE = (5, 7)
# A few big arrays (several ring chunks / pipelined transfers).
LARGE_CASES = (("sum", "float32"), ("max", "int32"), ("avg", "bfloat16"))
LARGE_SHAPE = (1_000_003,)

# Bits of integer precision per float format: integers up to 2**p are exact.
_MANTISSA_BITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}


def np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def is_float(name: str) -> bool:
    return name in FLOAT_DTYPES


def is_signed(name: str) -> bool:
    return name in SIGNED_DTYPES or name in FLOAT_DTYPES


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _exact_limit(name: str) -> int:
    """Largest magnitude M such that every integer in [-M, M] (or [0, M]) is exact."""
    if is_float(name):
        return 2 ** _MANTISSA_BITS[name]
    return int(np.iinfo(np_dtype(name)).max)


def _wide(name: str) -> np.dtype:
    """Exact working type for references: float64 / int64 / uint64."""
    if is_float(name):
        return np.dtype(np.float64)
    return np.dtype(np.int64) if is_signed(name) else np.dtype(np.uint64)


def _integers(rng, lo: int, hi: int, size, name: str) -> np.ndarray:
    """Uniform integers in [lo, hi] in the exact working type."""
    if _wide(name) == np.uint64:
        return rng.integers(lo, hi, endpoint=True, size=size, dtype=np.uint64)
    return rng.integers(lo, hi, endpoint=True, size=size, dtype=np.int64).astype(_wide(name))


def _root_bound(limit: int, n: int) -> int:
    """Largest b with b**n <= limit."""
    b = int(round(limit ** (1.0 / n)))
    while b ** n > limit:
        b -= 1
    while (b + 1) ** n <= limit:
        b += 1
    return b


def all_inputs(op: str, dtype: str, shape=SHAPE, n: int = N_PEERS, variant: str = "exact") -> np.ndarray:
    """Every peer's input for (op, dtype), stacked: shape (n, *shape), dtype `dtype`.

    Peer i uses row i. Half the elements are small (|v| <= 20), half span the
    widest range that keeps the reduction exact, so both "small integers" and
    full-width arithmetic (e.g. 64-bit sums, unsigned compares) are exercised.

    variant="exact": for float `avg`, the per-element sum is a multiple of n so
    the quotient is exact. variant="rounding": arbitrary sums (the quotient
    must be rounded).
    """
    rng = _rng(op, dtype, tuple(shape), n, variant)
    size = (n, *shape)
    signed = is_signed(dtype)
    limit = _exact_limit(dtype)

    if op in ("sum", "avg"):
        hi = limit // n - n  # room for the divisibility fix-up below
        lo = -hi if signed else 0
        big = _integers(rng, lo, hi, size, dtype)
        small = _integers(rng, -20 if signed else 0, 20, size, dtype)
        vals = np.where(rng.random(size) < 0.5, small, big)
        if op == "avg" and is_float(dtype) and variant == "exact":
            rem = np.mod(vals.sum(axis=0), n)  # in [0, n)
            vals[-1] = vals[-1] - rem
    elif op in ("min", "max"):
        if is_float(dtype):
            vals = (rng.standard_normal(size) * 1000.0).astype(np_dtype(dtype)).astype(np.float64)
            vals[vals == 0] = 1.0  # no signed zeros: -0 and +0 compare equal
            flat = vals.reshape(n, -1)
            flat[0, 0], flat[1, 1] = -np.inf, np.inf
        else:
            info = np.iinfo(np_dtype(dtype))
            vals = _integers(rng, int(info.min), int(info.max), size, dtype)
            flat = vals.reshape(n, -1)
            flat[0, 0], flat[1, 1] = info.min, info.max
    elif op == "prod":
        if is_float(dtype):
            tiny = rng.choice(np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]), size=size)
        elif signed:
            tiny = _integers(rng, -1, 2, size, dtype)
        else:
            tiny = _integers(rng, 0, 3, size, dtype)
        b = _root_bound(limit, n)
        big = _integers(rng, -b if signed else 0, b, size, dtype)
        vals = np.where(rng.random(size) < 0.5, tiny, big)
    else:
        raise ValueError(f"unknown op {op!r}")
    return vals.astype(np_dtype(dtype))


def reference(op: str, stacked: np.ndarray, dtype: str) -> np.ndarray:
    """The exact all_reduce result of the stacked per-peer inputs (axis 0)."""
    n = stacked.shape[0]
    w = stacked.astype(_wide(dtype))
    if op == "sum":
        r = w.sum(axis=0)
    elif op == "avg":
        s = w.sum(axis=0)
        if is_float(dtype):
            r = s / n  # correctly rounded in float64; narrowing is innocuous
        elif signed_int(dtype):
            r = np.sign(s) * (np.abs(s) // n)  # truncate toward zero
        else:
            r = s // np.uint64(n)
    elif op == "min":
        r = w.min(axis=0)
    elif op == "max":
        r = w.max(axis=0)
    elif op == "prod":
        r = w.prod(axis=0)
    else:
        raise ValueError(f"unknown op {op!r}")
    return np.asarray(r).astype(np_dtype(dtype))


def signed_int(dtype: str) -> bool:
    return dtype in SIGNED_DTYPES


def ulp(dtype: str) -> float:
    return float(ml_dtypes.finfo(np_dtype(dtype)).eps)


def sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


# --- transform scenarios -----------------------------------------------------

def small_ints(key, index: int, shape, dtype: str, lo: int = -9, hi: int = 9) -> np.ndarray:
    """Small integer-valued array for peer `index` (deterministic per key)."""
    rng = _rng("small", key, index, tuple(shape), dtype)
    if not is_signed(dtype):
        lo = max(lo, 0)
    return rng.integers(lo, hi, endpoint=True, size=shape).astype(np_dtype(dtype))


def pytree_input(index: int):
    """A nested dict/list/tuple of mixed dtypes, different per peer."""
    return {
        "w": small_ints("tree.w", index, (4, 3), "float32"),
        "layers": [
            {"b": small_ints("tree.b", index, (5,), "int32")},
            (
                small_ints("tree.h", index, (2, 2), "bfloat16"),
                small_ints("tree.u", index, (6,), "uint8", 0, 50),
            ),
        ],
        "scale": small_ints("tree.s", index, (), "float64"),
    }


TWO_OPS_SPECS = {  # name: (op, shape, dtype), issued in this order in one jit
    "a": ("sum", (8,), "float32"),
    "b": ("max", (3, 5), "int32"),
    "c": ("prod", (2,), "int16"),
}
SCAN_STEPS, SCAN_WIDTH = 4, 3
VMAP_BATCH, VMAP_WIDTH = 4, 6
GRAD_SIZE = 5
DONATE_SIZES = (1000, 70_001)  # float32: inline path, ring path


def scan_reference(xs_all: np.ndarray):
    """carry_{t+1} = sum_p (carry_t + xs_p[t]); ys[t] = carry_{t+1}; carry_0 = 0."""
    n = xs_all.shape[0]
    carry = np.zeros(xs_all.shape[2:], np.float64)
    ys = []
    for t in range(xs_all.shape[1]):
        carry = n * carry + xs_all[:, t].astype(np.float64).sum(axis=0)
        ys.append(carry)
    return carry, np.stack(ys)


# --- shared state --------------------------------------------------------------

def shared_state_case(seed: int, big: bool = False):
    """A params + optimizer-state pytree of mixed leaf kinds, per seed.

    jax and numpy leaves, float32/bfloat16/float64/int32/uint16, a Python
    int; "frozen" is the same for every seed (it never needs to move).
    big=True: a 48 MiB weight, so that transfers take many chunks.
    """
    import jax.numpy as jnp
    rng = np.random.default_rng(7000 + seed)
    rows = 12288 if big else 512
    return {
        "params": {
            "w": jnp.asarray(rng.standard_normal((rows, 1024), dtype=np.float32)),
            "b": jnp.asarray(rng.standard_normal(300).astype(np.float32)).astype(jnp.bfloat16),
        },
        "opt": {"count": jnp.asarray(seed, jnp.int32), "nu": rng.standard_normal(1000)},
        "frozen": np.arange(4096, dtype=np.uint16),
        "step": int(seed),
    }
