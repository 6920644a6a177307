"""Parameter fragments and the staggered schedule on which they are synced.

Streaming DiLoCo splits the parameters into F fragments and synchronises one
fragment at a time, each every H inner steps but at staggered offsets, so the
peak payload of one sync is 1/F of the whole model.

Fragments are contiguous, equal-sized (±1 element) ranges of the flattened
parameter vector (``jax.flatten_util.ravel_pytree`` order), so the 1/F bound
holds whatever the leaf sizes are. With F = 1 the only fragment is the
parameter pytree itself, unflattened, so the outer optimizer sees the same
structure the user gave it.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


class Fragments:
    """``gather(tree, p)`` reads fragment p of a params-shaped pytree;
    ``scatter(tree, p, part)`` returns tree with fragment p replaced."""

    def __init__(self, params, count: int):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"fragments must be a positive int, got {count!r}")
        flat, self._unravel = ravel_pytree(params)
        if count > flat.size:
            raise ValueError(f"fragments={count} exceeds the {flat.size} parameters")
        self.count = count
        self.size = int(flat.size)
        self.bounds = tuple(int(b) for b in np.linspace(0, self.size, count + 1).round().astype(int))

    def sizes(self) -> list[int]:
        """Elements per fragment."""
        return [hi - lo for lo, hi in zip(self.bounds, self.bounds[1:])]

    def gather(self, tree, p: int):
        """Fragment p of a params-shaped pytree (the pytree itself when count is 1)."""
        if self.count == 1:
            return tree
        lo, hi = self.bounds[p], self.bounds[p + 1]
        return ravel_pytree(tree)[0][lo:hi]

    def scatter(self, tree, p: int, part):
        """``tree`` with fragment p replaced by ``part``."""
        if self.count == 1:
            return part
        lo, hi = self.bounds[p], self.bounds[p + 1]
        flat = ravel_pytree(tree)[0]
        return self._unravel(flat.at[lo:hi].set(jnp.asarray(part, flat.dtype)))


@dataclass(frozen=True)
class Schedule:
    """When each fragment is sent (its all_reduce started) and waited for.

    Times are inner-step counts t = 1, 2, ...: "after t inner steps".
    Fragment p is sent at t = k*H + offset(p) (k >= 0), with
    offset(p) = floor((p+1) * H / F), so the last fragment is sent at multiples
    of H and the others are evenly staggered in between. Each is waited for
    ``overlap`` inner steps after it was sent (0: at once, blocking).

    - sync DiLoCo: F = 1, overlap = 0
    - streaming DiLoCo: F > 1, 0 <= overlap <= H // F
    - async DiLoCo: F = 1, overlap = H (the outer update lands one outer
      step late, while the next inner phase runs)

    overlap <= H // F guarantees at most one sync in flight and none at a
    multiple of H, where peers join and the shared state is synced.
    """

    inner_steps: int
    fragments: int = 1
    overlap: int = 0

    def __post_init__(self):
        h, f, o = self.inner_steps, self.fragments, self.overlap
        if not isinstance(h, int) or h < 1:
            raise ValueError(f"inner_steps must be a positive int, got {h!r}")
        if not isinstance(f, int) or not 1 <= f <= h:
            raise ValueError(f"fragments must be an int in [1, inner_steps={h}], got {f!r}")
        if not isinstance(o, int) or not 0 <= o <= h // f:
            raise ValueError(f"overlap must be an int in [0, inner_steps // fragments = {h // f}], "
                             f"got {o!r}")

    def offset(self, p: int) -> int:
        """The inner step, within each outer step, after which fragment p is sent."""
        return ((p + 1) * self.inner_steps) // self.fragments

    def sends_at(self, t: int) -> list[int]:
        """Fragments whose sync starts after inner step t."""
        return [p for p in range(self.fragments)
                if t >= self.offset(p) and (t - self.offset(p)) % self.inner_steps == 0]

    def waits_at(self, t: int) -> list[int]:
        """Fragments sent before t whose sync completes after inner step t."""
        if self.overlap == 0:
            return []
        return self.sends_at(t - self.overlap)

    def is_boundary(self, t: int) -> bool:
        """Outer-step boundary: membership changes and shared-state syncs happen here."""
        return t > 0 and t % self.inner_steps == 0
