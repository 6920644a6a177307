"""Exception types. Every error raised by jax_pccl derives from PcclError.

The native engine raises these same classes (it looks them up here by name),
and errors coming out of a jitted call are `jax.errors.JaxRuntimeError`s whose
message starts with one of these names; `is_peer_failure` understands both.
"""

from __future__ import annotations


class PcclError(RuntimeError):
    """Base class of every jax_pccl error."""


class PeerFailureError(PcclError):
    """A peer died, stalled or closed its link during a collective.

    The communicator stays usable: call ``update_topology()`` and retry.
    """


class MasterUnreachableError(PcclError):
    """The master could not be reached, or the connection to it was lost."""


class CollectiveMismatchError(PcclError):
    """Peers called the same collective with different op, dtype or shape."""


class ProtocolError(PcclError):
    """A malformed or incompatible message arrived from the network."""


class CancelledError(PcclError):
    """The operation was cancelled because its communicator was closed."""


class QuorumError(PcclError):
    """Fewer peers are in the run than a driver's ``min_peers`` needs.

    Raised by ``DataParallel.step()`` at once with ``below_min="stop"``, or
    when ``wait_timeout`` ran out with ``below_min="wait"``. The message says
    how many peers there are and how many are needed. The driver's state is
    the run's (synced) and its communicator stays usable; the peers in the
    run raise it together. A peer that does not go on training should
    ``close()`` its communicator (or exit): until then the others count it in.
    """


_BY_NAME = {
    cls.__name__: cls
    for cls in (
        PcclError,
        PeerFailureError,
        MasterUnreachableError,
        CollectiveMismatchError,
        ProtocolError,
        CancelledError,
    )
}


def error_from_message(message: str) -> PcclError | None:
    """Rebuilds the typed error from a JaxRuntimeError message, if it is ours."""
    for name, cls in _BY_NAME.items():
        marker = name + ": "
        at = message.find(marker)
        if at >= 0:
            return cls(message[at + len(marker):].strip())
    return None


def is_peer_failure(exc: BaseException) -> bool:
    """True for a PeerFailureError, eager or surfaced through a jitted call."""
    if isinstance(exc, PeerFailureError):
        return True
    return isinstance(exc, Exception) and "PeerFailureError" in str(exc)
