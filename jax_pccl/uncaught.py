"""What a script that does not catch a collective failure prints: one typed error.

A failed jitted collective poisons what was dispatched after it. JAX runs
jitted calls asynchronously, so a training loop is usually several steps
ahead of the one that failed; each of those fails without running, with
XLA's "Error dispatching computation: " prefixed to the error of its inputs
(the previous step's results and the collective token). The error a script
finally trips over (at ``float(loss)``, say) therefore wraps the real one
once per step in flight: "INTERNAL: Error dispatching computation: Error
dispatching computation: ... PeerFailureError: ...". And at exit JAX blocks
on the failed token once more, from two atexit hooks, each printing it again.

``install()`` replaces the uncaught ``JaxRuntimeError`` that carries one of
our errors by that error (``jax_pccl.PeerFailureError: ...``), keeping the
caller's traceback and the previous hook's formatting; every other exception
goes to the previous hook unchanged. The exit side is handled where the
communicators are closed (communicator.py). Caught exceptions are untouched:
``pccl.is_peer_failure(exc)`` recognises them as before.
"""

from __future__ import annotations

import sys

from .errors import error_from_message

_NOTE = ("raised inside a jitted computation (jax.errors.JaxRuntimeError); "
         "catch it with pccl.is_peer_failure(exc) or wrap the step in pccl.retry_on_peer_failure")


def typed_error(exc: BaseException):
    """Our typed error for a JaxRuntimeError that carries one, else None."""
    import jax

    if not isinstance(exc, jax.errors.JaxRuntimeError):
        return None
    typed = error_from_message(str(exc))
    if typed is not None:
        typed.add_note(_NOTE)
    return typed


def install() -> None:
    previous = sys.excepthook
    if getattr(previous, "_jax_pccl", False):
        return  # installed already (module reloaded)

    def excepthook(exc_type, exc, tb):
        typed = typed_error(exc)
        if typed is None:
            return previous(exc_type, exc, tb)
        return previous(type(typed), typed.with_traceback(tb), tb)

    excepthook._jax_pccl = True
    sys.excepthook = excepthook
