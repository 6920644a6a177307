"""optimize_topology(): the links are probed (rounds planned by the master),
the master picks the ring, every peer moves to it; results stay exact and
bit-identical, and joins and kills right after it keep working
(tests/topology_scenarios.py). The figures come from Master.status()."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cases
import harness
import topology_scenarios as ts
from test_membership import StatusPoller

PROBE_SECONDS = 0.2


def run_with_status(pccl, scenario, n, **kwargs):
    """The run and the master's status snapshots, the last one taken after
    every peer exited (its events are the durable record)."""
    with pccl.Master(host="127.0.0.1", port=0, probe_seconds=PROBE_SECONDS) as master:
        with StatusPoller(master) as poller:
            run = harness.run_peers(master.address, scenario, n, **kwargs)
        return run, poller.snapshots + [master.status()]


def group0(snapshot):
    return next((g for g in snapshot["groups"] if g["group"] == 0), None)


RING_CHOSEN = re.compile(r"group 0 epoch (\d+): ring chosen over (\d+) measured links"
                         r"(?:, order ([\d ]+))?$")
MAX_EVENTS = 100  # the master keeps the last 100 (docs/logging.md)


def optimizations(snapshots) -> list:
    """(epoch, links probed, ring) of every optimisation of group 0, in order,
    from the master's events after the run: a status poll can miss one (the
    status's "optimized" holds only the last), the events cannot."""
    events = snapshots[-1]["events"]
    assert len(events) < MAX_EVENTS, "the master's events overflowed: the record is cut"
    seen = []
    for e in events:
        m = RING_CHOSEN.match(e["text"])
        if m:
            ring = [int(x) for x in m.group(3).split()] if m.group(3) else None
            seen.append((int(m.group(1)), int(m.group(2)), ring))
    return seen


def expected_sum(scenario, peers):
    stacked = np.stack([ts.ints(scenario, k) for k in peers])
    return cases.reference("sum", stacked, "float32")


def assert_round(rounds, scenario, peers):
    """Exact sums, one identical average everywhere, ranks a permutation."""
    harness.assert_exact([r["sum"] for r in rounds], expected_sum(scenario, peers), scenario)
    assert len({r["avg_digest"] for r in rounds}) == 1, [r["avg_digest"] for r in rounds]
    assert sorted(r["rank"] for r in rounds) == list(range(len(peers))), rounds
    assert {r["size"] for r in rounds} == {len(peers)}, rounds


@pytest.fixture(scope="module")
def optimize_run(pccl):
    return run_with_status(pccl, "optimize", ts.OPTIMIZE_PEERS, timeout=180, comm_timeout=15,
                           join_timeout=60)


def test_optimize_peers_finished_cleanly(optimize_run):
    run, _ = optimize_run
    assert not run.problems, run.diagnostics()


def test_results_stay_exact_and_identical_across_optimizations(optimize_run):
    run, _ = optimize_run
    for check in ("before", "after", "after2"):
        assert_round(run.values(check), "optimize", range(ts.OPTIMIZE_PEERS))
    harness.assert_exact(run.values("jit"), expected_sum("optimize", range(ts.OPTIMIZE_PEERS)),
                         "jitted sum after optimize_topology()")


def test_every_directed_link_is_measured_once_then_fresh(optimize_run):
    """4 peers: 12 directed links probed by the first optimisation, none by
    the second (figures are fresh); the status lists all 12 with a rate and
    a round trip."""
    run, snapshots = optimize_run
    assert [probed for _, probed, _ in optimizations(snapshots)] == [12, 0], optimizations(snapshots)
    ids = {v["peer_id"] for v in run.values("optimize")}
    final = [group0(s) for s in snapshots if group0(s) and len(group0(s)["links"]) == 12]
    assert final, "the status never listed 12 links"
    links = final[-1]["links"]
    assert {(x["from"], x["to"]) for x in links} == {(a, b) for a in ids for b in ids if a != b}
    assert all(x["ok"] and x["bytes_per_s"] > 0 and x["rtt_ms"] > 0 for x in links), links


