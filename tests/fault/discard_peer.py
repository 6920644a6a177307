"""Started, never waited: refused while healthy, discarded after a failure.

    python discard_peer.py MASTER            # waits for a second peer
    python discard_peer.py MASTER --victim   # the second peer: joins, then sleeps

The first peer starts an all_reduce eagerly while the victim calls nothing,
prints "started", and waits for a line on stdin (the test kills the victim
meanwhile). Its start then fails on the broken ring; it calls
update_topology() without waiting, then all_reduce_wait() on the old handle.
Before that, alone at world 1, it checks that a healthy unwaited start is
still refused. Prints one JSON line of what each step raised.
"""

import json
import sys
import time

import numpy as np

import jax_pccl as pccl


def outcome(fn) -> dict:
    try:
        fn()
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - reported, the test decides
        return {"error": type(exc).__name__, "message": str(exc)[:300],
                "peer_failure": pccl.is_peer_failure(exc)}


comm = pccl.Communicator(sys.argv[1], timeout=10).connect(timeout=60)
if "--victim" in sys.argv:
    print("joined", flush=True)
    time.sleep(600)
    sys.exit(0)
x = np.ones(1024, np.float32)
result = {}
healthy = pccl.all_reduce_start(x, comm)  # alone: done at once, and nothing failed
result["healthy_update"] = outcome(comm.update_topology)
pccl.all_reduce_wait(healthy)
while comm.world_size < 2:
    comm.update_topology()
    time.sleep(0.05)
handle = pccl.all_reduce_start(x, comm)  # waits for the victim, which never comes
print("started", flush=True)
sys.stdin.readline()  # the victim is dead
result["update_after_failure"] = outcome(comm.update_topology)
result["world"] = comm.world_size
result["late_wait"] = outcome(lambda: pccl.all_reduce_wait(handle))
print(json.dumps(result), flush=True)
comm.close()
