"""Data-parallel training with jax_pccl: run one of these per machine.

    jax-pccl master --port 48148                                # anywhere reachable
    python examples/data_parallel.py --master HOST:48148        # on every peer

or, on one machine, a master and 4 peers at once:

    jax-pccl launch -n 4 examples/data_parallel.py

Peers may join at any time (they are admitted at update_topology()) and may
die at any time (the step is retried over the survivors). Each peer trains a
small linear model on its own shard; gradients are averaged with all_reduce
inside the jitted step, so every peer holds bit-identical parameters. The
parameters are also the run's shared state: a peer that joins late receives
them, and the step count, in its first sync_shared_state().
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_pccl as pccl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--master", default=None,
                    help="host:port of the master (default: $JAX_PCCL_MASTER, as jax-pccl launch sets)")
    ap.add_argument("--min-peers", type=int, default=int(os.environ.get("JAX_PCCL_LAUNCH_SIZE", 1)),
                    help="wait until this many peers are in before the first step (default: "
                         "$JAX_PCCL_LAUNCH_SIZE, which jax-pccl launch sets, else 1)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args()

    if args.master:
        comm = pccl.Communicator(args.master, timeout=30.0)
    else:
        comm = pccl.Communicator.from_env(timeout=30.0)
    comm.connect(min_peers=args.min_peers)
    rng = np.random.default_rng()  # every peer its own data shard
    true_w = np.arange(1.0, 9.0, dtype=np.float32)
    w = jnp.zeros(8, jnp.float32)  # same start everywhere

    @jax.jit
    def step(w, x, y):
        loss, grad = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
        grad, info = pccl.all_reduce(grad, comm, op="avg", return_info=True)
        return w - args.lr * grad, loss, info.world_size

    step = pccl.retry_on_peer_failure(comm, step)  # a dead peer costs one retry
    sync = pccl.retry_on_peer_failure(comm, comm.sync_shared_state)
    done = 0  # steps the run has taken: the shared state's revision
    while done < args.steps:
        comm.update_topology()  # admit whoever is waiting to join
        # Cheap when nothing changed (hashes + one master round trip); a
        # newcomer, whatever it claims, gets the run's parameters and count.
        state, info = sync({"w": w}, revision=done)
        w, done = state["w"], info.revision
        x = rng.normal(size=(64, 8)).astype(np.float32)
        w, loss, world = step(w, x, x @ true_w)
        done += 1
        if done % 50 == 0:
            digest = hashlib.sha256(np.asarray(w).tobytes()).hexdigest()[:12]
            print(f"step {done:4d} loss {float(loss):.5f} peers {int(world)} params {digest}")
        time.sleep(0.01)  # a stand-in for real work
    comm.close()


if __name__ == "__main__":
    main()
