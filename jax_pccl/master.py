"""The master process API: membership and topology coordination."""

from __future__ import annotations

import json
from typing import Any

from . import _pccl
from .address import secret_bytes


def _probe_ms(seconds) -> int:
    limit = _pccl.MAX_PROBE_MS / 1000
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not 0.001 <= seconds <= limit):
        raise ValueError(f"probe_seconds must be a number in 0.001..{limit:g}, got {seconds!r}")
    return max(1, round(seconds * 1000))


class Master:
    """Coordinates one run. Tensors never pass through it.

    ``with Master(host="127.0.0.1", port=0) as master: ...`` runs the master on
    a native thread of this process until the block ends (or ``close()``).

    ``secret`` (bytes or str; None: no authentication): every connection must
    prove it holds the same secret (HMAC-SHA256 challenge-response; the secret
    never crosses the wire). A peer with another secret, or none, is refused
    with a clear error on both sides. See docs/security.md.

    ``heartbeat_timeout``: a peer silent this long (frozen, partitioned) is
    dropped, and the others' collectives with it fail at once.

    ``probe_seconds`` and ``probe_connections``: how long, and over how many
    TCP connections, ``Communicator.optimize_topology()`` measures each
    directed link (every link of N peers takes N - 1 rounds of that length;
    see docs/topology.md). ``status()["groups"][i]["links"]`` lists the figures.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: Any = None,
        heartbeat_timeout: float = 4.0,
        probe_seconds: float = 1.0,
        probe_connections: int = 4,
    ):
        secret = secret_bytes(secret)
        if not heartbeat_timeout or heartbeat_timeout <= 1.0:
            raise ValueError("heartbeat_timeout must exceed the 1 s heartbeat interval")
        probe_ms = _probe_ms(probe_seconds)
        if (isinstance(probe_connections, bool) or not isinstance(probe_connections, int)
                or not 1 <= probe_connections <= _pccl.MAX_CONNECTIONS):
            raise ValueError(f"probe_connections must be an int in 1..{_pccl.MAX_CONNECTIONS}, "
                             f"got {probe_connections!r}")
        self._host = host
        self._native = _pccl.Master(host, int(port), float(heartbeat_timeout), secret=secret,
                                    probe_ms=probe_ms, probe_streams=probe_connections)
        self._native.start()
        self._closed = False

    @property
    def port(self) -> int:
        """The TCP port it listens on (the one the OS picked when created with port=0)."""
        return int(self._native.port)

    @property
    def address(self) -> str:
        """``host:port`` to give peers (``[host]:port`` for an IPv6 host)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    def status(self) -> dict:
        """A JSON-serialisable snapshot: peers, groups, world sizes, uptime."""
        return json.loads(self._native.status_json())

    def close(self) -> None:
        """Stops the master. Idempotent."""
        if not self._closed:
            self._closed = True
            self._native.stop()

    def __enter__(self) -> "Master":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Master(address={self.address!r}, closed={self._closed})"
