"""Admission of 3 peers through update_topology (the harness's own precondition);
are_peers_pending(), peer_id and advertise_host; two peer groups in one run."""
import os
import threading
import time

import numpy as np
import pytest

import cases
import harness
import membership_scenarios


@pytest.mark.parametrize("join_mode", ["topology", "step"])
def test_three_peers_are_admitted_and_can_reduce(pccl, join_mode):
    """join_mode "topology": each peer loops `update_topology(); sleep` until world_size == 3.
    join_mode "step": `loop { all_reduce(scalar); update_topology() }`."""
    run = harness.run_scenario(pccl, "join_only", timeout=60, comm_timeout=10, join_mode=join_mode,
                               join_timeout=20)
    assert not run.problems, run.diagnostics()
    metas = [r["meta"] for r in run.reports]
    assert [m["world_size"] for m in metas] == [cases.N_PEERS] * cases.N_PEERS, metas
    assert sorted(m["rank"] for m in metas) == list(range(cases.N_PEERS)), f"ranks not a permutation: {metas}"
    stacked = np.stack([cases.small_ints("join_only", i, (5,), "float32") for i in range(cases.N_PEERS)])
    harness.assert_exact(run.values("sum"), cases.reference("sum", stacked, "float32"), "sum after join")


# --- are_peers_pending, peer_id, advertise_host; two groups at once ------------------------

class StatusPoller:
    """master.status() every 20 ms on a thread while the peers run (the peers
    are gone by the time run_peers returns, and so are they from the status).
    With signal_dir, it creates signal_dir/saw_pending once a peer is listed
    as pending (the "pending" scenario's accepted peers wait for it)."""

    def __init__(self, master, signal_dir=None):
        self.master, self.signal_dir, self.snapshots = master, signal_dir, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            snap = self.master.status()
            self.snapshots.append(snap)
            if self.signal_dir and any(p["state"] == "pending" for p in snap["peers"]):
                open(os.path.join(self.signal_dir, "saw_pending"), "w").close()
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def run_with_status(pccl, scenario, n, signal_dir=None, **kwargs):
    with pccl.Master(host="127.0.0.1", port=0) as master, \
            StatusPoller(master, signal_dir) as poller:
        run = harness.run_peers(master.address, scenario, n, aux=signal_dir, **kwargs)
    return run, poller.snapshots


@pytest.fixture(scope="module")
def pending_run(pccl, tmp_path_factory):
    return run_with_status(pccl, "pending", 3, str(tmp_path_factory.mktemp("pending")),
                           timeout=120, comm_timeout=15, join_timeout=60)


def test_pending_peers_finished_cleanly(pending_run):
    run, _ = pending_run
    assert not run.problems, run.diagnostics()


def test_are_peers_pending_is_false_true_false_and_the_same_on_every_peer(pending_run):
    """False with nobody waiting; True on both accepted peers (between the
    same two collectives) once the newcomer registered; False on all three
    after update_topology() admitted it."""
    run, _ = pending_run
    quiet = run.values("quiet", [0, 1])
    assert quiet == [[[False, 0, 2]] * membership_scenarios.QUIET_ROUNDS] * 2, quiet
    pending = run.values("pending", [0, 1])
    assert pending[0] == pending[1], f"the peers' answers differ: {pending}"
    rounds = pending[0]
    # each round's sum counts the True answers: 0 or 2, never one peer alone
    assert all(total in (0, 2) and mine == (total == 2) for mine, total, _ in rounds), rounds
    assert rounds[-1][:2] == [True, 2], (
        f"no round saw the newcomer pending after {len(rounds)} rounds: {rounds[-3:]}")
    assert run.values("admit", [0, 1]) == [3, 3]
    after = run.values("after")
    assert after == [[[False, 0, 3]] * membership_scenarios.QUIET_ROUNDS] * 3, after


