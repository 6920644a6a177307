"""The hostile inputs, one function per category, against one listening port.

Each attack opens its own TCP connection to 127.0.0.1, does its damage and
returns a verdict word that is tallied per (target, category):
  "closed"   the server dropped the connection (what a bad input deserves)
  "refused"  the server answered the handshake with a refusal, then dropped it
  "sent"     we sent and hung up ourselves (no verdict is due: e.g. the
             server legitimately waits for the rest of a frame)
  "open"     a verdict was due but the server kept the connection open
  "accepted" the server accepted a replayed or garbage handshake (a failure)
Every socket operation has a timeout, so no attack can hang the driver.
"""
from __future__ import annotations

import random
import socket
import struct
import time
from dataclasses import dataclass

import wire

CONNECT_TIMEOUT = 2.0
VERDICT_TIMEOUT = 3.0  # the server answers a bad frame at once; slack for a busy box


@dataclass
class Target:
    name: str  # "master" or "ring"
    port: int
    ctx: bytes  # handshake context of this kind of listener
    secret: bytes
    # Payload limit before authentication (master: the M2 size; ring: kMaxAuthFrame).
    preauth_limit: int
    recorded_m2: bytes | None = None  # a legitimate M2 frame, for replays


def connect(target: Target) -> socket.socket:
    return socket.create_connection(("127.0.0.1", target.port), timeout=CONNECT_TIMEOUT)


def _send_then_verdict(target: Target, data: bytes, verdict_due: bool) -> str:
    with connect(target) as s:
        try:
            s.settimeout(VERDICT_TIMEOUT)
            s.sendall(data)
        except OSError:
            return "closed"  # reset while we were still sending: dropped
        if not verdict_due:
            return "sent"
        return "closed" if wire.closed_by_remote(s, VERDICT_TIMEOUT) else "open"


def random_bytes(target: Target, rng: random.Random) -> str:
    """1 to 2048 random bytes, then hang up."""
    data = rng.randbytes(rng.randint(1, 2048))
    return _send_then_verdict(target, data, verdict_due=False)


def huge_length(target: Target, rng: random.Random) -> str:
    """A well-formed header whose length prefix is far above any limit."""
    length = rng.choice([0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, wire.MAX_CONTROL_PAYLOAD + 1,
                         rng.randint(target.preauth_limit + 1, 0xFFFFFFFF)])
    msg_type = rng.choice([wire.T_AUTH_RESPONSE, wire.T_HELLO, wire.T_PEER_HELLO,
                           rng.randint(0, 0xFFFF)])
    data = wire.header(msg_type, length) + rng.randbytes(rng.randint(0, 64))
    return _send_then_verdict(target, data, verdict_due=True)


def truncated(target: Target, rng: random.Random) -> str:
    """A valid-looking handshake response frame cut short, then hang up."""
    full = wire.frame(wire.T_AUTH_RESPONSE, rng.randbytes(wire.RESPONSE_SIZE))
    return _send_then_verdict(target, full[:rng.randint(1, len(full) - 1)], verdict_due=False)


def oversized(target: Target, rng: random.Random) -> str:
    """A frame just above the pre-authentication limit, with its bytes really sent."""
    length = rng.choice([target.preauth_limit + 1, 4096, 65536])
    data = wire.header(wire.T_AUTH_RESPONSE, length) + rng.randbytes(length)
    return _send_then_verdict(target, data, verdict_due=True)


def oversized_after_auth(target: Target, rng: random.Random) -> str:
    """A member holding the secret sends a control frame above 1 MiB (bytes sent)."""
    with connect(target) as s:
        _, ok = wire.handshake(s, target.secret, target.ctx, VERDICT_TIMEOUT)
        if not ok:
            return "refused"
        msg_type = wire.T_HELLO if target.name == "master" else wire.T_PEER_HELLO
        data = wire.header(msg_type, wire.MAX_CONTROL_PAYLOAD + 1) + bytes(wire.MAX_CONTROL_PAYLOAD + 1)
        try:
            s.settimeout(VERDICT_TIMEOUT)
            s.sendall(data)
        except OSError:
            return "closed"
        return "closed" if wire.closed_by_remote(s, VERDICT_TIMEOUT) else "open"


