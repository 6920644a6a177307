#!/usr/bin/env python3
"""A constant-delay line for bench/wan_lab.sh on kernels without sch_netem.

    python3 bench/wan_delay.py --config FILE [--lifetime SECONDS] [--pid-file FILE]

Runs inside the lab's router namespace, where iptables sends every forwarded
packet of path i -> j to NFQUEUE queue i*256 + j. The config file has one line
per queue, "QUEUE DELAY_MS LOSS" (LOSS a probability, 0..1). Each packet is
dropped with that probability on arrival, otherwise accepted DELAY_MS after
it arrived, in arrival order (FIFO per queue: one batch verdict releases
every packet that is due). Only packet metadata comes to userspace
(NFQNL_COPY_META); GSO super-packets stay whole.

SIGHUP re-reads the config (new delays apply to new packets; FIFO order is
kept). SIGUSR1 writes per-queue counters to stderr. SIGTERM, SIGINT or
--lifetime end it; packets still held are then dropped by the kernel, and a
queue without this process drops everything, so a dead delay line shows as a
dead network, never as a network without delay.

Only the standard library: the netfilter queue protocol is spoken directly
over a netlink socket (linux/netfilter/nfnetlink_queue.h).
"""
from __future__ import annotations

import argparse
import collections
import errno
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_GSO = 1 << 2
NF_DROP, NF_ACCEPT = 0, 1
QUEUE_MAXLEN = 100_000  # packets a queue may hold in the kernel (a long fat pipe's worth)

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, portid
NFGEN_HDR = struct.Struct("!BBH")  # family, version, res_id (the queue number)
NLA_HDR = struct.Struct("=HH")  # len, type


def _attr(kind: int, payload: bytes) -> bytes:
    pad = -len(payload) % 4
    return NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload + b"\0" * pad


class Queue:
    """One path's FIFO: (release time, packet id), and its counters."""

    __slots__ = ("num", "delay_s", "loss", "held", "last_release", "passed", "dropped", "late_1ms")

    def __init__(self, num: int, delay_s: float, loss: float):
        self.num, self.delay_s, self.loss = num, delay_s, loss
        self.held: collections.deque = collections.deque()
        self.last_release = 0.0
        self.passed = self.dropped = self.late_1ms = 0


