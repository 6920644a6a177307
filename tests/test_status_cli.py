"""`jax-pccl status` (#21): a running master's report, asked over the network
by an authenticated client that is not a peer: 4 peers started by
`jax-pccl launch` are listed with their group, state and heartbeat age, the
ring holds exactly them, and the recent events say who registered and who
left and why. A wrong secret, no master and a malformed address are one-line
errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from test_launch import PEER, jax_pccl_cli

SECRET = "status-test-secret"


def status(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*jax_pccl_cli(), "status", *args], capture_output=True, text=True,
                          timeout=60, cwd=tempfile.gettempdir(), env=env or dict(os.environ))


def test_status_lists_the_peers_a_launch_started_and_what_happened(tmp_path):
    import jax_pccl as pccl

    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    with pccl.Master(host="127.0.0.1", port=0, secret=SECRET) as master:
        launch = subprocess.Popen(
            [*jax_pccl_cli(), "launch", "-n", "4", "--master", master.address, "--secret-file",
             str(secret), PEER, "hold", str(tmp_path)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
            env={**os.environ, **harness.peer_env()})
        try:
            deadline = time.monotonic() + 120
            ids = set()
            while len(ids) < 4:  # every peer is in: its "in <id>" line
                assert time.monotonic() < deadline and launch.poll() is None, launch.poll()
                line = launch.stdout.readline()
                m = re.match(r"^\[\d\] in (\d+)$", line.strip())
                if m:
                    ids.add(int(m.group(1)))
            # Their heartbeats carry their counters: wait until each reported some.
            while True:
                r = status("--master", master.address, "--secret-file", str(secret), "--json")
                assert r.returncode == 0, r.stderr
                report = json.loads(r.stdout)
                if all(p["collectives_done"] > 0 for p in report["peers"]):
                    break
                assert time.monotonic() < deadline, report["peers"]
                time.sleep(0.5)
            text = status("--master", master.address, "--secret-file", str(secret))
        finally:
            Path(tmp_path, "stop").touch()
            out, err = launch.communicate(timeout=60)
        assert launch.returncode == 0, err[-2000:]
        # The launch is over: its peers left, and the master says why.
        after = pccl.master_status(master.address, secret=SECRET)
    assert {p["id"] for p in report["peers"]} == ids
    assert all(p["state"] == "accepted" and p["group"] == 0 and 0 <= p["heard_s_ago"] < 5
               for p in report["peers"]), report["peers"]
    # 16 KiB per all_reduce over a ring of 4: every peer sent and received bytes.
    assert all(p["bytes_sent"] > 0 and p["bytes_received"] > 0 and p["collectives_failed"] == 0
               for p in report["peers"]), report["peers"]
    (group,) = report["groups"]
    assert group["world_size"] == 4 and set(group["ring"]) == ids and group["epoch"] >= 1
    registered = {int(m) for e in report["events"]
                  for m in re.findall(r"^peer (\d+) registered from 127\.0\.0\.1:\d+ in group 0$", e["text"])}
    assert registered == ids, report["events"]
    assert report["links_omitted"] is False and report["world_size"] == 4
    # The text form: the same peers, their ring, the events.
    assert text.returncode == 0, text.stderr
    assert sum(1 for line in text.stdout.splitlines() if line.startswith("  peer ")) == 4
    assert "ring: " in text.stdout and "recent events:" in text.stdout
    assert all(str(i) in text.stdout for i in ids)
    left = {int(m) for e in after["events"]
            for m in re.findall(r"^peer (\d+) left group 0: ", e["text"])}
    assert left == ids and after["peers"] == [], after["events"][-8:]


def test_status_errors_are_one_line(tmp_path):
    import jax_pccl as pccl

    with pccl.Master(host="127.0.0.1", port=0, secret=SECRET) as master:
        wrong = status("--master", master.address, env={**os.environ, "JAX_PCCL_SECRET": "nope"})
        none = status("--master", master.address, env={k: v for k, v in os.environ.items()
                                                      if k != "JAX_PCCL_SECRET"})
        refusals = master.status()["auth_refusals"]
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert "authentication with master" in wrong.stderr and "wrong secret" in wrong.stderr
    assert none.returncode == 1 and none.stderr.count("\n") == 1, none.stderr
    assert refusals == 2
    gone = status("--master", master.address)  # closed: nobody listens there now
    assert gone.returncode == 1 and "unreachable" in gone.stderr and gone.stderr.count("\n") == 1
    bad = status("--master", "no-port-here")
    assert bad.returncode == 2 and bad.stderr == (
        "jax-pccl status: address must be 'host:port', got 'no-port-here'\n")
    assert status().returncode == 2  # --master is required
