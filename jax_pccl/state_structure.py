"""The pytree structure that peers compare before a shared-state sync.

The engine already compares every leaf's wire dtype and shape. What only
Python knows travels as one digest (``SyncRequestMsg::structure``): the tree
definition (key names, container and NamedTuple types, leaf order) and the
numpy dtypes (``bool`` travels as ``uint8``). Two peers whose leaves have the
same bytes but other key names would otherwise swap parameters silently.

The tree definition enters as ``str(treedef)``: key names, container types
and NamedTuple class names. A custom pytree node whose auxiliary data prints
differently in every process (e.g. an object's address) would make every
peer look odd; such nodes need a deterministic ``repr``.

The master keeps the structure most peers hold and refuses the others
(``ffi/master/state_structure.h``); ``leaf_note`` adds this peer's key path
to a refusal that names a leaf by index.
"""

from __future__ import annotations

import re

import jax
import numpy as np

_LEAF_INDEX = re.compile(r"\bleaf (\d+) is\b")


def describe(treedef, hosts) -> str:
    """What must be equal on every peer, as text (the digest's input)."""
    lines = [str(treedef)]
    lines += [f"{h.dtype.name}{tuple(h.shape)}" for h in hosts]
    return "\n".join(lines)


def digest(treedef, hosts) -> int:
    """The structure digest: XXH64 of ``describe``, as the engine hashes leaves."""
    from . import _pccl

    text = np.frombuffer(describe(treedef, hosts).encode(), dtype=np.uint8)
    return int(_pccl.content_hash(text))


def leaf_paths(state) -> list:
    """Every leaf's key path (``['params']['w']``), in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    return [jax.tree_util.keystr(path) for path, _ in flat]


def leaf_note(message: str, state) -> str:
    """This peer's key path of the leaf a structure refusal names by index.

    The engine names leaves by their flattening index ("leaf 3 is float32(4,)
    ..."); the user thinks in key paths. "" when the message names none.
    """
    match = _LEAF_INDEX.search(message)
    if match is None:
        return ""
    paths = leaf_paths(state)
    index = int(match.group(1))
    if index >= len(paths):
        return ""
    return f"[leaf {index} is {paths[index] or '(the root)'} in this peer's pytree]"
