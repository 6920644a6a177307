"""A peer that dies in the middle of an all_gather, a broadcast or a
reduce_scatter (tests/fault/peer_loop.py --kind; the engine's test hook
JAX_PCCL_TEST_DIE_IN_COLLECTIVE=N makes it SIGKILL itself once it has sent
part of its N-th ring collective): the survivors fail fast with a peer
failure, call update_topology(), re-trace for the smaller group and go on
with exact results; nobody hangs.

Peer i contributes 2**i: an all_gather's rows and a reduce_scatter's slice
sum to the mask of the peers that took part; a broadcast returns rank 0's
contribution, one live peer's bit."""

from __future__ import annotations

import signal

import pytest

import jax_pccl as pccl
from test_fault_tolerance import swarm_factory  # noqa: F401  (the fixture)

COMM_TIMEOUT = 10.0
ELEMENTS = 1048560  # divisible by every group size from 1 to 6 (reduce_scatter)


@pytest.mark.parametrize("kind", ["all_gather", "broadcast", "reduce_scatter"])
def test_a_peer_killed_mid_collective_fails_the_others_fast_and_they_go_on(
        swarm_factory, monkeypatch, kind):  # noqa: F811
    with pccl.Master() as master:
        swarm = swarm_factory(master.address, seconds=40, elements=ELEMENTS, kind=kind,
                              timeout=COMM_TIMEOUT)
        for i in range(2):
            swarm.start(i)
        swarm.wait_until(lambda: all(swarm.steps_at_world(i, 2) >= 1 for i in range(2)), 120,
                         "2 peers running")
        # Peer 2 joins and dies inside its 8th collective.
        monkeypatch.setenv("JAX_PCCL_TEST_DIE_IN_COLLECTIVE", "8")
        swarm.start(2)
        monkeypatch.delenv("JAX_PCCL_TEST_DIE_IN_COLLECTIVE")
        assert swarm.wait_exit(2, 120) == -signal.SIGKILL, swarm.stderr(2)
        done = [r for r in swarm.records(2) if "ok" in r]
        assert len(done) == 7 and all(r["world"] == 3 for r in done), done
        killed_at = done[-1]["t"]  # it died in the collective after this one ...
        last_key = tuple(done[-1]["key"])  # ... whose (epoch, seq) comes after this
        swarm.wait_until(
            lambda: all(sum(1 for r in swarm.records(i) if "ok" in r and r["world"] == 2
                            and r["t"] > killed_at) >= 3 for i in (0, 1)),
            90, f"the survivors running {kind} at world 2")
        by_key, failed = {}, []
        for i in (0, 1):
            records = swarm.records(i)
            assert not [r for r in records if "fatal" in r], records[-3:]
            early = [r for r in records if "failure" in r and r["t"] < killed_at]
            assert not early, f"peer {i}: failures before the kill: {early[:3]}"
            failures = [r for r in records if "failure" in r]
            # A failure is a peer failure, seen within the communicator's
            # timeout (EOF and resets arrive at once; the slack is for a
            # loaded machine's scheduling, not for detection).
            for f in failures:
                assert "PeerFailureError" in f["failure"] + f["message"], f
                assert f["t"] - killed_at < COMM_TIMEOUT + 10, f
            if failures:
                failed.append(i)
            # Order by the run's own count of collectives, not by clocks: a
            # loaded survivor may write its record of peer 2's last complete
            # collective after peer 2 wrote its own. The collective peer 2 died
            # in may have completed here (all of its bytes for us had left
            # it): at most that one at world 3, then world 2 only.
            after = [r for r in records if "ok" in r and tuple(r["key"]) > last_key]
            assert after and all(r["world"] == 2 and r["mask"] & ~0b011 == 0
                                 for r in after[1:]), after[:3]
            for r in records:
                if "ok" not in r:
                    continue
                assert r["exact"], f"peer {i}: non-uniform result {r}"
                if kind == "broadcast":
                    assert bin(r["mask"]).count("1") == 1 and r["mask"] & 0b111, r
                else:
                    assert r["mask"] & (1 << i) and bin(r["mask"]).count("1") == r["world"], r
                by_key.setdefault(tuple(r["key"]), set()).add(r["digest"])
        # The dead peer's right neighbour waited for the rest of its bytes: it
        # failed. Its left neighbour may have finished (its sends fit in the
        # socket buffers), and learns of the death from update_topology().
        assert failed, "no survivor saw the collective fail"
        # Every collective both survivors completed gave them the same bytes
        # (reduce_scatter: each its own slice, which equal masks make equal).
        assert all(len(d) == 1 for d in by_key.values()), by_key
