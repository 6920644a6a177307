"""Running a step so that a peer failure costs one retry, not the run.

    step = pccl.retry_on_peer_failure(comm, train_step)
    params, loss = step(params, batch)     # same signature as train_step

On a peer failure (eager PeerFailureError, or a jitted call's JaxRuntimeError
naming it) the wrapper calls ``comm.update_topology()`` (which drops the dead
peer and rebuilds the ring) and calls the step again with the same, untouched
inputs. Inputs of a failed collective are never modified, so the retry
computes exactly what the first attempt would have, over the survivors.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable, TypeVar

import jax

from .errors import PcclError, is_peer_failure

log = logging.getLogger("jax_pccl")
F = TypeVar("F", bound=Callable)


def retry_on_peer_failure(comm, fn: F, *, max_retries: int = 8, backoff: float = 0.05) -> F:
    """Wraps ``fn`` so peer failures trigger update_topology() and a retry.

    Results are materialised (``block_until_ready``) inside the wrapper so
    that an asynchronous failure surfaces here, where it can be retried.
    Other errors propagate unchanged; so does the failure after
    ``max_retries`` attempts.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for attempt in range(max_retries + 1):
            try:
                return jax.block_until_ready(fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - filtered right below
                if not is_peer_failure(exc) or attempt == max_retries:
                    raise
                log.warning("peer failure (attempt %d): %s; rebuilding the ring", attempt + 1, exc)
            _recover(comm, max_retries, backoff)
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


def _recover(comm, attempts: int, backoff: float) -> None:
    # The vote itself can fail if another peer dies meanwhile: try again a
    # bounded number of times; anything that is not a peer failure propagates.
    for attempt in range(attempts + 1):
        try:
            comm.update_topology()
            return
        except PcclError as exc:
            if not is_peer_failure(exc) or attempt == attempts:
                raise
            time.sleep(backoff * (2**attempt))
