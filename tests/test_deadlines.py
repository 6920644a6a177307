"""Nothing waits without bound, and a failure reads as what it is.

Real processes on 127.0.0.1 (scripts in tests/fault/); every wait of the
test itself is bounded, so a hang fails the test instead of hanging pytest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import jax_pccl as pccl

FAULT = Path(__file__).parent / "fault"


def _spawn(script: str, *args, stderr=subprocess.DEVNULL, env_extra=None,
           stdin=subprocess.DEVNULL) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, str(FAULT / script), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=stderr, stdin=stdin, text=True,
                            env=env, start_new_session=True)


def _wait_line(proc: subprocess.Popen, line: str, timeout: float) -> None:
    """Reads proc's stdout until `line` (bounded: a watchdog kills proc)."""
    deadline = time.monotonic() + timeout
    watchdog = subprocess.Popen(["sh", "-c", f"sleep {timeout}; kill -9 {proc.pid} 2>/dev/null"],
                                start_new_session=True)
    try:
        for got in proc.stdout:
            if got.strip() == line:
                return
        pytest.fail(f"process exited before printing {line!r} (rc {proc.wait()})")
    finally:
        watchdog.kill()
        watchdog.wait()
    assert time.monotonic() < deadline


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        _kill(p)


def test_uncaught_peer_failure_prints_one_clear_error(procs):
    """A survivor that does not catch the failure sees one PeerFailureError:
    not XLA's "Error dispatching computation:" once per step in flight, and
    no JAX atexit tracebacks afterwards."""
    with pccl.Master() as master:
        survivor = _spawn("uncaught_survivor.py", master.address, 2, stderr=subprocess.PIPE)
        procs.append(survivor)
        victim = _spawn("uncaught_survivor.py", master.address, 2)
        procs.append(victim)
        _wait_line(survivor, "training", 90)
        _wait_line(victim, "training", 90)
        time.sleep(1.0)  # several steps in flight on the survivor
        os.killpg(victim.pid, signal.SIGKILL)
        try:
            _, err = survivor.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the survivor did not exit within 60 s of its peer's death")
    assert survivor.returncode == 1, err[-3000:]
    assert "Error dispatching computation" not in err, err[-3000:]
    assert "Exception ignored" not in err, err[-3000:]
    assert err.count("Traceback (most recent call last)") == 1, err[-3000:]
    final = [line for line in err.splitlines() if "Error:" in line]
    assert len(final) == 1 and final[0].startswith("jax_pccl.errors.PeerFailureError: "), err[-3000:]


def test_update_topology_discards_unwaited_starts_only_after_a_failure(procs):
    """A start never waited for: update_topology() refuses it while nothing
    failed, discards it once a peer died, and the late wait says why."""
    with pccl.Master() as master:
        peer = _spawn("discard_peer.py", master.address, stdin=subprocess.PIPE)
        procs.append(peer)
        time.sleep(0.5)
        victim = _spawn("discard_peer.py", master.address, "--victim")
        procs.append(victim)
        _wait_line(victim, "joined", 60)
        _wait_line(peer, "started", 60)
        os.killpg(victim.pid, signal.SIGKILL)
        time.sleep(1.0)  # the start has failed on the broken ring
        peer.stdin.write("victim killed\n")
        peer.stdin.flush()
        result = _last_json(peer, 60, "recovery with a started, unwaited all_reduce")
    healthy = result["healthy_update"]
    assert healthy.get("error") == "PcclError" and "not yet waited" in healthy["message"], result
    assert result["update_after_failure"] == {"ok": True}, result
    assert result["world"] == 1, result
    late = result["late_wait"]
    assert late.get("error") == "PeerFailureError" and "discarded" in late["message"], result


