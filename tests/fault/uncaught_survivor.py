"""A training loop that does not catch anything: what a survivor prints.

    python uncaught_survivor.py MASTER WORLD

Connects, waits until WORLD peers are in, prints "training" on stdout, then
runs jitted steps whose parameters chain from one step into the next (JAX
dispatches several ahead), reading the loss now and then. When a peer is
killed the failure is uncaught: the process exits with whatever Python and
jax_pccl print to stderr, which is what the test checks.
"""

import sys
import time

import jax
import jax.numpy as jnp

import jax_pccl as pccl

comm = pccl.Communicator(sys.argv[1], timeout=5).connect(timeout=60)
while comm.world_size < int(sys.argv[2]):
    comm.update_topology()
    time.sleep(0.05)


@jax.jit
def step(params):
    grads = pccl.all_reduce(jnp.sin(params), comm, op="avg")
    return params - 0.01 * grads


params = jnp.ones(4096, jnp.float32)
print("training", flush=True)
for i in range(10**9):
    params = step(params)
    if i % 100 == 0:
        float(params[0])
