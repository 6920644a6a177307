"""connect(min_peers=N): peers that start at different times all return
together once N are accepted; a wait that cannot end is bounded and says
what it waits for."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import jax_pccl as pccl
import jax_pccl.communicator as communicator_module
from harness import peer_env

QUORUM_PEER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import jax_pccl as pccl
    address, delay = sys.argv[1], float(sys.argv[2])
    time.sleep(delay)                      # staggered starts
    comm = pccl.Communicator(address, timeout=20).connect(min_peers=3, timeout=90)
    world_at_return = comm.group_world_size
    y = pccl.all_reduce(np.ones(4, np.float32), comm, op="sum")
    print(json.dumps({"world_at_return": world_at_return, "sum": float(y[0])}), flush=True)
    comm.close()
""")


def test_staggered_peers_all_return_with_the_quorum():
    with pccl.Master() as master:
        procs = [subprocess.Popen([sys.executable, "-c", QUORUM_PEER, master.address, str(d)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=peer_env(), cwd=tempfile.gettempdir())
                 for d in (0.0, 2.0, 4.0)]
        outs = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=150)
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                pytest.fail("a peer waiting for the quorum hung")
            assert p.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    # Nobody returned before all three were in, and the first collective
    # therefore had all three (a sum of 3, not 1 or 2).
    assert [o["world_at_return"] for o in outs] == [3, 3, 3], outs
    assert [o["sum"] for o in outs] == [3.0, 3.0, 3.0], outs


def test_quorum_wait_is_bounded_and_logged(monkeypatch, caplog):
    monkeypatch.setattr(communicator_module, "WAIT_LOG_EVERY_S", 0.3)
    with pccl.Master() as master, pccl.Communicator(master.address, timeout=5) as comm:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="jax_pccl"):
            with pytest.raises(pccl.PcclError, match=r"min_peers=2.*only 1 accepted peers"):
                comm.connect(min_peers=2, timeout=1.5)
        assert time.monotonic() - t0 < 1.5 + 10  # bounded (slack for a loaded machine)
        assert any("1 of 2 peers in group 0" in r.getMessage() for r in caplog.records)


def test_joiner_never_admitted_logs_and_times_out(monkeypatch, caplog):
    """The accepted peer never calls update_topology(): the joiner's connect
    says so while it waits and gives up at its timeout (issue: it used to
    wait silently for ever)."""
    monkeypatch.setattr(communicator_module, "WAIT_LOG_EVERY_S", 0.3)
    with pccl.Master() as master, pccl.Communicator(master.address, timeout=5) as first:
        first.connect()
        joiner = pccl.Communicator(master.address, timeout=5)
        try:
            with caplog.at_level(logging.WARNING, logger="jax_pccl"):
                with pytest.raises(pccl.PcclError):
                    joiner.connect(timeout=2.0)
        finally:
            joiner.close()
        waiting = [r.getMessage() for r in caplog.records if "still waiting" in r.getMessage()]
        assert waiting and "update_topology()" in waiting[0], caplog.records


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_min_peers_is_validated(bad):
    with pccl.Master() as master, pccl.Communicator(master.address) as comm:
        with pytest.raises(ValueError, match="min_peers"):
            comm.connect(min_peers=bad)