def _start_master(port: int) -> subprocess.Popen:
    # A long heartbeat bound: the test freezes a peer on purpose, and it must
    # stay a member (it is the holder the other one fetches from).
    code = ("import time, jax_pccl as p; "
            f"m = p.Master(host='127.0.0.1', port={port}, heartbeat_timeout=60); "
            "print('listening', flush=True); time.sleep(3600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=tempfile.gettempdir(), start_new_session=True)
    assert "listening" in proc.stdout.readline()
    return proc


def _result(path: str, proc: subprocess.Popen, timeout: float, what: str) -> dict:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: still running after {timeout} s")
    with open(path) as f:
        return json.load(f)


def test_master_restart_during_sync_fails_the_sync_instead_of_hanging(procs, tmp_path):
    """Peer 1 fetches from peer 0 (frozen meanwhile) while the master is
    killed and restarted at the same address. The restarted master knows
    nothing of the round, so peer 1's report and wait must fail (peer
    failure or master unreachable) rather than wait for it forever."""
    probe = pccl.Master()
    port = probe.port
    probe.close()
    master = _start_master(port)
    procs.append(master)
    out = [str(tmp_path / f"peer{i}.json") for i in range(2)]
    holder = _spawn("sync_peer.py", f"127.0.0.1:{port}", 0, 0.0, out[0])
    fetcher = _spawn("sync_peer.py", f"127.0.0.1:{port}", 1, 3.0, out[1])
    procs += [holder, fetcher]
    _wait_line(holder, "syncing", 90)
    time.sleep(1.0)  # its request is with the master
    os.kill(holder.pid, signal.SIGSTOP)  # so the fetcher's transfer stalls
    _wait_line(fetcher, "syncing", 30)
    time.sleep(1.5)  # plan received, fetching from the frozen holder
    os.killpg(master.pid, signal.SIGKILL)
    master.wait()
    master = _start_master(port)
    procs.append(master)
    time.sleep(2.5)  # both re-register with the restarted master
    os.kill(holder.pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    for i, proc in enumerate((holder, fetcher)):
        result = _result(out[i], proc, 40, f"peer {i} in sync_shared_state after the restart")
        assert result.get("error") in ("PeerFailureError", "MasterUnreachableError"), result
    assert time.monotonic() - resumed_at < 30


def test_sync_shared_state_waits_for_jitted_collectives_in_flight(procs, tmp_path):
    """Peer 1's jitted all_reduce runs about a second after its call returned
    (compute first); it calls sync_shared_state at once. The sync must come
    after the collective (as update_topology() does); otherwise it holds the
    engine while peer 0's collective, already running, waits for peer 1's,
    and that collective fails after `timeout` (8 s)."""
    with pccl.Master() as master:
        out = [str(tmp_path / f"peer{i}.json") for i in range(2)]
        peers = [_spawn("ordered_sync_peer.py", master.address, 0, 0, 0.5, out[0]),
                 _spawn("ordered_sync_peer.py", master.address, 1, 5000, 0.0, out[1])]
        procs += peers
        results = [_result(out[i], p, 90, f"peer {i}") for i, p in enumerate(peers)]
    for result in results:
        assert result.get("sum") == [3] * 8, result
        assert result.get("sync") == 1, result


@pytest.fixture(scope="module")
def slow_dns(tmp_path_factory) -> str:
    """The LD_PRELOAD shim of tests/fault/slow_dns.c, built for this run."""
    lib = tmp_path_factory.mktemp("slow-dns") / "slow_dns.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(FAULT / "slow_dns.c"),
                    "-ldl"], check=True, timeout=120)
    return str(lib)


def _preloading(lib: str) -> str:
    """LD_PRELOAD with `lib` after what is preloaded already: under a
    sanitized run (tests/sanitized_suite.py) its runtime must stay first."""
    return " ".join(filter(None, [os.environ.get("LD_PRELOAD"), lib]))


def _last_json(proc: subprocess.Popen, timeout: float, what: str) -> dict:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: still running after {timeout} s")
    return json.loads(out.strip().splitlines()[-1])


def test_connect_gives_up_on_a_slow_name_lookup_within_timeout(procs, slow_dns):
    with pccl.Master() as master:
        peer = _spawn("slow_dns_peer.py", "connect", master.port,
                      env_extra={"LD_PRELOAD": _preloading(slow_dns), "SLOW_DNS_ALWAYS": "1"})
        procs.append(peer)
        result = _last_json(peer, 60, "connect() to a slowly resolving master")
    assert result["error"] == "MasterUnreachableError", result
    assert result["elapsed"] < 1.0 + 1.5, result  # timeout=1.0; the lookup takes 30 s


def test_close_does_not_wait_for_a_reconnection_stuck_in_a_name_lookup(procs, slow_dns):
    master = pccl.Master()
    try:
        peer = _spawn("slow_dns_peer.py", "close", master.port, stdin=subprocess.PIPE,
                      env_extra={"LD_PRELOAD": _preloading(slow_dns)})
        procs.append(peer)
        _wait_line(peer, "connected", 60)
    finally:
        master.close()
    peer.stdin.write("master killed\n")
    peer.stdin.flush()
    result = _last_json(peer, 60, "close() while reconnecting")
    assert result["elapsed"] < 1.0 + 1.5, result


@pytest.mark.parametrize("jitted", [False, True])
def test_sync_shared_state_refuses_while_a_start_is_unwaited(jitted):
    """Found by the program fuzzer (seed 3): the sync used to go ahead, and
    the start's partners then waited in it while this peer waited in the
    sync. Now it refuses at once, as update_topology() does, and the start
    can still be waited for."""
    import jax

    import jax_pccl as pccl

    with pccl.Master() as master, pccl.Communicator(master.address, timeout=10) as comm:
        comm.connect(timeout=20)
        x = np.arange(8, dtype=np.float32)
        start = jax.jit(lambda v: pccl.all_reduce_start(v, comm)) if jitted else (
            lambda v: pccl.all_reduce_start(v, comm))
        handle = start(x)
        with pytest.raises(pccl.PcclError, match=r"sync_shared_state\(\) with a started "
                                                 r"all_reduce not yet waited for"):
            comm.sync_shared_state({"w": np.ones(3, np.float32)}, revision=1)
        np.testing.assert_array_equal(np.asarray(pccl.all_reduce_wait(handle)), x)
        state, info = comm.sync_shared_state({"w": np.ones(3, np.float32)}, revision=1)
        assert info.revision == 1
