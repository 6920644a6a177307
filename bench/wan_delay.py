#!/usr/bin/env python3
"""A constant-delay line for bench/wan_lab.sh on kernels without sch_netem.

    python3 bench/wan_delay.py --config FILE [--lifetime SECONDS] [--pid-file FILE]

Runs inside the lab's router namespace, where iptables sends every forwarded
packet of path i -> j to NFQUEUE queue i*256 + j. The config file has one line
per queue, "QUEUE DELAY_MS LOSS [RATE_MBIT QUEUE_MS]" (LOSS a probability,
0..1). Each packet is dropped with that probability on arrival, otherwise
accepted DELAY_MS after it arrived, in arrival order (FIFO per queue: one
batch verdict releases every packet that is due). With a RATE_MBIT above 0
the path also has a bottleneck of its own (paths between sites differ on the
internet; the access links' HTB shapes a host, not a path): a packet leaves
it len/rate after the previous one, then travels DELAY_MS; one that would
wait longer than QUEUE_MS (or than 256 KiB take) for the bottleneck is
dropped (a tail-drop buffer). Only a packet's first bytes come to userspace (NFQNL_COPY_PACKET of
COPY_RANGE bytes: in metadata-only mode the kernel leaves out NFQA_CAP_LEN,
the length); GSO super-packets stay whole.

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
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_CAP_LEN = 1, 2, 13
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
COPY_RANGE = 20  # bytes of each packet copied to us: only so that the kernel adds CAP_LEN
NFQA_CFG_F_GSO = 1 << 2
NF_DROP, NF_ACCEPT = 0, 1
MIN_QUEUE_BYTES = 256 << 10  # a path's bottleneck buffer holds at least this much
QUEUE_MAXLEN = 100_000  # packets a queue may hold in the kernel (a long fat pipe's worth)

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, portid
NFGEN_HDR = struct.Struct("!BBH")  # family, version, res_id (the queue number)
NLA_HDR = struct.Struct("=HH")  # len, type


def _attr(kind: int, payload: bytes) -> bytes:
    pad = -len(payload) % 4
    return NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload + b"\0" * pad


class Queue:
    """One path's FIFO: (release time, packet id), its bottleneck and its counters."""

    __slots__ = ("num", "delay_s", "loss", "bytes_per_s", "queue_s", "held", "last_release",
                 "busy_until", "passed", "dropped", "queue_drops", "late_1ms")

    def __init__(self, num: int, delay_s: float, loss: float, bytes_per_s: float = 0.0,
                 queue_s: float = 0.05):
        self.num = num
        self.configure(delay_s, loss, bytes_per_s, queue_s)
        self.held: collections.deque = collections.deque()
        self.last_release = 0.0
        self.busy_until = 0.0  # when the path's bottleneck has sent what it holds
        self.passed = self.dropped = self.queue_drops = self.late_1ms = 0

    def configure(self, delay_s: float, loss: float, bytes_per_s: float, queue_s: float) -> None:
        self.delay_s, self.loss, self.bytes_per_s, self.queue_s = delay_s, loss, bytes_per_s, queue_s

    def admit(self, now: float, length: int) -> float | None:
        """The release time of a packet of `length` bytes arriving now, or
        None when the bottleneck's buffer is full (tail drop)."""
        sent = now
        if self.bytes_per_s > 0:
            start = max(now, self.busy_until)
            # At least 256 KiB, as the lab's bfifo: a GSO super-packet is up to
            # 64 KiB, and a buffer of one or two of them drops whole bursts.
            if start - now > max(self.queue_s, MIN_QUEUE_BYTES / self.bytes_per_s):
                self.queue_drops += 1
                return None
            sent = self.busy_until = start + length / self.bytes_per_s
        release = max(sent + self.delay_s, self.last_release)  # FIFO even when the delay shrinks
        self.last_release = release
        return release


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
        for num, *params in self.read_config():
            self.bind(num)
            self.queues[num] = Queue(num, *params)
        self.sock.setblocking(False)

    def read_config(self) -> list:
        rows = []
        with open(self.config) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    num, delay_ms, loss, *bottleneck = line.split()
                    rate_mbit, queue_ms = (float(v) for v in bottleneck) if bottleneck else (0.0, 50.0)
                    rows.append((int(num), float(delay_ms) / 1000.0, float(loss),
                                 rate_mbit * 1e6 / 8, queue_ms / 1000.0))
        return rows

    def reload(self) -> None:
        for num, *params in self.read_config():
            q = self.queues.get(num)
            if q is None:
                print(f"wan_delay: queue {num} was not bound at start; ignored", file=sys.stderr)
                continue
            q.configure(*params)

    # -- netlink ------------------------------------------------------------
    def message(self, kind: int, queue: int, attrs: bytes, flags: int = 0) -> bytes:
        self.seq += 1
        body = NFGEN_HDR.pack(socket.AF_UNSPEC, 0, queue) + attrs
        return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind,
                              NLM_F_REQUEST | flags, self.seq, 0) + body

    def bind(self, num: int) -> None:
        """Binds queue `num` (the first COPY_RANGE bytes, GSO kept) and waits for the kernel's ack."""
        attrs = (_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
                 + _attr(NFQA_CFG_PARAMS, struct.pack("!IB", COPY_RANGE, NFQNL_COPY_PACKET))
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
        packet_id, length = None, COPY_RANGE  # no CAP_LEN: the packet was no longer than that
        while off + NLA_HDR.size <= len(msg):
            alen, akind = NLA_HDR.unpack_from(msg, off)
            if alen < NLA_HDR.size:
                return
            if akind & 0x3FFF == NFQA_PACKET_HDR:
                (packet_id,) = struct.unpack_from("!I", msg, off + NLA_HDR.size)
            elif akind & 0x3FFF == NFQA_CAP_LEN:
                (length,) = struct.unpack_from("!I", msg, off + NLA_HDR.size)
            off += (alen + 3) & ~3
        if packet_id is None:
            return
        q = self.queues.get(num)
        if q is None:  # not ours (cannot happen: only bound queues are delivered)
            self.verdict(num, packet_id, NF_ACCEPT, batch=False)
            return
        if q.loss > 0 and random.random() < q.loss:
            q.dropped += 1
            self.verdict(num, packet_id, NF_DROP, batch=False)
            return
        release = q.admit(now, length)
        if release is None:
            self.verdict(num, packet_id, NF_DROP, batch=False)
            return
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
                f"rate {q.bytes_per_s * 8 / 1e6:g} Mbit/s passed {q.passed} dropped {q.dropped} "
                f"queue_drops {q.queue_drops} late>1ms {q.late_1ms} held {len(q.held)}"
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
    ap.add_argument("--config", required=True, help='lines "QUEUE DELAY_MS LOSS [RATE_MBIT QUEUE_MS]"')
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
