"""A DataParallel peer of tests/test_elastic.py, and the toy problem it trains.

Peer i trains a linear model with adam on batches drawn from (i, step), so a
replay of the run (test_elastic.reference_params) knows every gradient that
was averaged. The peer steps until the run's step count reaches the number
the test writes to --stop-file (or --max-steps), sleeping --step-s per step
and pausing while the run has reached the step in --hold-file.
Once the run reaches the step written to --die-file, the peer SIGKILLs itself
inside its next jitted step, before that step's all-reduce: the others are
then in that all-reduce and see it fail.
Writes JSON lines to --out:

  {"joined": step_count, "digest": d, "group": n}           after init()
  {"step": s, "world": w, "digest": d, "loss": x, "retries": k}   after each step
  {"done": s, "digest": d, "params": {...}, "retries": k}
  {"error": type, "message": m, "step": s}   an expected PcclError (e.g. QuorumError)
  {"fatal": type, "message": m, "traceback": t}
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

import numpy as np

FEATURES = 4
BATCH = 16
LEARNING_RATE = 0.05
TRUE_W = np.array([1.0, -2.0, 0.5, 3.0], np.float32)


def initial_params() -> dict:
    return {"w": np.zeros(FEATURES, np.float32), "b": np.zeros((), np.float32)}


def batch(index: int, step: int) -> tuple:
    """Peer `index`'s batch for the step that takes the run from `step` to step + 1."""
    rng = np.random.default_rng([index, step])
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    y = (x @ TRUE_W + 0.5 + 0.1 * rng.normal(size=BATCH)).astype(np.float32)
    return x, y


def loss_fn(params, batch):
    import jax.numpy as jnp

    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def optimizer():
    import optax

    return optax.adam(LEARNING_RATE)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--connect-min", type=int, default=1, help="connect(min_peers=...)")
    ap.add_argument("--min-peers", type=int, default=1)
    ap.add_argument("--below-min", default="wait")
    ap.add_argument("--wait-timeout", type=float, default=None)
    ap.add_argument("--step-s", type=float, default=0.0)
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--die-file", default=None)
    ap.add_argument("--die-after-file", default=None,
                    help="when dying, first wait inside the step until this file exists")
    ap.add_argument("--hold-file", default=None)
    ap.add_argument("--rollback-at", type=int, default=None,
                    help="after completing this step, take the state back to before it and call "
                         "step() again with the same batch, as if the step had failed here only")
    ap.add_argument("--timeout", type=float, default=10.0, help="the communicator's timeout")
    args = ap.parse_args()
    out = open(args.out, "a", buffering=1)

    def emit(**record):
        out.write(json.dumps(record) + "\n")

    def read_int(path: str | None, default: int) -> int:
        try:
            with open(path) as f:
                return int(f.read())
        except (TypeError, FileNotFoundError, ValueError):
            return default

    dying = False

    def die_now() -> None:
        if dying:
            while args.die_after_file and not os.path.exists(args.die_after_file):
                time.sleep(0.02)  # stalls the others in this step's all-reduce
            os.kill(os.getpid(), signal.SIGKILL)

    def train_loss(params, batch):
        import jax

        jax.debug.callback(die_now, ordered=True)  # runs before the all-reduce
        return loss_fn(params, batch)

    try:
        import jax_pccl as pccl

        comm = pccl.Communicator(args.master, timeout=args.timeout)
        comm.connect(min_peers=args.connect_min, timeout=120)
        trainer = pccl.DataParallel(comm, train_loss, optimizer(), min_peers=args.min_peers,
                                    below_min=args.below_min, wait_timeout=args.wait_timeout)
        trainer.init(initial_params())
        emit(joined=trainer.step_count, digest=trainer.digest(), group=comm.group_world_size)

        try:
            while trainer.step_count < min(read_int(args.stop_file, args.max_steps), args.max_steps):
                s = trainer.step_count
                while s >= read_int(args.hold_file, 1 << 30):
                    time.sleep(0.02)
                dying = s >= read_int(args.die_file, 1 << 30)
                before = trainer._params, trainer._opt_state, trainer._step, trainer._world
                loss = trainer.step(batch(args.index, s))
                emit(step=trainer.step_count, world=trainer.world_size, digest=trainer.digest(),
                     loss=float(loss), retries=trainer.retries)
                if trainer.step_count == args.rollback_at:
                    args.rollback_at = None
                    trainer._params, trainer._opt_state, trainer._step, trainer._world = before
                    emit(rolled_back=trainer.step_count)
                if args.step_s:
                    time.sleep(args.step_s)
        except pccl.QuorumError as exc:
            emit(error=type(exc).__name__, message=str(exc), step=trainer.step_count,
                 digest=trainer.digest())
            comm.close()
            return 0
        emit(done=trainer.step_count, digest=trainer.digest(), retries=trainer.retries,
             params={k: np.asarray(v).tolist() for k, v in trainer.params.items()})
        comm.close()
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        emit(fatal=type(exc).__name__, message=str(exc)[:2000], traceback=traceback.format_exc()[-3000:])
        return 3


if __name__ == "__main__":
    sys.exit(main())
