"""A peer that dispatches a jitted all_reduce and syncs shared state right after.

    python ordered_sync_peer.py MASTER INDEX ITERATIONS PAUSE OUT

The jitted step computes (ITERATIONS small matmuls, about a second per
5000) before its all_reduce. JAX dispatches it asynchronously, so the call
returns long before the collective runs; the script calls sync_shared_state
PAUSE seconds later and only then reads the all_reduce's result. Writes
{"sum": ..., "sync": ...} (or the errors) to OUT.
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_pccl as pccl

master, index, iterations, pause, out = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                         float(sys.argv[4]), sys.argv[5])
comm = pccl.Communicator(master, timeout=8).connect(timeout=60)
while comm.world_size < 2:
    comm.update_topology()
    time.sleep(0.05)


@jax.jit
def step(x, n):
    w = jnp.full((256, 256), 1.0 / 256, jnp.float32)
    v = jax.lax.fori_loop(0, n, lambda i, v: jnp.tanh(v @ w), jnp.ones((256, 256), jnp.float32))
    return pccl.all_reduce(x + (v[0, 0] > 10).astype(x.dtype), comm, op="sum")  # adds 0


result = {}
step(jnp.zeros(8, jnp.int32), 0).block_until_ready()  # compiled, and both peers here
y = step(jnp.full(8, 1 << index, jnp.int32), iterations)  # returns before it ran
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
