"""`jax-pccl launch` (#21): N peers of a script, a local master unless one is
given, output prefixed per peer, SIGINT/SIGTERM forwarded, a non-zero exit
when a peer failed. Every process is real; the scripts are
examples/data_parallel.py and tests/launch_peer.py."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import harness

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEER = str(HERE / "launch_peer.py")


def alive(pid: int) -> bool:
    """Running (a zombie has ended: only its exit status is left)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def jax_pccl_cli() -> list[str]:
    exe = shutil.which("jax-pccl", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "jax_pccl"]


def launch(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*jax_pccl_cli(), "launch", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=tempfile.gettempdir(),
                          env={**os.environ, **harness.peer_env()})


def test_launch_runs_the_data_parallel_example_with_4_peers():
    r = launch("-n", "4", str(REPO / "examples" / "data_parallel.py"), "--steps", "100")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert re.search(r"^jax-pccl launch: 4 peers of .*data_parallel\.py, master 127\.0\.0\.1:\d+ "
                     r"\(local\)$", r.stderr, re.M), r.stderr[-2000:]
    # Every peer waited for the other 3 (JAX_PCCL_LAUNCH_SIZE), so each printed
    # steps 50 and 100 with 4 peers and the same parameters.
    for step in (50, 100):
        lines = {int(i): rest for i, rest in re.findall(rf"^\[(\d)\] step +{step} (.*)$", r.stdout, re.M)}
        assert sorted(lines) == [0, 1, 2, 3], r.stdout[-3000:]
        assert all(" peers 4 " in rest for rest in lines.values()), lines
        assert len({rest.split("params ")[1] for rest in lines.values()}) == 1, lines
    # Nothing a peer wrote escapes the prefix.
    assert all(re.match(r"^\[\d\] ", line) for line in r.stdout.splitlines()), r.stdout[-2000:]


def test_sigterm_to_the_launcher_stops_every_peer_within_5_s(tmp_path):
    proc = subprocess.Popen([*jax_pccl_cli(), "launch", "-n", "3", PEER, "sleep", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tempfile.gettempdir(), env={**os.environ, **harness.peer_env()})
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("pid.*"))) < 3:
            assert time.monotonic() < deadline and proc.poll() is None, proc.poll()
            time.sleep(0.05)
        pids = [int(p.read_text()) for p in sorted(tmp_path.glob("pid.*"))]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        # Peer 1 ignores SIGTERM: the launcher kills it after its grace.
        while any(alive(pid) for pid in pids):
            assert time.monotonic() - sent < 5.0, [pid for pid in pids if alive(pid)]
            time.sleep(0.05)
        stopped_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids:  # a failed check must not leave peers behind (a killed launcher can't)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    print(f"every peer gone {stopped_s:.2f} s after SIGTERM")
    assert stopped_s < 5.0
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err)
    assert out.count("ready") == 3
    assert "jax-pccl launch: peer 1 killed by signal 9" in err, err
    assert "peer 0 killed by signal 15" in err and "peer 2 killed by signal 15" in err, err


def test_a_failed_peer_fails_the_launch_without_stopping_the_others():
    r = launch("-n", "3", PEER, "fail-one")
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "jax-pccl launch: peer 1 exited with 3" in r.stderr
    assert sorted(re.findall(r"^\[(\d)\] done$", r.stdout, re.M)) == ["0", "2"], r.stdout


def test_launch_against_a_given_master_with_a_secret_file(tmp_path):
    import jax_pccl as pccl

    secret = tmp_path / "secret"
    secret.write_text("launch-test-secret\n")
    secret.chmod(0o600)
    with pccl.Master(host="127.0.0.1", port=0, secret=b"launch-test-secret") as master:
        r = launch("-n", "3", "--master", master.address, "--secret-file", str(secret), PEER,
                   "all-reduce")
        refusals = master.status()["auth_refusals"]
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert f"master {master.address}\n" in r.stderr  # not "(local)": none was started
    sums = re.findall(r"^\[(\d)\] sum (\d+) world (\d+)$", r.stdout, re.M)
    assert sorted(sums) == [("0", "6", "3"), ("1", "6", "3"), ("2", "6", "3")], r.stdout
    assert refusals == 0


@pytest.mark.parametrize("args, message", [
    (["-n", "0", PEER], "jax-pccl launch: -n must be at least 1"),
    (["-n", "2", "/nonexistent/script.py"], "jax-pccl launch: /nonexistent/script.py: no such file"),
    (["-n", "2", "--master", "nohost", PEER, "sleep"], "jax-pccl launch: "),
    ([PEER], "jax-pccl launch: error: the following arguments are required: -n"),
])
def test_launch_usage_errors_are_one_line_and_exit_2(args, message):
    r = launch(*args, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""


def test_an_empty_secret_file_is_a_usage_error(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    r = launch("-n", "2", "--secret-file", str(empty), PEER, "sleep", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "the secret file is empty" in r.stderr and r.stderr.count("\n") == 1
    assert not list(tmp_path.glob("pid.*"))  # no peer was started
