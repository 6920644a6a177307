"""A running master's status, asked over the network (``jax-pccl status``).

The master answers an authenticated client that sends STATUS_REQUEST instead
of registering as a peer: the same report as ``Master.status()`` (peers with
the seconds since the master last heard each, groups with their epoch, ring
order, link figures and shared-state revision; each peer's counters, from
its heartbeats), plus ``events``, the master's
last 100 joins, epochs, drops with their reasons, syncs and ring choices.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

from . import _pccl
from .address import parse_address, secret_bytes


def master_status(address: str, secret: Any = None, timeout: float = 10.0) -> dict:
    """The status of the master at ``address`` ("host:port").

    Args:
        address: the master's ``host:port``.
        secret: the run's shared secret (bytes or str), or None when the
            master runs without one; a mismatch is refused like a peer's.
        timeout: bound on the whole exchange, in seconds.

    Returns:
        dict: as ``Master.status()``, with ``events`` (``[{"s_ago", "text"}]``,
        oldest first) and ``links_omitted`` (True when the link figures did
        not fit in one reply).

    Raises:
        MasterUnreachableError: nobody answers at ``address`` in time.
        PcclError: the master refused the secret.
    """
    host, port = parse_address(address)
    if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool) or not (
            math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    text = _pccl.fetch_master_status(host, port, secret_bytes(secret), float(timeout))
    return json.loads(text)


def _short(peer_id: int) -> str:
    return str(peer_id)


def format_status(status: dict) -> str:
    """The status as lines for a terminal (``jax-pccl status`` without --json)."""
    lines = [f"master {status['address']}: up {status['uptime_s']:.0f} s, world size "
             f"{status['world_size']}, authentication {status['authentication']}, "
             f"{status['auth_refusals']} refused"]
    peers = {p["id"]: p for p in status["peers"]}
    for g in status["groups"]:
        revision = g["shared_state_revision"]
        lines.append(f"group {g['group']}: epoch {g['epoch']}, {g['world_size']} in the ring, "
                     f"{g['pending']} pending, shared-state revision "
                     f"{'-' if revision is None else revision}"
                     + (", ring optimized" if g.get("optimized") else ""))
        lines.append("  ring: " + (" -> ".join(_short(i) for i in g["ring"]) or "(empty)"))
        for pid in [*g["ring"], *(p for p, v in peers.items()
                                  if v["group"] == g["group"] and p not in g["ring"])]:
            p = peers.get(pid)
            if p is None:
                continue
            heard = "-" if p["heard_s_ago"] < 0 else f"{p['heard_s_ago']:.1f} s ago"
            lines.append(f"  peer {pid:>16}  {p['address']:<24} {p['state']:<9} heard {heard:<10} "
                         f"{p['collectives_done']} collectives ({p['collectives_failed']} failed), "
                         f"{p['bytes_per_s'] / 1e6:.1f} MB/s")
    if status.get("events"):
        lines.append("recent events:")
        lines += [f"  {e['s_ago']:8.1f} s ago  {e['text']}" for e in status["events"][-20:]]
    return "\n".join(lines)
