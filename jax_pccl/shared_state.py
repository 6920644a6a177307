"""Shared state: one pytree (parameters, optimizer state, ...) kept
bit-identical on every peer of a group.

``Communicator.sync_shared_state`` flattens the pytree, hands the leaves'
bytes to the engine without copying them, and rebuilds the pytree with the
leaves the election replaced. Leaves that did not change are returned as the
very objects that were passed in; replaced ones keep their shape (0-d too),
dtype and kind. Peers must agree on the structure (state_structure.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from . import _pccl, errors, state_structure
from .validation import DTYPE_CODES

STRATEGIES = dict(_pccl.SYNC_STRATEGIES)

# The engine's dtype codes (ffi/common/dtype.h, through the bindings). bool
# travels as uint8: its bytes are what is hashed and moved; the pytree keeps
# the bool dtype.
_DTYPE_CODES = {**DTYPE_CODES, "bool": DTYPE_CODES["uint8"]}


@dataclass(frozen=True)
class SyncInfo:
    """What one ``sync_shared_state`` call did on this peer.

    ``revision``: the run's revision after the sync (the caller's own when
    nothing newer existed). ``tx_bytes``/``rx_bytes``: leaf payload bytes this
    peer served to others / received. ``refetched_leaves``: leaves that
    arrived corrupted (hash mismatch) and were fetched again.
    ``refused_peers``: peers the master turned away from this sync (another
    pytree structure, shapes or dtypes than the run's, a revision the run has
    not reached); they got an error, this peer and the others went on.
    ``seconds``:
    where the time went: "hash" (our leaves), "plan" (waiting for every
    peer, plus a master round trip), "fetch", "verify" (hashing what
    arrived) and "finish" (waiting for peers still fetching from us).
    """

    revision: int
    tx_bytes: int
    rx_bytes: int
    refetched_leaves: int = 0
    refused_peers: int = 0
    seconds: dict = field(default_factory=dict, compare=False)


def check_revision(revision) -> int:
    if isinstance(revision, bool) or not isinstance(revision, (int, np.integer)):
        raise TypeError(f"revision must be an int, got {type(revision).__name__}")
    if not 0 <= int(revision) < 2**64:
        raise ValueError(f"revision must be in [0, 2**64), got {revision}")
    return int(revision)


def check_strategy(strategy) -> int:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}; got {strategy!r}")
    return STRATEGIES[strategy]


def _host_array(leaf, index: int) -> np.ndarray:
    """The leaf as a C-contiguous numpy array of its own shape (a view where possible)."""
    if not isinstance(leaf, (np.ndarray, np.generic, jax.Array, int, float, bool)):
        raise TypeError(
            f"shared-state leaf {index} is a {type(leaf).__name__}; leaves must be jax or "
            "numpy arrays (or Python scalars)"
        )
    arr = np.asarray(leaf)
    # Not np.ascontiguousarray alone: it turns a 0-d array into shape (1,),
    # and a 0-d leaf (optax's count) must come back 0-d, or every peer that
    # received it would compile other programs and hash other shapes.
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    if arr.dtype.name not in _DTYPE_CODES:
        raise TypeError(
            f"shared-state leaf {index} has dtype {arr.dtype.name}; supported: "
            f"{', '.join(sorted(_DTYPE_CODES))}"
        )
    return arr


def _restore(original, host: np.ndarray, received: np.ndarray):
    """The received bytes in the original leaf's kind, dtype and shape."""
    value = received.view(host.dtype).reshape(host.shape)
    if isinstance(original, jax.Array):
        # The engine's buffer is page-aligned when large: the CPU backend can
        # then adopt it instead of copying (numpy stays its owner).
        return jax.device_put(value, original.sharding, may_alias=True)
    if isinstance(original, np.generic):
        return value[()]
    if isinstance(original, (bool, int, float)):
        return type(original)(value.item())
    return value


def sync_shared_state(native, state, revision, strategy):
    revision = check_revision(revision)
    code = check_strategy(strategy)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    hosts = [_host_array(leaf, i) for i, leaf in enumerate(leaves)]
    try:
        result = native.sync_shared_state(
            [h.reshape(-1).view(np.uint8) for h in hosts],
            [_DTYPE_CODES[h.dtype.name] for h in hosts],
            [list(h.shape) for h in hosts],
            revision,
            code,
            state_structure.digest(treedef, hosts),
        )
    except errors.CollectiveMismatchError as exc:
        note = state_structure.leaf_note(str(exc), state)
        if not note:
            raise
        raise type(exc)(f"{exc} {note}") from exc
    new_leaves = list(leaves)
    for index, received in result["received"]:
        new_leaves[index] = _restore(leaves[index], hosts[index], received)
    info = SyncInfo(
        revision=int(result["revision"]),
        tx_bytes=int(result["tx_bytes"]),
        rx_bytes=int(result["rx_bytes"]),
        refetched_leaves=int(result["refetched_leaves"]),
        refused_peers=int(result["refused_peers"]),
        seconds={k: float(v) for k, v in result["seconds"].items()},
    )
    return jax.tree_util.tree_unflatten(treedef, new_leaves), info


def content_hash(leaf) -> int:
    """The engine's hash (xxh64) of one leaf's bytes: what peers compare."""
    from . import _pccl

    host = _host_array(leaf, 0)
    return int(_pccl.content_hash(host.reshape(-1).view(np.uint8)))
