"""A peer that syncs shared state once, for the master-restart test.

    python sync_peer.py MASTER INDEX DELAY OUT

Connects, waits until 2 peers are in, sleeps DELAY seconds, prints
"syncing" and calls sync_shared_state (peer 0 as the declared source, so
peer 1 fetches from it). Writes {"ok": ...} or {"error", "message",
"peer_failure", "elapsed"} to OUT.
"""

import json
import sys
import time

import numpy as np

import jax_pccl as pccl

master, index, delay, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
comm = pccl.Communicator(master, timeout=10).connect(timeout=60)
while comm.world_size < 2:
    comm.update_topology()
    time.sleep(0.05)
time.sleep(delay)
state = {"w": np.full(1 << 16, index + 1, np.float32)}
print("syncing", flush=True)
t0 = time.monotonic()
try:
    comm.sync_shared_state(state, revision=1, strategy="send_only" if index == 0 else "enforce_popular")
    result = {"ok": True}
except Exception as exc:  # noqa: BLE001 - the test decides what was expected
    result = {"error": type(exc).__name__, "message": str(exc)[:500],
              "peer_failure": pccl.is_peer_failure(exc)}
result["elapsed"] = time.monotonic() - t0
with open(out, "w") as f:
    json.dump(result, f)
comm.close()
