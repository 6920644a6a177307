"""Parsing of "host:port" addresses and shared argument checks (incl. ``secret=``
and secret files)."""

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


def secret_bytes(secret: Any) -> bytes | None:
    """Normalises the ``secret=`` argument: None (no authentication) or bytes.

    ``str`` is encoded as UTF-8. An empty secret is refused rather than taken
    to mean "no authentication": pass None for that.
    """
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        secret = bytes(secret)
    else:
        raise TypeError(f"secret must be bytes, str or None, got {type(secret).__name__}")
    if not secret:
        raise ValueError("secret must not be empty: use secret=None for no authentication")
    return secret


def read_secret_file(path: str) -> bytes:
    """The secret held in the file at ``path``: its bytes, less one trailing
    newline (``\\n`` or ``\\r\\n``). Raises OSError if it cannot be read,
    ValueError if it is empty."""
    with open(path, "rb") as f:
        secret = f.read()
    if secret.endswith(b"\r\n"):
        secret = secret[:-2]
    elif secret.endswith(b"\n"):
        secret = secret[:-1]
    if not secret:
        raise ValueError(f"{path}: the secret file is empty")
    return secret
