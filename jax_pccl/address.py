"""Parsing of "host:port" addresses and shared argument checks."""

from __future__ import annotations

from typing import Any


def parse_address(address: str) -> tuple[str, int]:
    """Splits "host:port" (or "[v6]:port") and validates the port."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"address must be 'host:port', got {address!r}")
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {address!r} has a non-numeric port") from None
    if not 0 < port < 65536:
        raise ValueError(f"address {address!r}: port must be in 1..65535")
    if not host:
        raise ValueError(f"address {address!r} has no host")
    return host, port


def require_no_secret(secret: Any) -> None:
    # Authentication is its own piece of work (shared-secret HMAC handshake);
    # until it lands, refusing loudly beats silently running unauthenticated.
    if secret is not None:
        raise NotImplementedError(
            "secret= (authentication) is not implemented yet; pass secret=None"
        )