def replayed_handshake(target: Target, rng: random.Random) -> str:
    """A recorded, once-valid handshake response replayed on a new connection."""
    assert target.recorded_m2 is not None
    with connect(target) as s:
        m1 = wire.read_frame(s, VERDICT_TIMEOUT)
        if m1 is None:
            return "closed"
        s.sendall(target.recorded_m2)
        m3 = wire.read_frame(s, VERDICT_TIMEOUT)
        if m3 is not None and m3[0] == wire.T_AUTH_RESULT and wire.accepted(m3[1]):
            return "accepted"
        if m3 is None:
            return "closed"
        return "refused" if wire.closed_by_remote(s, VERDICT_TIMEOUT) else "open"


def _garbage_frame(target: Target, rng: random.Random) -> bytes:
    """A malformed first message from an authenticated member."""
    if target.name == "master":
        hello = wire.hello_payload(0, 40000)
        choices = [
            wire.frame(wire.T_HELLO, hello[:rng.randint(0, len(hello) - 1)]),  # truncated
            wire.frame(wire.T_HELLO, hello + rng.randbytes(rng.randint(1, 8))),  # trailing bytes
            wire.frame(wire.T_HELLO, wire.hello_payload(0, 0)),  # no listen port
            wire.frame(wire.T_HELLO, struct.pack("<IHH", 0, 40000, 0xFFFF) + bytes(64)),  # long string
            wire.frame(wire.T_VOTE, bytes(8)),  # not HELLO first
            wire.frame(rng.randint(14, 0xFFFF), rng.randbytes(rng.randint(0, 64))),
            wire.header(wire.T_HELLO, 8, magic=0xDEADBEEF) + bytes(8),
            wire.header(wire.T_HELLO, 8, version=99) + bytes(8),
        ]
    else:
        choices = [
            wire.frame(wire.T_PEER_HELLO, rng.randbytes(rng.randint(0, 19))),  # truncated
            wire.frame(wire.T_PEER_HELLO, rng.randbytes(65)),  # above the PEER_HELLO limit
            wire.frame(wire.T_PEER_HELLO, struct.pack("<QQI", 1, 1, 0xFFFFFFFF) + bytes(1)),  # other group
            wire.frame(wire.T_HELLO, rng.randbytes(rng.randint(0, 32))),  # not PEER_HELLO
            wire.header(wire.T_PEER_HELLO, 20, version=99) + bytes(20),
        ]
    return rng.choice(choices)


def garbage_after_auth(target: Target, rng: random.Random) -> str:
    """A member holding the secret, whose first message is malformed."""
    with connect(target) as s:
        _, ok = wire.handshake(s, target.secret, target.ctx, VERDICT_TIMEOUT)
        if not ok:
            return "refused"
        try:
            s.sendall(_garbage_frame(target, rng))
        except OSError:
            return "closed"
        return "closed" if wire.closed_by_remote(s, VERDICT_TIMEOUT) else "open"


def rapid_connects(target: Target, count: int) -> int:
    """`count` connects, each closed at once (every other one with a reset)."""
    done = 0
    for i in range(count):
        try:
            s = connect(target)
        except OSError:
            continue
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        done += 1
    return done


def stalled(target: Target, rng: random.Random) -> socket.socket:
    """A slow client: part of a frame, then silence (held open by the caller)."""
    s = connect(target)
    full = wire.frame(wire.T_AUTH_RESPONSE, rng.randbytes(wire.RESPONSE_SIZE))
    s.sendall(full[:rng.randint(1, len(full) - 1)])
    return s


def probe(target: Target) -> float:
    """Seconds a legitimate handshake takes right now (inf if it fails)."""
    t0 = time.monotonic()
    try:
        with connect(target) as s:
            _, ok = wire.handshake(s, target.secret, target.ctx, 10.0)
    except OSError:
        return float("inf")
    return time.monotonic() - t0 if ok else float("inf")


def record_m2(target: Target) -> None:
    """A legitimate handshake with the secret; keeps its M2 for the replays."""
    with connect(target) as s:
        sent, ok = wire.handshake(s, target.secret, target.ctx, 10.0)
    if not ok:
        raise RuntimeError(f"{target.name}: a legitimate handshake was refused")
    target.recorded_m2 = sent


# The per-connection categories that run in every round, in order.
ROUND = [
    ("random_bytes", random_bytes),
    ("huge_length", huge_length),
    ("truncated", truncated),
    ("oversized", oversized),
    ("replayed_handshake", replayed_handshake),
    ("garbage_after_auth", garbage_after_auth),
]
# Categories where the server owes a verdict: anything but "open"/"accepted" is a pass.
VERDICT_DUE = {"huge_length", "oversized", "oversized_after_auth", "replayed_handshake",
               "garbage_after_auth"}
