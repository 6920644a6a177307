"""Parsing of "host:port" addresses and shared argument checks (incl. ``secret=``
and secret files)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any


_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def is_host(text: str) -> bool:
    """Whether ``text`` is an IP address or a DNS host name (no port, no brackets)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def parse_address(address: str) -> tuple[str, int]:
    """Splits "host:port" (or "[v6]:port") and validates the port."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a 'host:port' string, got {type(address).__name__}")
    if ":" not in address:
        raise ValueError(f"address must be 'host:port', got {address!r}")
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    # int() alone would also take " 80", "+80" and "8_0".
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"address {address!r} has a non-numeric port") from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"address {address!r}: port must be in 1..65535")
    if not host:
        raise ValueError(f"address {address!r} has no host")
    if not is_host(host):
        raise ValueError(f"address {address!r}: {host!r} is not a host name or IP address")
    return host, port


def check_advertise_host(host) -> str:
    """``advertise_host=``: "" (the address the master sees) or a host name /
    IP address the other peers connect to (the master hands them
    "host:listen_port"); refused here rather than when a neighbour's
    connect fails later."""
    if not isinstance(host, str):
        raise TypeError(f"advertise_host must be a str (a host name or IP address, or '' for "
                        f"the address the master sees), got {type(host).__name__}")
    if host and not is_host(host):
        raise ValueError(f"advertise_host must be a host name or IP address that the other peers "
                         f"can reach, without a port or brackets; got {host!r}")
    return host


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
