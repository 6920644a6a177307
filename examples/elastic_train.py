"""Elastic data-parallel training with pccl.DataParallel: run one per peer.

    jax-pccl master --port 48148                                        # once, anywhere reachable
    JAX_PCCL_MASTER=127.0.0.1:48148 python examples/elastic_train.py    # in each peer's terminal
    python examples/elastic_train.py --master HOST:48148                # the same, without the env

Start, stop or kill peers whenever you like. Training starts once --min-peers
are in; a peer that joins later receives the run's params, optimizer state and
step count; a step that a dying peer broke is taken again by the survivors;
below --min-peers the run waits, saying so, until someone joins. Every peer
prints the same state digest at the same step. (JAX_PCCL_SECRET_FILE: the
master's --secret-file, if it has one.)
"""
from __future__ import annotations

import argparse
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jax_pccl as pccl


def init_params(key):  # a small MLP: 16 -> 64 -> 1
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (16, 64)) / 4, "b1": jnp.zeros(64),
            "w2": jax.random.normal(k2, (64,)) / 8, "b2": jnp.zeros(())}


def loss_fn(params, batch):
    x, y = batch
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--master", help="host:port of the master (default: $JAX_PCCL_MASTER)")
    ap.add_argument("--steps", type=int, default=2000, help="the run's length, in steps")
    ap.add_argument("--min-peers", type=int, default=2, help="never train with fewer")
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    comm = pccl.Communicator.from_env(**({"address": args.master} if args.master else {}))
    comm.connect()
    trainer = pccl.DataParallel(comm, loss_fn, optax.adam(args.lr), min_peers=args.min_peers)
    trainer.init(init_params(jax.random.PRNGKey(0)))  # a joiner receives the run's state instead
    teacher = np.random.default_rng(0).normal(size=16).astype(np.float32) / 4  # one task for all
    rng = np.random.default_rng()  # each peer its own samples of it
    while trainer.step_count < args.steps:
        x = rng.normal(size=(64, 16)).astype(np.float32)
        loss = trainer.step((x, np.sin(x @ teacher)))
        if trainer.step_count % 100 == 0 or trainer.step_count == args.steps:
            print(f"step {trainer.step_count:5d}  loss {float(loss):.4f}  peers {trainer.world_size}"
                  f"  state {trainer.digest()[:16]}", flush=True)
    comm.close()


if __name__ == "__main__":
    main()