class DelayLine:
    def __init__(self, config: str):
        self.config = config
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        try:  # root may exceed net.core.rmem_max: room for a burst of metadata messages
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.seq = 0
        self.queues: dict[int, Queue] = {}
        for num, delay_s, loss in self.read_config():
            self.bind(num)
            self.queues[num] = Queue(num, delay_s, loss)
        self.sock.setblocking(False)

    def read_config(self) -> list:
        rows = []
        with open(self.config) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    num, delay_ms, loss = line.split()
                    rows.append((int(num), float(delay_ms) / 1000.0, float(loss)))
        return rows

    def reload(self) -> None:
        for num, delay_s, loss in self.read_config():
            q = self.queues.get(num)
            if q is None:
                print(f"wan_delay: queue {num} was not bound at start; ignored", file=sys.stderr)
                continue
            q.delay_s, q.loss = delay_s, loss

    # -- netlink ------------------------------------------------------------
    def message(self, kind: int, queue: int, attrs: bytes, flags: int = 0) -> bytes:
        self.seq += 1
        body = NFGEN_HDR.pack(socket.AF_UNSPEC, 0, queue) + attrs
        return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind,
                              NLM_F_REQUEST | flags, self.seq, 0) + body

    def bind(self, num: int) -> None:
        """Binds queue `num` (metadata only, GSO kept) and waits for the kernel's ack."""
        attrs = (_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
                 + _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                 + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
                 + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO))
                 + _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_GSO)))
        self.sock.send(self.message(NFQNL_MSG_CONFIG, num, attrs, NLM_F_ACK))
        want = self.seq
        while True:
            data = self.sock.recv(65536)
            length, kind, _, seq, _ = NLMSG_HDR.unpack_from(data)
            if kind == NLMSG_ERROR and seq == want:
                (err,) = struct.unpack_from("=i", data, NLMSG_HDR.size)
                if err:
                    raise OSError(-err, f"binding NFQUEUE {num}: {os.strerror(-err)}")
                return

    def verdict(self, queue: int, packet_id: int, verdict: int, batch: bool) -> None:
        attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        kind = NFQNL_MSG_VERDICT_BATCH if batch else NFQNL_MSG_VERDICT
        try:
            self.sock.send(self.message(kind, queue, attrs))
        except OSError as exc:  # the packet may be gone (link down flushes it): not fatal
            if exc.errno not in (errno.ENOENT, errno.ENOBUFS):
                raise

    # -- the loop -----------------------------------------------------------
    def receive(self, buf: bytearray) -> None:
        """Takes in every packet waiting on the socket."""
        view = memoryview(buf)
        while True:
            try:
                n = self.sock.recv_into(buf)
            except BlockingIOError:
                return
            now = time.monotonic()
            off = 0
            while off + NLMSG_HDR.size <= n:
                length, kind, _, _, _ = NLMSG_HDR.unpack_from(view, off)
                if length < NLMSG_HDR.size:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    self.on_packet(view[off:off + length], now)
                off += (length + 3) & ~3

    def on_packet(self, msg: memoryview, now: float) -> None:
        _, _, num = NFGEN_HDR.unpack_from(msg, NLMSG_HDR.size)
        off = NLMSG_HDR.size + NFGEN_HDR.size
        while off + NLA_HDR.size <= len(msg):
            alen, akind = NLA_HDR.unpack_from(msg, off)
            if alen < NLA_HDR.size:
                return
            if akind & 0x3FFF == NFQA_PACKET_HDR:
                (packet_id,) = struct.unpack_from("!I", msg, off + NLA_HDR.size)
                break
            off += (alen + 3) & ~3
        else:
            return
        q = self.queues.get(num)
        if q is None:  # not ours (cannot happen: only bound queues are delivered)
            self.verdict(num, packet_id, NF_ACCEPT, batch=False)
            return
        if q.loss > 0 and random.random() < q.loss:
            q.dropped += 1
            self.verdict(num, packet_id, NF_DROP, batch=False)
            return
        release = max(now + q.delay_s, q.last_release)  # FIFO even when the delay shrinks
        q.last_release = release
        q.held.append((release, packet_id))

    def release_due(self) -> float | None:
        """Accepts every packet that is due (one batch verdict per queue);
        returns the time of the next release, or None when nothing is held."""
        now = time.monotonic()
        following = None
        for q in self.queues.values():
            held = q.held
            last = None
            while held and held[0][0] <= now:
                release, last = held.popleft()
                q.passed += 1
                if now - release > 0.001:
                    q.late_1ms += 1
            if last is not None:
                self.verdict(q.num, last, NF_ACCEPT, batch=True)
            if held and (following is None or held[0][0] < following):
                following = held[0][0]
        return following

    def stats(self) -> str:
        rows = [f"{q.num} ({q.num >> 8}->{q.num & 255}): delay {q.delay_s * 1000:.2f} ms loss {q.loss:.6f} "
                f"passed {q.passed} dropped {q.dropped} late>1ms {q.late_1ms} held {len(q.held)}"
                for q in self.queues.values()]
        return "wan_delay stats\n" + "\n".join(rows)

    def run(self, lifetime: float) -> None:
        flags = {"hup": False, "usr1": False, "stop": False}

        def note(name):
            return lambda *_: flags.__setitem__(name, True)

        signal.signal(signal.SIGHUP, note("hup"))
        signal.signal(signal.SIGUSR1, note("usr1"))
        signal.signal(signal.SIGTERM, note("stop"))
        signal.signal(signal.SIGINT, note("stop"))
        # A signal wakes the select() below (Python would otherwise resume the wait).
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        end = time.monotonic() + lifetime
        buf = bytearray(1 << 16)
        print(f"wan_delay: {len(self.queues)} queues bound", file=sys.stderr, flush=True)
        following = None
        while not flags["stop"] and time.monotonic() < end:
            if flags["hup"]:
                flags["hup"] = False
                self.reload()
            if flags["usr1"]:
                flags["usr1"] = False
                print(self.stats(), file=sys.stderr, flush=True)
            wait_s = 1.0 if following is None else max(0.0, following - time.monotonic())
            ready, _, _ = select.select([self.sock, wake_r], [], [], wait_s)  # timeout in microseconds
            if wake_r in ready:
                wake_r.recv(64)
            self.receive(buf)
            following = self.release_due()
        print(self.stats(), file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help='lines "QUEUE DELAY_MS LOSS"')
    ap.add_argument("--lifetime", type=float, default=4 * 3600,
                    help="seconds until it exits by itself (a lab left up stops carrying traffic)")
    ap.add_argument("--pid-file", help="written once the queues are bound")
    a = ap.parse_args()
    line = DelayLine(a.config)
    if a.pid_file:
        with open(a.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    line.run(a.lifetime)


if __name__ == "__main__":
    main()
