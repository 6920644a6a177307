"""The jax_pccl wire format, from the outside: frames and the client side of
the authentication handshake (ffi/transport/frame.h, ffi/security/handshake.h).

The hostile-input driver uses it to build valid bytes it can then break, to
get past the handshake as a member holding the secret, and to record a
handshake response that it replays. Every read has a timeout.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time

from jax_pccl import _pccl

MAGIC = 0x4C434350  # "PCCL" little-endian
VERSION = _pccl.PROTOCOL_VERSION  # ffi/transport/frame.h kProtocolVersion (changes with the messages)
HEADER = 12
MAX_CONTROL_PAYLOAD = 1 << 20

T_HELLO, T_VOTE, T_ERROR, T_PEER_HELLO, T_HEARTBEAT = 1, 4, 6, 7, 9
T_AUTH_CHALLENGE, T_AUTH_RESPONSE, T_AUTH_RESULT = 11, 12, 13

CHALLENGE_SIZE, RESPONSE_SIZE, RESULT_SIZE = 39, 71, 200
AUTH_MAGIC = b"PCAU"
CLIENT_LABEL = b"jax_pccl/v1/client\x00"

CTX_MASTER, CTX_RING = b"master", b"ring"


def header(msg_type: int, length: int, magic: int = MAGIC, version: int = VERSION) -> bytes:
    return struct.pack("<IHHI", magic, version, msg_type, length)


def frame(msg_type: int, payload: bytes) -> bytes:
    return header(msg_type, len(payload)) + payload


def recv_exact(sock: socket.socket, n: int, timeout: float) -> bytes | None:
    """n bytes, or None if the remote closed or the timeout passed first."""
    end = time.monotonic() + timeout
    data = b""
    while len(data) < n:
        left = end - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(data))
        except (socket.timeout, OSError):
            return None
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(sock: socket.socket, timeout: float) -> tuple[int, bytes] | None:
    head = recv_exact(sock, HEADER, timeout)
    if head is None:
        return None
    magic, version, msg_type, length = struct.unpack("<IHHI", head)
    if magic != MAGIC or version != VERSION or length > MAX_CONTROL_PAYLOAD:
        return None
    payload = recv_exact(sock, length, timeout) if length else b""
    return None if payload is None else (msg_type, payload)


def closed_by_remote(sock: socket.socket, timeout: float) -> bool:
    """Drains what the remote sends; True once it closes (EOF or reset)."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True


def client_mac(secret: bytes, ctx: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    msg = CLIENT_LABEL + struct.pack("<I", len(ctx)) + ctx + server_nonce + client_nonce
    return hmac.new(secret, msg, hashlib.sha256).digest()


def response_to(challenge: bytes, secret: bytes, ctx: bytes) -> bytes:
    """M2 answering M1 `challenge`, proving `secret`."""
    assert len(challenge) == CHALLENGE_SIZE and challenge[:4] == AUTH_MAGIC, challenge[:8]
    server_nonce = challenge[7:39]
    client_nonce = os.urandom(32)
    mac = client_mac(secret, ctx, server_nonce, client_nonce)
    return AUTH_MAGIC + bytes([1, 2, 1]) + client_nonce + mac


def accepted(result: bytes) -> bool:
    return len(result) == RESULT_SIZE and result[:6] == AUTH_MAGIC + bytes([1, 3]) and result[6] == 0


def handshake(sock: socket.socket, secret: bytes, ctx: bytes, timeout: float,
              response: bytes | None = None) -> tuple[bytes | None, bool]:
    """Runs the client side; `response` replaces our own M2 (a replay).

    Returns (the M2 frame sent, whether the remote accepted it)."""
    m1 = read_frame(sock, timeout)
    if m1 is None or m1[0] != T_AUTH_CHALLENGE:
        return None, False
    sent = frame(T_AUTH_RESPONSE, response or response_to(m1[1], secret, ctx))
    sock.sendall(sent)
    m3 = read_frame(sock, timeout)
    return sent, m3 is not None and m3[0] == T_AUTH_RESULT and accepted(m3[1])


def hello_payload(group: int, port: int, host: bytes = b"", resume_id: int = 0,
                  resume_epoch: int = 0) -> bytes:
    return (struct.pack("<IHH", group, port, len(host)) + host
            + struct.pack("<QQ", resume_id, resume_epoch))
