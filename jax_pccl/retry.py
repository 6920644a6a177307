"""Running a step so that a peer failure costs one retry, not the run.

    step = pccl.retry_on_peer_failure(comm, train_step)
    params, loss = step(params, batch)     # same signature as train_step

On a peer failure (eager PeerFailureError, or a jitted call's JaxRuntimeError
naming it) the wrapper calls ``comm.update_topology()`` (which drops the dead
peer and rebuilds the ring) and calls the step again with the same, untouched
inputs. Inputs of a failed collective are never modified, so the retry
computes exactly what the first attempt would have, over the survivors.

With ``master_grace=S`` it also rides out a master restart: while the master
is unreachable it keeps calling ``update_topology()`` for up to S seconds; the
peer re-registers with the restarted master in the background and rejoins.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import time
from typing import Callable, TypeVar

import jax

from .errors import MasterUnreachableError, PcclError, is_peer_failure

log = logging.getLogger("jax_pccl")
F = TypeVar("F", bound=Callable)


def retry_on_peer_failure(
    comm, fn: F, *, max_retries: int = 8, backoff: float = 0.05, master_grace: float = 0.0
) -> F:
    """Wraps ``fn`` so peer failures trigger update_topology() and a retry.

    Results are materialised (``block_until_ready``) inside the wrapper so
    that an asynchronous failure surfaces here, where it can be retried.
    Other errors propagate unchanged; so does the failure after
    ``max_retries`` attempts, or a master outage longer than ``master_grace``.
    """
    check_retry_args(max_retries, backoff, master_grace)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for attempt in range(max_retries + 1):
            try:
                return jax.block_until_ready(fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - filtered right below
                retryable = is_peer_failure(exc) or (master_grace > 0 and is_master_unreachable(exc))
                if not retryable or attempt == max_retries:
                    raise
                log.warning("collective failed (attempt %d): %s; recovering", attempt + 1, exc)
            _recover(comm, max_retries, backoff, master_grace)
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


def check_retry_args(max_retries, backoff=0.0, master_grace=0.0) -> None:
    """Refuses what the loops below cannot mean (checked when wrapping, not at
    the first failure): max_retries=-1 made the wrapper raise
    AssertionError("unreachable") without calling fn at all."""
    if not isinstance(max_retries, numbers.Integral) or isinstance(max_retries, bool):
        raise TypeError(f"max_retries must be an int, got {max_retries!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
    for name, value in (("backoff", backoff), ("master_grace", master_grace)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{name} must be a number of seconds, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def is_master_unreachable(exc: BaseException) -> bool:
    """True for MasterUnreachableError, eager or surfaced through a jitted call."""
    return isinstance(exc, MasterUnreachableError) or (
        isinstance(exc, Exception) and "MasterUnreachableError" in str(exc)
    )


def _recover(comm, attempts: int, backoff: float, master_grace: float) -> None:
    # The vote can fail if another peer dies meanwhile, and a restarting master
    # is unreachable for a while: retry both, boundedly; anything else propagates.
    master_deadline = time.monotonic() + master_grace
    failures = 0
    while True:
        try:
            comm.update_topology()
            return
        except PcclError as exc:
            if is_peer_failure(exc) and failures < attempts:
                failures += 1
                time.sleep(backoff * (2**failures))
            elif is_master_unreachable(exc) and time.monotonic() < master_deadline:
                time.sleep(0.2)
            else:
                raise
