"""``jax-pccl launch``: N local peer processes of one script, and a master if
none is given.

Each peer runs ``python script.py args...`` (this interpreter) with
``JAX_PCCL_MASTER`` (and ``JAX_PCCL_SECRET_FILE`` with ``--secret-file``) in
its environment, which ``Communicator.from_env()`` reads, plus
``JAX_PCCL_LAUNCH_INDEX`` (0..N-1: a seed or a data shard, not a rank: ranks
follow the master's ring) and ``JAX_PCCL_LAUNCH_SIZE`` (N). Every line a peer
writes is prefixed with ``[i] `` (stdout to stdout, stderr to stderr).

The peers run in process groups of their own, so a Ctrl-C reaches them once,
through the launcher: SIGINT and SIGTERM are forwarded to every peer, and a
peer still running ``STOP_GRACE_S`` later is killed. A peer that fails does
not stop the others (the run is fault tolerant: they go on without it); the
launcher's exit status is then non-zero: the first failed peer's status
(128 + N for a signal N), or 128 + N when the launcher itself was stopped by
signal N.

Across machines, run ``jax-pccl master`` once and ``jax-pccl launch --master
HOST:PORT`` on every machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from .address import parse_address, read_secret_file
from .communicator import MASTER_ENV, SECRET_FILE_ENV

STOP_GRACE_S = 3.0  # after a forwarded SIGINT/SIGTERM, then SIGKILL
INDEX_ENV = "JAX_PCCL_LAUNCH_INDEX"
SIZE_ENV = "JAX_PCCL_LAUNCH_SIZE"


@dataclass
class Peer:
    index: int
    proc: subprocess.Popen
    pumps: list = field(default_factory=list)


class _Output:
    """Prefixes each line of a peer's stream and writes it whole (one lock
    for all peers, so that lines of different peers never interleave)."""

    def __init__(self):
        self.lock = threading.Lock()

    def pump(self, stream, sink, prefix: bytes) -> threading.Thread:
        def run():
            with stream:
                for line in iter(stream.readline, b""):
                    if not line.endswith(b"\n"):
                        line += b"\n"
                    with self.lock:
                        sink.write(prefix + line)
                        sink.flush()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: 128 + N for signal N."""
    return 128 - returncode if returncode < 0 else returncode


def check_script(script: str) -> str:
    if not os.path.isfile(script):
        raise ValueError(f"{script}: no such file")
    return os.path.abspath(script)


def start_peers(n: int, script: str, script_args: list, env: dict) -> list[Peer]:
    out = _Output()
    peers = []
    for i in range(n):
        proc = subprocess.Popen(
            [sys.executable, script, *script_args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**env, INDEX_ENV: str(i), SIZE_ENV: str(n)},
            start_new_session=True)  # a terminal's Ctrl-C reaches them through us, once
        prefix = f"[{i}] ".encode()
        peer = Peer(i, proc)
        peer.pumps = [out.pump(proc.stdout, sys.stdout.buffer, prefix),
                      out.pump(proc.stderr, sys.stderr.buffer, prefix)]
        peers.append(peer)
    return peers


def signal_peers(peers: list[Peer], sig: int) -> None:
    for p in peers:
        if p.proc.poll() is None:
            try:
                os.killpg(p.proc.pid, sig)
            except ProcessLookupError:
                pass


def wait_peers(peers: list[Peer], stop: dict) -> None:
    """Until every peer has ended; after a forwarded signal, at most
    STOP_GRACE_S more, then the rest are killed."""
    kill_at = None
    while any(p.proc.poll() is None for p in peers):
        if stop["signal"] is not None and kill_at is None:
            kill_at = time.monotonic() + STOP_GRACE_S
        if kill_at is not None and time.monotonic() >= kill_at:
            signal_peers(peers, signal.SIGKILL)
        time.sleep(0.05)
    for p in peers:
        for t in p.pumps:
            t.join(timeout=5)


def run(n: int, script: str, script_args: list, master: str | None, secret_file: str | None) -> int:
    from .master import Master

    script = check_script(script)
    secret = None
    if secret_file is not None:
        secret = read_secret_file(secret_file)  # OSError / ValueError: a usage error
        secret_file = os.path.abspath(secret_file)
    if master is not None:
        parse_address(master)  # ValueError: a usage error
    local = None if master is not None else Master(host="127.0.0.1", port=0, secret=secret)
    address = master or local.address
    del secret
    env = {**os.environ, MASTER_ENV: address}
    if secret_file is not None:
        env[SECRET_FILE_ENV] = secret_file
    print(f"jax-pccl launch: {n} peers of {os.path.relpath(script)}, master {address}"
          f"{' (local)' if local else ''}", file=sys.stderr, flush=True)
    stop = {"signal": None}
    peers: list[Peer] = []

    def forward(signum, _frame):
        stop["signal"] = stop["signal"] or signum
        signal_peers(peers, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        peers.extend(start_peers(n, script, script_args, env))
        if stop["signal"] is not None:  # a signal while they started: they get it too
            signal_peers(peers, stop["signal"])
        wait_peers(peers, stop)
    finally:
        signal_peers(peers, signal.SIGKILL)  # only if we leave by an exception
        for s, h in previous.items():
            signal.signal(s, h)
        if local is not None:
            local.close()
    return report(peers, stop["signal"])


def report(peers: list[Peer], stopped_by: int | None) -> int:
    failed = [p for p in peers if p.proc.returncode != 0]
    for p in failed:
        rc = p.proc.returncode
        how = f"killed by signal {-rc}" if rc < 0 else f"exited with {rc}"
        print(f"jax-pccl launch: peer {p.index} {how}", file=sys.stderr, flush=True)
    if stopped_by is not None:
        return 128 + stopped_by
    return exit_status(failed[0].proc.returncode) if failed else 0
