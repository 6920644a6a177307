"""The `jax-pccl` command: the demo trains to identical parameters, and the
master subcommand serves peers and exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import jax_pccl
from native_builds import tool as _tool

# Run from a neutral directory so `python -m` imports the installed package.
NEUTRAL_CWD = tempfile.gettempdir()


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jax_pccl", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=NEUTRAL_CWD)


def _start_master(*extra: str) -> tuple[subprocess.Popen, int]:
    """A master on a port the OS picked (port 0), read back from its banner.
    Its stderr goes to a file: proc.log_path."""
    log = tempfile.NamedTemporaryFile("w", prefix="pccl-master-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jax_pccl", "master", "--host", "127.0.0.1", "--port", "0",
         *extra], stdout=subprocess.PIPE, stderr=log, text=True, cwd=NEUTRAL_CWD)
    log.close()
    proc.log_path = log.name
    line = proc.stdout.readline()
    assert "listening on 127.0.0.1:" in line, line + _log(proc)
    return proc, int(line.split("listening on 127.0.0.1:")[1].split()[0])


def _log(proc) -> str:
    with open(proc.log_path) as f:
        return f.read()


def _wait_for_log(proc, needle: str, timeout: float = 60.0) -> str:
    """The master's log once it holds `needle` (fails at the deadline)."""
    end = time.monotonic() + timeout
    while needle not in (text := _log(proc)):
        assert time.monotonic() < end, f"{needle!r} not logged within {timeout} s:\n{text}"
        time.sleep(0.05)
    return text


def test_demo_trains_and_peers_end_bit_identical():
    result = subprocess.run(
        [sys.executable, "-m", "jax_pccl", "demo", "--peers", "2", "--steps", "40",
         "--timeout", "150"],
        capture_output=True, text=True, timeout=180, cwd=NEUTRAL_CWD,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "parameters bit-identical on all peers: True" in result.stdout
    losses = [float(line.split()[3]) for line in result.stdout.splitlines()
              if line.startswith("step ")]
    assert len(losses) >= 2 and losses[-1] < losses[0], result.stdout


def test_master_command_serves_peers_logs_joins_and_stops_on_sigterm():
    proc, port = _start_master()
    try:
        with jax_pccl.Communicator(f"127.0.0.1:{port}", timeout=5.0) as comm:
            comm.connect(timeout=10.0)
            assert comm.world_size == 1 and comm.rank == 0
            peer_id = comm.peer_id
        # info is the master's default level: joins and leaves are logged.
        _wait_for_log(proc, f"peer {peer_id} registered")
        _wait_for_log(proc, f"dropping peer {peer_id}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_master_log_level_error_keeps_joins_quiet():
    proc, port = _start_master("--log-level", "error")
    try:
        with jax_pccl.Communicator(f"127.0.0.1:{port}", timeout=5.0) as comm:
            comm.connect(timeout=10.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "registered" not in _log(proc) and "master stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_in_use_is_one_line_not_a_traceback():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli("master", "--host", "127.0.0.1", "--port", str(port), timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"jax-pccl master: cannot listen on 127.0.0.1:{port}: Address already in use", lines
    assert "Traceback" not in result.stderr, result.stderr


def test_version_and_help():
    version = _cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"jax-pccl {jax_pccl.__version__}"
    help_text = _cli("--help").stdout
    assert "SUPPRESS" not in help_text and "_demo" not in help_text, help_text
    master_help = _cli("master", "--help").stdout
    assert "--heartbeat-timeout" in master_help and "--log-level" in master_help
    assert "--probe-seconds" in master_help and "--probe-connections" in master_help


def test_bad_heartbeat_timeout_is_a_usage_error():
    result = _cli("master", "--heartbeat-timeout", "0.5")
    assert result.returncode == 2 and "heartbeat" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_from_the_source_tree_says_what_to_do():
    result = subprocess.run([sys.executable, "-c", "import jax_pccl"], capture_output=True,
                            text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "source tree without the compiled engine" in last and "cd /tmp" in last, last
    assert "circular import" not in result.stderr


# --- the installed console script itself ---------------------------------------------------

def _script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("jax-pccl"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=NEUTRAL_CWD)


def test_console_script_version_and_help():
    from importlib.metadata import version

    result = _script("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"jax-pccl {version('jax_pccl')}" == f"jax-pccl {jax_pccl.__version__}"
    help_text = _script("--help")
    assert help_text.returncode == 0 and help_text.stderr == "", help_text.stderr
    assert help_text.stdout.startswith("usage: jax-pccl") and "master" in help_text.stdout


def test_console_script_master_listens_and_exits_0_on_sigterm():
    proc = subprocess.Popen([_tool("jax-pccl"), "master", "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=NEUTRAL_CWD, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # it really listens there
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "master stopped" in proc.stdout.read()
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("args,names", [
    (["frobnicate"], "frobnicate"),
    ([], "command"),
    (["master", "--port", "x"], "--port"),
    (["master", "--no-such-flag"], "--no-such-flag"),
    (["master", "--probe-connections", "0"], "--probe-connections"),
    (["master", "--probe-connections", "33"], "--probe-connections"),
    (["master", "--probe-seconds", "0"], "--probe-seconds"),
    (["master", "--probe-seconds", "61"], "--probe-seconds"),
    (["master", "--http-port", "99999"], "--http-port"),  # was a traceback (OverflowError)
    (["status", "--master", "127.0.0.1:1", "--timeout", "x"], "--timeout"),
])
def test_console_script_usage_errors_are_one_line(args, names):
    """API.md: errors are one line on stderr, exit 2 (argparse printed its
    usage block first)."""
    result = _script(*args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jax-pccl") and names in lines[0], lines
    assert "Traceback" not in result.stderr
