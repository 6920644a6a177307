"""jax_pccl: JAX-native, fault-tolerant collectives over TCP.

    import jax_pccl as pccl
    with pccl.Master() as master:
        comm = pccl.Communicator(master.address).connect()
        y = jax.jit(lambda x: pccl.all_reduce(x, comm, op="avg"))(x)
"""

def _load_native() -> None:
    """Imports the compiled engine, or says plainly why it is not there."""
    import glob
    import os

    try:
        from . import _pccl  # noqa: F401
    except ImportError:
        here = os.path.dirname(os.path.abspath(__file__))
        if glob.glob(os.path.join(here, "_pccl*")):
            raise
        raise ImportError(
            f"jax_pccl was imported from {here}, a source tree without the compiled "
            "engine (_pccl). Python puts the current directory first on sys.path, so "
            "running from the repository root shadows the installed package: run from "
            "another directory (e.g. `cd /tmp`), or use the installed console script "
            "`jax-pccl`. To build and install: `pip install .`"
        ) from None


_load_native()

from . import _pccl  # noqa: E402
from .communicator import Communicator  # noqa: E402
from .elastic import DataParallel
from .errors import (
    CancelledError,
    CollectiveMismatchError,
    MasterUnreachableError,
    PcclError,
    PeerFailureError,
    ProtocolError,
    QuorumError,
    is_peer_failure,
)
from .master import Master
from .ops.all_gather import all_gather
from .ops.all_reduce import AllReduceInfo, all_reduce
from .ops.broadcast import broadcast
from .ops.reduce_scatter import reduce_scatter
from .ops.all_reduce_async import AllReduceHandle, all_reduce_start, all_reduce_wait
from .retry import retry_on_peer_failure
from .shared_state import SyncInfo, content_hash
from .status import master_status
from .uncaught import install as _install_excepthook

_install_excepthook()  # an uncaught collective failure prints as one typed error

__version__ = _pccl.VERSION  # pyproject.toml's, compiled in by the build

__all__ = [
    "AllReduceHandle",
    "AllReduceInfo",
    "CancelledError",
    "CollectiveMismatchError",
    "Communicator",
    "DataParallel",
    "Master",
    "MasterUnreachableError",
    "PcclError",
    "PeerFailureError",
    "ProtocolError",
    "QuorumError",
    "all_gather",
    "all_reduce",
    "all_reduce_start",
    "broadcast",
    "all_reduce_wait",
    "is_peer_failure",
    "master_status",
    "reduce_scatter",
    "SyncInfo",
    "content_hash",
    "retry_on_peer_failure",
]
