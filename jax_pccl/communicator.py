"""A peer's handle on the run: membership, topology and collectives."""

from __future__ import annotations

import atexit
import logging
import math
import numbers
import os
import threading
import time
import weakref
from typing import Any, Callable

from . import _pccl
from .address import check_advertise_host, parse_address, read_secret_file, secret_bytes
from .ops.effects import clear_failed_tokens

_live: "weakref.WeakSet[Communicator]" = weakref.WeakSet()
log = logging.getLogger("jax_pccl")

# How often a peer that waits (to be admitted, for a quorum) says so.
WAIT_LOG_EVERY_S = 10.0

# Communicator.from_env() reads these (`jax-pccl launch` sets the first two).
MASTER_ENV = "JAX_PCCL_MASTER"
SECRET_FILE_ENV = "JAX_PCCL_SECRET_FILE"
SECRET_ENV = "JAX_PCCL_SECRET"  # as `jax-pccl master` reads it
PEER_GROUP_ENV = "JAX_PCCL_PEER_GROUP"


class Communicator:
    """One peer of a run coordinated by the master at ``address``.

    ``timeout`` (seconds) bounds every network operation: a collective whose
    neighbour makes no progress for that long fails with PeerFailureError.

    ``secret`` (bytes or str; None: no authentication) must equal the
    master's. A mismatch (including a secret on one side only) makes
    ``connect()`` raise PcclError("authentication with master ... failed: ...").

    ``advertise_host``: the host name or IP address the other peers of the
    ring connect to this one at (the master hands them "host:listen_port";
    its status() lists it). "" (default): the address the master sees this
    peer connect from. Set it behind NAT or on multi-homed hosts.

    ``connections`` (1..32, default 8) is how many TCP connections this peer
    opens to its ring neighbour; large all-reduces are striped over them, so
    long fat links (high RTT, some loss) fill up. Peers may differ.

    ``concurrency`` (1..4, default 1) is how many collectives may be in flight
    at once. With more than 1, all-reduces of at most 1 MiB per peer run on
    their own connections beside the others (the leaves of a pytree, several
    ``all_reduce_start``s, a small all-reduce while a large one is running);
    larger ones still run one at a time, striped over ``connections``. Every
    peer of a group must use the same value (ring links refuse a neighbour
    that differs). With more than 1, a mismatch in which peers disagree on
    the size class of a collective (over 1 MiB on one peer, not on another)
    or on its kind (``update_topology()`` against a small all-reduce) fails
    with PeerFailureError after ``timeout`` rather than a named mismatch.
    """

    def __init__(
        self,
        address: str,
        peer_group: int = 0,
        secret: Any = None,
        timeout: float = 30.0,
        advertise_host: str = "",
        connections: int | None = None,
        concurrency: int = 1,
    ):
        secret = secret_bytes(secret)
        host, port = parse_address(address)
        if not isinstance(peer_group, numbers.Integral) or isinstance(peer_group, bool):
            raise TypeError(f"peer_group must be an int, got {peer_group!r}")
        peer_group = int(peer_group)
        if not 0 <= peer_group < 2**32:
            raise ValueError(f"peer_group must be in 0..{2**32 - 1}, got {peer_group!r}")
        # bool is an int, and nan/inf passed a `<= 0` check: nan made every
        # deadline undefined, inf none at all (the engine treats > 1e9 s as never).
        if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool):
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout!r}")
        advertise_host = check_advertise_host(advertise_host)
        if connections is None:
            connections = _pccl.DEFAULT_CONNECTIONS
        if (not isinstance(connections, int) or isinstance(connections, bool)
                or not 1 <= connections <= _pccl.MAX_CONNECTIONS):
            raise ValueError(f"connections must be an int in 1..{_pccl.MAX_CONNECTIONS}, "
                             f"got {connections!r}")
        if (not isinstance(concurrency, int) or isinstance(concurrency, bool)
                or not 1 <= concurrency <= _pccl.MAX_CONCURRENCY):
            raise ValueError(f"concurrency must be an int in 1..{_pccl.MAX_CONCURRENCY}, "
                             f"got {concurrency!r}")
        self.address = address
        self.peer_group = peer_group
        self.timeout = float(timeout)
        self.connections = connections
        self.concurrency = concurrency
        self._native = _pccl.Communicator(host, port, peer_group, self.timeout, advertise_host,
                                          secret=secret, connections=connections,
                                          concurrency=concurrency)
        self._closed = False
        _live.add(self)

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Communicator":
        """A Communicator configured from the environment (not yet connected).

        Reads ``JAX_PCCL_MASTER`` (the master's ``host:port``, required),
        ``JAX_PCCL_SECRET_FILE`` (a file holding the shared secret; one
        trailing newline is ignored), else ``JAX_PCCL_SECRET`` (the secret
        itself, as ``jax-pccl master`` reads it), and ``JAX_PCCL_PEER_GROUP``
        (an int, default 0). ``jax-pccl launch`` sets the first two for
        every peer it starts.

        Args:
            **kwargs: any argument of the constructor (``address``,
                ``peer_group``, ``secret``, ``timeout``, ...); a keyword given
                here wins over the environment, and the variable it replaces
                is not read.

        Returns:
            Communicator: the same as ``Communicator(address, ...)``; call
            ``connect()`` on it.

        Raises:
            PcclError: ``JAX_PCCL_MASTER`` is not set (and no ``address=``),
                or a variable holds something unusable (a malformed
                address, a secret file that is missing, unreadable or empty,
                a peer group that is not a non-negative int); the message
                names the variable.
        """
        from .errors import PcclError

        env = os.environ
        if "address" not in kwargs:
            address = env.get(MASTER_ENV, "").strip()
            if not address:
                raise PcclError(f"{MASTER_ENV} is not set: set it to the master's host:port "
                                f"(e.g. {MASTER_ENV}=10.0.0.1:48148), or pass address=")
            try:
                parse_address(address)
            except ValueError as exc:
                raise PcclError(f"{MASTER_ENV}={address!r}: {exc}") from None
            kwargs["address"] = address
        if "secret" not in kwargs:
            path = env.get(SECRET_FILE_ENV, "")
            if path:
                try:
                    kwargs["secret"] = read_secret_file(path)
                except OSError as exc:
                    raise PcclError(f"{SECRET_FILE_ENV}={path}: cannot read the secret: "
                                    f"{exc.strerror or exc}") from None
                except ValueError:
                    raise PcclError(f"{SECRET_FILE_ENV}={path}: the file is empty") from None
            elif env.get(SECRET_ENV):
                kwargs["secret"] = env[SECRET_ENV].encode("utf-8", "surrogateescape")
        if "peer_group" not in kwargs and env.get(PEER_GROUP_ENV, "").strip():
            text = env[PEER_GROUP_ENV].strip()
            try:
                kwargs["peer_group"] = int(text)
            except ValueError:
                raise PcclError(f"{PEER_GROUP_ENV}={text!r}: must be a non-negative int") from None
            if not 0 <= kwargs["peer_group"] < 2**32:
                raise PcclError(f"{PEER_GROUP_ENV}={text!r}: must be a non-negative int below 2**32")
        return cls(**kwargs)

    # -- membership ---------------------------------------------------------
    def connect(self, timeout: float | None = None, min_peers: int = 1) -> "Communicator":
        """Registers with the master and returns once this peer is accepted
        and its group holds at least ``min_peers`` accepted peers.

        The first peer of a group is accepted at once; later ones when the
        accepted peers call ``update_topology()``. While it waits for
        ``min_peers``, this peer itself calls ``update_topology()`` so that
        the others are admitted. ``timeout`` bounds the whole wait (None: as
        long as it takes); past it the call raises ``PcclError`` (if not yet
        admitted, the communicator is closed: create a new one to retry).
        Every 10 s of waiting logs a warning on the ``jax_pccl`` logger
        saying what it waits for.
        """
        if (not isinstance(min_peers, int) or isinstance(min_peers, bool)
                or not 1 <= min_peers < 2**31):
            raise ValueError(f"min_peers must be a positive int, got {min_peers!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be None or a positive number of seconds, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        native_timeout = -1.0 if timeout is None else float(timeout)
        self._wait_logged(lambda: self._native.connect(native_timeout),
                          f"to be admitted by the accepted peers of group {self.peer_group} "
                          f"(master {self.address}); they admit newcomers when they call "
                          "update_topology()")
        self._wait_for_quorum(min_peers, deadline)
        return self

    def _wait_logged(self, wait: Callable[[], None], what: str) -> None:
        """Runs a blocking native wait on a helper thread so that this one can
        say, every WAIT_LOG_EVERY_S, that it is still waiting (and Ctrl-C
        still ends it: closing cancels the native wait)."""
        failure: list[BaseException] = []

        def run() -> None:
            try:
                wait()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                failure.append(exc)

        thread = threading.Thread(target=run, name="jax_pccl-connect", daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            while True:
                thread.join(WAIT_LOG_EVERY_S)
                if not thread.is_alive():
                    break
                log.warning("jax_pccl: still waiting %s (%.0f s so far)", what,
                            time.monotonic() - started)
        except BaseException:
            self.close()  # cancels the native wait
            thread.join()
            raise
        if failure:
            raise failure[0]

    def _wait_for_quorum(self, min_peers: int, deadline: float | None) -> None:
        from .errors import PcclError

        next_log = time.monotonic() + WAIT_LOG_EVERY_S
        while self.group_world_size < min_peers:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise PcclError(f"connect(min_peers={min_peers}): only {self.group_world_size} "
                                f"accepted peers in group {self.peer_group} when the timeout "
                                "ran out")
            if now >= next_log:
                log.warning("jax_pccl: %d of %d peers in group %d; waiting for the others to "
                            "connect", self.group_world_size, min_peers, self.peer_group)
                next_log = now + WAIT_LOG_EVERY_S
            self.update_topology()  # admits whoever is pending
            time.sleep(0.02)

    def update_topology(self) -> None:
        """Collective over the accepted peers: admits pending peers, drops
        dead ones and rebuilds the ring. Returns at once if nothing changed.

        This is also the recovery step after a failed collective."""
        clear_failed_tokens()
        self._native.update_topology()

    def are_peers_pending(self) -> bool:
        """Whether someone waits to be admitted. Every accepted peer of the
        group gets the same answer between two collectives."""
        return bool(self._native.are_peers_pending())

    def optimize_topology(self) -> None:
        """Collective over the accepted peers of this group: measures the
        links that have no fresh figures (bandwidth and round trip of every
        directed pair, N - 1 rounds in which every peer sends one probe and
        receives one), then the master picks the ring whose slowest link is
        fastest and every peer moves to it. Results stay exact and
        bit-identical; ``rank`` may change. Pending peers stay pending (admit
        them with ``update_topology()``). A group of fewer than 3 peers has
        one ring only: returns at once.

        Raises PeerFailureError after a failure in this epoch (call
        ``update_topology()`` first) or if not every peer comes in time.
        See docs/topology.md."""
        self._native.optimize_topology()

    def sync_shared_state(self, state, revision: int, strategy: str = "enforce_popular"):
        """Makes ``state`` (any pytree of arrays) bit-identical on every peer
        of the group; returns ``(state, SyncInfo)``. Collective: every
        accepted peer of the group calls it, with the same pytree structure.

        The master elects, per leaf, the content most peers hold at the
        highest revision; peers that differ receive it peer to peer and
        verify its hash before accepting it. A newly admitted peer receives
        the run's state and revision. After the run's first sync the revision
        must advance by at most 1 per sync; a peer claiming more gets
        PcclError. ``strategy``: "enforce_popular" (default), "receive_only"
        (never offers its own content), "send_only" (the declared source: it
        never receives, and fails if it would have to). See docs/shared-state.md
        for the exact rules and errors.
        """
        from .shared_state import sync_shared_state

        # Ordered after this peer's jitted collectives still in flight, as
        # update_topology() is: the sync holds the engine exclusively, so a
        # collective dispatched earlier but run later would wait for the
        # sync while its partners wait for it (a stall until `timeout`,
        # then a PeerFailureError). Also drops a failed collective token.
        clear_failed_tokens()
        return sync_shared_state(self._native, state, revision, strategy)

    @property
    def world_size(self) -> int:
        """Accepted peers in the run, all groups."""
        return int(self._native.world_size)

    @property
    def group_world_size(self) -> int:
        """Accepted peers in this peer_group."""
        return int(self._native.group_world_size)

    @property
    def rank(self) -> int:
        """Position in this group's ring (may change at update_topology)."""
        return int(self._native.rank)

    @property
    def peer_id(self) -> int:
        """This peer's id at the master (kept across master restarts)."""
        return int(self._native.peer_id)

    def stats(self) -> dict:
        """This peer's counters: bytes sent/received, collectives done/failed,
        topology updates, shared-state syncs, epoch and seq (docs/logging.md
        lists every key)."""
        return dict(self._native.stats())

    @property
    def _handle(self) -> int:
        if self._closed:
            from .errors import PcclError

            raise PcclError("communicator is closed (functions jitted over it keep it: "
                            "re-jit them with the new Communicator)")
        return int(self._native.handle)

    # -- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Leaves the run; cancels anything in flight. Idempotent."""
        if not self._closed:
            self._closed = True
            self._native.close()

    def __enter__(self) -> "Communicator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Communicator(address={self.address!r}, peer_group={self.peer_group}, "
            f"closed={self._closed})"
        )


@atexit.register
def _close_all_at_exit() -> None:
    # Work still in flight at interpreter exit is cancelled, never waited for.
    for comm in list(_live):
        comm.close()
    # JAX's own exit hooks (registered before ours, so run after it) block on
    # the collective token and print its error once more if a collective
    # failed: the script has reported that failure already (uncaught.py).
    clear_failed_tokens()
