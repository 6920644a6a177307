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

import jax_pccl

# Run from a neutral directory so `python -m` imports the installed package.
NEUTRAL_CWD = tempfile.gettempdir()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_master_command_serves_peers_and_stops_on_sigterm():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jax_pccl", "master", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=NEUTRAL_CWD,
    )
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line, line
        with jax_pccl.Communicator(f"127.0.0.1:{port}", timeout=5.0) as comm:
            comm.connect(timeout=10.0)
            assert comm.world_size == 1 and comm.rank == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
