"""Shared-secret authentication on the wire, with real processes.

The master runs as `python -m jax_pccl master --secret-file ...` with
JAX_PCCL_LOG=info, so its log lines can be checked. Peers that must work run
as separate processes and all_reduce; peers that must be refused connect from
this process, so the test can inspect the exception they raise. A small TCP
proxy records the bytes a legitimate client sends, and the test replays them.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from hostile import wire

import harness

NEUTRAL_CWD = tempfile.gettempdir()
SECRET = b"test secret \x00\xff with odd bytes"
CONNECT_TIMEOUT = 10.0

FRAME_HEADER = 12
T_WELCOME, T_AUTH_CHALLENGE, T_AUTH_RESULT = 2, 11, 13

PEER_CODE = r"""
import json, sys, time
import numpy as np
import jax_pccl as pccl

address, secret_hex, index, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
comm = pccl.Communicator(address, secret=bytes.fromhex(secret_hex), timeout=20.0)
comm.connect(timeout=60.0)
deadline = time.monotonic() + 60.0
while comm.group_world_size < n and time.monotonic() < deadline:
    comm.update_topology()
    time.sleep(0.01)
y = pccl.all_reduce(np.full(6, index + 1, np.float32), comm, op="sum")
print("RESULT " + json.dumps({"sum": np.asarray(y).tolist(), "world": comm.world_size}), flush=True)
comm.close()
"""


class MasterProcess:
    def __init__(self, workdir, secret_file=None, env_secret=None):
        # Port 0: the OS picks a free port, read back from the banner (a
        # port picked by bind-and-release could be taken again meanwhile).
        self.log_path = os.path.join(workdir, f"master-{id(self)}.log")
        env = dict(os.environ, JAX_PCCL_LOG="info")
        env.pop("JAX_PCCL_SECRET", None)
        if env_secret is not None:
            env["JAX_PCCL_SECRET"] = env_secret
        cmd = [sys.executable, "-m", "jax_pccl", "master", "--host", "127.0.0.1",
               "--port", "0"]
        if secret_file is not None:
            cmd += ["--secret-file", str(secret_file)]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     cwd=NEUTRAL_CWD, env=env)
        self.banner = self.proc.stdout.readline()
        self.port = int(self.banner.split("listening on 127.0.0.1:")[1].split()[0]) \
            if "listening on 127.0.0.1:" in self.banner else 0
        self.address = f"127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_for_log(self, needle: str, more_than: int = 0, timeout: float = 5.0) -> str:
        """The log once it holds more than `more_than` lines with `needle` (or at the timeout)."""
        end = time.monotonic() + timeout
        while True:
            text = self.log()
            if text.count(needle) > more_than or time.monotonic() > end:
                return text
            time.sleep(0.05)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._log.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("auth")


@pytest.fixture(scope="module")
def secret_file(workdir):
    path = workdir / "secret"
    path.write_bytes(SECRET + b"\n")  # one trailing newline: stripped by the CLI
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def master(workdir, secret_file):
    m = MasterProcess(workdir, secret_file=secret_file)
    try:
        assert m.address in m.banner and "shared-secret authentication" in m.banner, (
            m.banner + m.log())
        yield m
    finally:
        m.close()


def _connect_error(pccl, address, secret, group=0):
    """connect() that must fail: returns (exception, seconds it took)."""
    comm = pccl.Communicator(address, peer_group=group, secret=secret, timeout=CONNECT_TIMEOUT)
    t0 = time.monotonic()
    try:
        comm.connect(timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the type is what the test checks
        return exc, time.monotonic() - t0
    finally:
        comm.close()
    pytest.fail(f"connect() with secret={secret!r} to {address} was accepted")


def test_right_secret_two_peer_processes_all_reduce(pccl, master):
    procs = [subprocess.Popen([sys.executable, "-c", PEER_CODE, master.address, SECRET.hex(),
                               str(i), "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=NEUTRAL_CWD, env=harness.peer_env(), start_new_session=True)
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=150)
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        [line] = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        result = json.loads(line[len("RESULT "):])
        assert result["sum"] == [3.0] * 6 and result["world"] == 2, out[-3000:]
    log = master.log()
    assert "authentication failed" not in log, log[-3000:]


@pytest.mark.parametrize("secret,expect,master_says", [
    (b"not the secret", "wrong secret", "authentication failed (wrong secret)"),
    ("not the secret either", "wrong secret", "authentication failed (wrong secret)"),
    (None, "no secret but the remote requires one", "remote did not authenticate"),
])
def test_wrong_or_missing_secret_refused_at_connect(pccl, master, secret, expect, master_says):
    before = master.log().count(master_says)
    exc, took = _connect_error(pccl, master.address, secret)
    assert isinstance(exc, pccl.PcclError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert f"authentication with master {master.address} failed" in message, message
    assert expect in message, message
    # A verdict, not the timeout: half of it keeps the two apart under load.
    assert took < CONNECT_TIMEOUT / 2, f"refused only after {took:.1f}s (timeout {CONNECT_TIMEOUT}s): {message}"
    assert SECRET.decode("latin-1") not in message
    # The master logged the refusal with the remote address.
    log = master.wait_for_log(master_says, more_than=before)
    lines = [ln for ln in log.splitlines() if master_says in ln]
    assert len(lines) > before, log[-3000:]
    assert "WARN" in lines[-1] and "dropping connection from 127.0.0.1:" in lines[-1], lines[-1]


def test_master_keeps_serving_after_refusals(pccl, master):
    _connect_error(pccl, master.address, b"wrong again")
    with pccl.Communicator(master.address, peer_group=3, secret=SECRET, timeout=10.0) as comm:
        comm.connect(timeout=20.0)
        assert comm.group_world_size == 1


def test_secret_never_logged(master):
    text = master.log() + master.banner
    assert SECRET.decode("latin-1") not in text and SECRET.hex() not in text
    assert "test secret" not in text


def _read_frames_until_eof(sock: socket.socket, timeout: float) -> tuple[list, bool]:
    """All frames the remote sends until it closes; (frames, closed)."""
    sock.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    closed = False
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    frames = []
    while len(data) >= FRAME_HEADER:
        magic, version, ftype, length = struct.unpack("<4sHHI", data[:FRAME_HEADER])
        assert magic == b"PCCL" and version == wire.VERSION, data[:FRAME_HEADER]
        frames.append((ftype, data[FRAME_HEADER:FRAME_HEADER + length]))
        data = data[FRAME_HEADER + length:]
    return frames, closed


class RecordingProxy:
    """Forwards one client connection to the master; records client->master bytes."""

    def __init__(self, target_port: int):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.target_port = target_port
        self.recorded = bytearray()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _pump(self, src, dst, record):
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if record:
                    self.recorded += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _run(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        back = threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True)
        back.start()
        self._pump(client, upstream, True)
        back.join(5)
        client.close()
        upstream.close()
        self.done.set()

    def close(self):
        self.listener.close()


def test_replayed_handshake_refused(pccl, master):
    proxy = RecordingProxy(master.port)
    try:
        # A legitimate peer connects through the proxy (its own group: accepted at once).
        with pccl.Communicator(f"127.0.0.1:{proxy.port}", peer_group=11, secret=SECRET,
                               timeout=10.0) as comm:
            comm.connect(timeout=20.0)
            assert comm.world_size >= 1
        assert proxy.done.wait(10), "proxy did not see the connection end"
    finally:
        proxy.close()
    recorded = bytes(proxy.recorded)
    assert len(recorded) >= FRAME_HEADER + 71, recorded  # AUTH_RESPONSE, HELLO, ...
    assert SECRET not in recorded

    # Replay the client's bytes verbatim on a fresh connection.
    with socket.create_connection(("127.0.0.1", master.port), timeout=5) as s:
        replay_from = "%s:%d" % s.getsockname()[:2]
        s.sendall(recorded)
        frames, closed = _read_frames_until_eof(s, 5.0)
    types = [t for t, _ in frames]
    assert types == [T_AUTH_CHALLENGE, T_AUTH_RESULT], types
    assert T_WELCOME not in types  # never registered
    result = frames[1][1]
    assert len(result) == 200 and result[:4] == b"PCAU" and result[6] == 1, result[:8]  # refused
    assert b"wrong secret" in result
    assert closed, "the master kept the replayed connection open"
    log = master.wait_for_log(f"dropping connection from {replay_from}")
    [line] = [ln for ln in log.splitlines() if f"dropping connection from {replay_from}" in ln]
    assert "authentication failed (wrong secret)" in line, line


def test_hello_without_handshake_refused(master):
    # A HELLO frame first, as a client without the handshake would send (the
    # master must refuse it unparsed).
    payload = b"\x00" * 26
    with socket.create_connection(("127.0.0.1", master.port), timeout=5) as s:
        s.sendall(struct.pack("<4sHHI", b"PCCL", 1, 1, len(payload)) + payload)
        frames, closed = _read_frames_until_eof(s, 5.0)
    assert [t for t, _ in frames] == [T_AUTH_CHALLENGE, T_AUTH_RESULT] and closed, frames


def test_env_secret_and_no_auth_master(pccl, workdir):
    """The CLI also takes $JAX_PCCL_SECRET; a master without a secret refuses peers that have one."""
    with_env = MasterProcess(workdir, env_secret="env secret")
    without = MasterProcess(workdir)
    try:
        assert "shared-secret authentication" in with_env.banner, with_env.banner + with_env.log()
        assert "no authentication" in without.banner, without.banner + without.log()
        with pccl.Communicator(with_env.address, secret="env secret", timeout=10.0) as comm:
            comm.connect(timeout=20.0)
        exc, took = _connect_error(pccl, without.address, "a secret")
        assert isinstance(exc, pccl.PcclError) and took < CONNECT_TIMEOUT / 2, (exc, took)
        assert "has a secret but the remote does not use one" in str(exc), str(exc)
        log = without.wait_for_log("remote has a secret but this peer has none")
        assert "remote has a secret but this peer has none" in log, log[-3000:]
        with pccl.Communicator(without.address, timeout=10.0) as comm:
            comm.connect(timeout=20.0)
    finally:
        with_env.close()
        without.close()


def test_cli_refuses_empty_secret_file(workdir):
    empty = workdir / "empty-secret"
    empty.write_bytes(b"\n")
    result = subprocess.run(
        [sys.executable, "-m", "jax_pccl", "master", "--port", "0",
         "--secret-file", str(empty)],
        capture_output=True, text=True, timeout=60, cwd=NEUTRAL_CWD,
    )
    assert result.returncode == 2 and "empty" in result.stderr, result.stderr


def test_secret_argument_checks(pccl):
    with pytest.raises(ValueError, match="secret=None"):
        pccl.Master(secret=b"")
    with pytest.raises(ValueError, match="secret=None"):
        pccl.Communicator("127.0.0.1:1", secret="")
    with pytest.raises(TypeError, match="secret"):
        pccl.Communicator("127.0.0.1:1", secret=1234)
    # str and its UTF-8 bytes are the same secret.
    with pccl.Master(secret="sécret") as m:
        with pccl.Communicator(m.address, secret="sécret".encode(), timeout=10.0) as comm:
            comm.connect(timeout=20.0)
            assert comm.world_size == 1
