"""The in-process master used by the multi-process tests."""
import json
import socket
import time

import numpy as np


def test_master_listens_on_a_free_port_and_reports_status(master):
    host, port = master.address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) == master.port > 0, (master.address, master.port)
    with socket.create_connection((host, master.port), timeout=5):
        pass  # something really listens there
    status = json.loads(json.dumps(master.status()))  # JSON-serialisable, and survives it
    assert (status["address"], status["world_size"], status["peers"], status["groups"],
            status["shared_state_revision"]) == (master.address, 0, [], [], None), status


def test_master_status_reports_what_its_peers_see(pccl, master):
    """Each field against what the peers themselves know (their ids, their
    listen ports, the groups they asked for, the revision they synced)."""
    a = pccl.Communicator(master.address, peer_group=0, timeout=10).connect(timeout=10)
    b = pccl.Communicator(master.address, peer_group=3, timeout=10).connect(timeout=10)
    try:
        t0 = master.status()["uptime_s"]
        a.sync_shared_state({"w": np.zeros(2, np.float32)}, revision=5)
        status = master.status()
        peers = {p["id"]: p for p in status["peers"]}
        assert set(peers) == {a.peer_id, b.peer_id}, status
        assert [peers[c.peer_id]["group"] for c in (a, b)] == [0, 3], status
        assert all(p["state"] == "accepted" for p in peers.values()), status
        assert status["world_size"] == 2, status
        # Each peer's world_size is the run's (all groups): a's group saw no
        # topology when b joined group 3; the master's heartbeats tell it
        for _ in range(100):
            if a.world_size == 2:
                break
            time.sleep(0.05)
        assert (a.world_size, b.world_size, a.group_world_size, b.group_world_size) == (2, 2, 1, 1)
        groups = {g["group"]: g for g in status["groups"]}
        assert set(groups) == {0, 3} and all(g["world_size"] == 1 for g in groups.values()), status
        assert groups[0]["shared_state_revision"] == 5 and groups[3]["shared_state_revision"] is None
        assert status["uptime_s"] > t0 >= 0, status
    finally:
        a.close()
        b.close()
    for _ in range(100):  # closing deregisters (asynchronously, within a heartbeat)
        if not master.status()["peers"]:
            break
        time.sleep(0.05)
    assert master.status()["peers"] == [] and master.status()["world_size"] == 0


def test_master_close_is_idempotent(pccl):
    m = pccl.Master(host="127.0.0.1", port=0)
    m.close()
    m.close()
