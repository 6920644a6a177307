"""A peer script for tests/test_launch.py, started by `jax-pccl launch`.

    launch_peer.py sleep DIR      writes DIR/pid.<index>, prints "ready", sleeps until
                                  stopped (index 1 ignores SIGTERM: the launcher must kill it)
    launch_peer.py fail-one       index 1 exits 3 at once; the others print "done" after 1 s
    launch_peer.py all-reduce     connects with Communicator.from_env() (min_peers = the
                                  launch size), all-reduces its index + 1, prints the sum
    launch_peer.py hold DIR       connects (min_peers = the launch size), prints "in", then
                                  all-reduces (update_topology() between steps) until
                                  DIR/stop exists; the failures of the others' leaving are
                                  retried
"""
from __future__ import annotations

import os
import signal
import sys
import time

index = int(os.environ["JAX_PCCL_LAUNCH_INDEX"])
size = int(os.environ["JAX_PCCL_LAUNCH_SIZE"])
mode = sys.argv[1]
if mode == "sleep":
    if index == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(sys.argv[2], f"pid.{index}"), "w") as f:
        f.write(str(os.getpid()))
    print("ready", flush=True)
    while True:
        time.sleep(1)
elif mode == "fail-one":
    if index == 1:
        sys.exit(3)
    time.sleep(1)
    print("done", flush=True)
elif mode == "all-reduce":
    import numpy as np

    import jax_pccl as pccl

    with pccl.Communicator.from_env(timeout=30).connect(min_peers=size) as comm:
        total = pccl.all_reduce(np.array([index + 1], np.int32), comm, op="sum")
        print(f"sum {int(np.asarray(total)[0])} world {comm.world_size}", flush=True)
        # Leave together: one that closes first would fail the others' last step.
        pccl.all_reduce(np.zeros(1, np.int32), comm, op="sum")
elif mode == "hold":
    import jax_pccl as pccl

    import numpy as np

    with pccl.Communicator.from_env(timeout=30).connect(min_peers=size) as comm:
        print(f"in {comm.peer_id}", flush=True)
        while not os.path.exists(os.path.join(sys.argv[2], "stop")):
            try:
                comm.update_topology()
                pccl.all_reduce(np.ones(4096, np.float32), comm, op="sum")
            except Exception as exc:  # noqa: BLE001 - a peer that left first
                if not pccl.is_peer_failure(exc):
                    raise
            time.sleep(0.05)