def test_peers_run_the_ring_the_master_chose(optimize_run):
    """Each peer's rank and epoch after optimize_topology() are its place in
    the ring the master chose and the epoch it chose it for."""
    run, snapshots = optimize_run
    after = run.values("optimize")
    epoch, _, ring = optimizations(snapshots)[0]
    assert {a["epoch"] for a in after} == {epoch}, after
    assert {a["peer_id"]: a["rank"] for a in after} == {pid: r for r, pid in enumerate(ring)}


@pytest.fixture(scope="module")
def churn_run(pccl):
    return run_with_status(pccl, "optimize_churn", ts.CHURN_PEERS, timeout=240, comm_timeout=15,
                           join_timeout=90, expected_deaths=(ts.NEWCOMER,))


def test_churn_peers_finished_cleanly(churn_run):
    run, _ = churn_run
    assert not run.problems, run.diagnostics()


def test_a_join_after_optimize_is_admitted_and_probed(churn_run):
    run, snapshots = churn_run
    five = run.values("five", range(ts.CHURN_PEERS - 1))
    harness.assert_exact([r["sum"] for r in five], expected_sum("optimize_churn",
                                                                range(ts.CHURN_PEERS)), "five")
    assert {r["size"] for r in five} == {ts.CHURN_PEERS}
    # 4 peers: 12 links; the newcomer's 8 (4 out, 4 in); after the kill, none.
    assert [probed for _, probed, _ in optimizations(snapshots)] == [12, 8, 0], optimizations(snapshots)


def test_a_kill_after_optimize_is_survived(churn_run):
    run, _ = churn_run
    survivors = range(ts.CHURN_PEERS - 1)
    four = run.values("four", survivors)
    assert_round(four, "optimize_churn", survivors)
    assert all(1 <= len(r["failures"]) <= ts.MAX_RECOVERIES for r in four), four
    assert_round(run.values("after4", survivors), "optimize_churn", survivors)


@pytest.fixture(scope="module")
def groups_kill_run(pccl):
    return run_with_status(pccl, "groups_kill", 4, timeout=180, comm_timeout=15, join_timeout=60,
                           expected_deaths=(ts.VICTIM,))


def test_groups_kill_peers_finished_cleanly(groups_kill_run):
    run, _ = groups_kill_run
    assert not run.problems, run.diagnostics()


def test_a_death_in_one_group_leaves_the_other_undisturbed(groups_kill_run):
    """Group 0 all-reduced without a single failure, the same exact sum every
    round, from before peer 3's death until after peer 2 recovered alone;
    group 1's survivor failed, recovered and reduced alone; the run's size
    dropped from 4 to 3 on group 0 (it counts every group)."""
    run, snapshots = groups_kill_run
    rounds = run.values("rounds", [0, 1])
    assert all(r["failures"] == [] for r in rounds), rounds
    # Group 1 starts only after group 0's GOING_ROUNDS, and group 0 stops only
    # once group 1 recovered: its rounds span the kill and the recovery.
    assert rounds[0]["rounds"] == rounds[1]["rounds"] > ts.GOING_ROUNDS, rounds
    assert all(r["distinct_sums"] == 1 for r in rounds), rounds
    stacked = np.stack([ts.ints("groups_kill", k) for k in (0, 1)])
    assert rounds[0]["sum"] == rounds[1]["sum"] == stacked.sum(axis=0).tolist()
    survivor = run.values("recover", [2])[0]
    assert survivor["failures"] >= 1 and survivor["group_world_size"] == 1, survivor
    assert survivor["sum"] == ts.ints("groups_kill", 2).tolist()
    assert run.values("world_after", [0, 1]) == [{"world_size": 3, "group_world_size": 2}] * 2
    assert max(s["world_size"] for s in snapshots) == 4
