"""Striping: every ring hop spreads large all-reduces over several TCP connections.

Peers choose their own connection counts (here 1, 3 and 8 in one ring, so
no two hops are striped alike). Results must stay exact and bit-identical on
every peer (tests/striping_scenarios.py), and a peer that dies mid-collective
must still fail its neighbours fast, whichever of its connections they see
close first.
"""
from __future__ import annotations

import tempfile

import numpy as np
import pytest

import cases
import harness
import striping_scenarios as sc

CONNECTIONS = (1, 3, 8)


@pytest.fixture(scope="module")
def striped_run(pccl):
    env = {i: {"PCCL_TEST_CONNECTIONS": str(k)} for i, k in enumerate(CONNECTIONS)}
    return harness.run_scenario(pccl, "striping", len(CONNECTIONS), timeout=240, comm_timeout=30,
                                peer_env_extra=env)


LANE_MIN_BYTES = 1 << 20  # every lane carries ~10 MiB over the run; a control link, KiB


def test_each_peer_striped_its_hop_over_its_own_connection_count(striped_run):
    """The kernel's view (TCP_INFO of every socket in each peer process): the
    peer sends to its right neighbour on exactly its own number of
    connections, and every one of them carried megabytes."""
    assert not striped_run.problems, striped_run.diagnostics()
    assert [r["meta"]["connections"] for r in striped_run.reports] == list(CONNECTIONS)
    for i, (sockets, k) in enumerate(zip(striped_run.values("tcp"), CONNECTIONS)):
        busy: dict = {}
        for sock in sockets:
            if sock["acked"] >= LANE_MIN_BYTES:
                busy.setdefault(sock["remote"], []).append(sock["acked"])
        # one endpoint: the right neighbour's ring listener (no other bulk sender)
        assert [len(v) for v in busy.values()] == [k], (i, k, busy, sockets)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("op,dtype", sc.EXACT_CASES)
def test_striped_result_is_exact_and_identical_on_all_peers(striped_run, mode, op, dtype):
    name = f"{mode}/{op}/{dtype}"
    stacked = cases.all_inputs(op, dtype, shape=sc.SHAPE, n=len(CONNECTIONS))
    harness.assert_exact(striped_run.values(name), cases.reference(op, stacked, dtype), name)


@pytest.mark.parametrize("q", sc.QUANTIZED)
def test_striped_quantized_is_identical_and_bounded(striped_run, q):
    results = striped_run.values(f"quantized/{q}")
    assert len({r["sha256"] for r in results}) == 1, results
    bound = 0.005 if q == "bfloat16" else 0.03  # of max |sum|, as in test_quantization
    assert results[0]["rel_err"] <= bound, results[0]


def test_connections_argument_is_checked(pccl):
    for bad in (0, -1, 33, 2.0, True, "4"):
        with pytest.raises(ValueError, match="connections"):
            pccl.Communicator("127.0.0.1:1", connections=bad)
    assert pccl.Communicator("127.0.0.1:1").connections == pccl._pccl.DEFAULT_CONNECTIONS


def test_sigkill_mid_striped_collective_survivors_fail_fast_then_continue(pccl):
    """4 peers, 16 MiB each (4 MiB segments, so all lanes carry data), K=8."""
    import test_fault_tolerance as ft

    with pccl.Master() as master, tempfile.TemporaryDirectory() as workdir:
        swarm = ft.Swarm(master.address, workdir, seconds=40, elements=1 << 22, timeout=30)
        try:
            ft.kill_one_of_four_and_check(swarm, survivor_steps=4, survivors_wait_s=120)
        finally:
            swarm.kill_all()