def test_peer_id_is_the_masters_id_unique_and_stable(pending_run):
    run, snapshots = pending_run
    ids = {}
    for check in ("ids/joined", "ids/after"):
        for i, got in enumerate(run.values(check)):
            assert got["type"] == "int", got
            assert ids.setdefault(i, got["peer_id"]) == got["peer_id"], (
                f"peer {i}: id changed across update_topology(): {ids[i]} then {got['peer_id']}")
    for i, got in enumerate(run.values("ids/pending", [0, 1])):
        assert got["peer_id"] == ids[i]
    assert len(set(ids.values())) == 3, ids
    # what the master listed: the newcomer pending beside the two accepted
    # ones, then all three accepted, under the ids the peers report
    def states(snap):
        return {p["id"]: p["state"] for p in snap["peers"]}
    assert any(states(s) == {ids[0]: "accepted", ids[1]: "accepted", ids[2]: "pending"}
               for s in snapshots), (ids, sorted({str(states(s)) for s in snapshots}))
    assert any(states(s) == dict.fromkeys(ids.values(), "accepted") for s in snapshots), (
        [states(s) for s in snapshots[::10]])


def test_advertise_host_is_what_the_master_lists_and_the_ring_uses(pending_run):
    """Peer 0 advertises 127.0.0.1, peer 1 "localhost", peer 2 nothing (the
    master lists the address it sees, 127.0.0.1). The ring formed (the
    collectives of the other tests ran over it), so its neighbours reached
    peer 1 at "localhost"."""
    run, snapshots = pending_run
    ids = [v["peer_id"] for v in run.values("ids/after")]
    full = [s for s in snapshots if len(s["peers"]) == 3][-1]
    hosts = {p["id"]: p["address"].rsplit(":", 1)[0] for p in full["peers"]}
    assert [hosts[ids[i]] for i in range(3)] == ["127.0.0.1", "localhost", "127.0.0.1"], full


@pytest.fixture(scope="module")
def groups_run(pccl):
    return run_with_status(pccl, "two_groups", 4, timeout=120, comm_timeout=15, join_timeout=60)


def test_two_groups_peers_finished_cleanly(groups_run):
    run, _ = groups_run
    assert not run.problems, run.diagnostics()


def test_two_groups_sizes(groups_run):
    run, snapshots = groups_run
    sizes = run.values("sizes")
    assert [s["group_world_size"] for s in sizes] == [2] * 4, sizes
    assert [s["world_size"] for s in sizes] == [4] * 4, sizes
    for group in (0, 1):
        members = [i for i, g in membership_scenarios.GROUP_OF.items() if g == group]
        assert sorted(sizes[i]["rank"] for i in members) == [0, 1], sizes
    listed = {p["id"]: p["group"] for s in snapshots for p in s["peers"]}
    assert {s["peer_id"]: listed.get(s["peer_id"]) for s in sizes} == {
        s["peer_id"]: membership_scenarios.GROUP_OF[i] for i, s in enumerate(sizes)}, listed


def test_two_groups_reduce_only_within_their_group(groups_run):
    run, _ = groups_run
    sums, avgs = run.values("sum"), run.values("jit_avg")
    for i, group in membership_scenarios.GROUP_OF.items():
        members = [k for k, g in membership_scenarios.GROUP_OF.items() if g == group]
        stacked = np.stack([membership_scenarios.group_input(k) for k in members])
        assert sums[i] == stacked.sum(axis=0).tolist(), (i, sums[i])
        np.testing.assert_allclose(avgs[i]["avg"], stacked.mean(axis=0), rtol=1e-6)
        assert avgs[i]["world"] == 2, avgs[i]


def test_two_groups_have_independent_shared_state(groups_run):
    run, snapshots = groups_run
    synced = run.values("sync")
    for i, got in enumerate(synced):
        group = membership_scenarios.GROUP_OF[i]
        assert got == {"w": [100.0 + group] * 4,
                       "revision": membership_scenarios.STATE_REVISION[group]}, (i, got)
    assert run.values("sync2") == [membership_scenarios.STATE_REVISION[g] + 1
                                   for g in membership_scenarios.GROUP_OF.values()]
    revisions = {g["group"]: g["shared_state_revision"]
                 for s in snapshots for g in s["groups"] if g["shared_state_revision"] is not None}
    assert revisions == {g: r + 1 for g, r in membership_scenarios.STATE_REVISION.items()}, revisions
