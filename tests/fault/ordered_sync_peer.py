"""A peer that dispatches a jitted all_reduce and syncs shared state right after.

    python ordered_sync_peer.py MASTER INDEX DELAY PAUSE OUT

The jitted step computes for DELAY seconds (a host callback) before its
all_reduce, so the call returns long before the collective runs; the
script then calls sync_shared_state after PAUSE seconds and only afterwards
reads the all_reduce's result. Writes {"sum": ..., "sync": ...} (or the errors) to OUT.
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_pccl as pccl

master, index, delay, pause, out = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                                     float(sys.argv[4]), sys.argv[5])
comm = pccl.Communicator(master, timeout=4).connect(timeout=60)
while comm.world_size < 2:
    comm.update_topology()
    time.sleep(0.05)


def slow_identity(x):
    time.sleep(delay)
    return x


@jax.jit
def step(x):
    x = jax.pure_callback(slow_identity, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
    return pccl.all_reduce(x, comm, op="sum")


result = {}
step(jnp.zeros(8, jnp.int32)).block_until_ready()  # compiled, and both peers here
y = step(jnp.full(8, 1 << index, jnp.int32))  # returns before the callback has run
time.sleep(pause)
try:
    _, info = comm.sync_shared_state({"w": np.arange(4.0)}, revision=1)
    result["sync"] = info.revision
except Exception as exc:  # noqa: BLE001
    result["sync_error"] = f"{type(exc).__name__}: {exc}"[:500]
try:
    result["sum"] = np.asarray(y).tolist()
except Exception as exc:  # noqa: BLE001
    result["sum_error"] = f"{type(exc).__name__}: {exc}"[:500]
with open(out, "w") as f:
    json.dump(result, f)
comm.close()
