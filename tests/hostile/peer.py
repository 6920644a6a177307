"""A correct peer for the hostile-input run, holding the shared secret
($PCCL_HOSTILE_SECRET_HEX). Writes JSON lines to --out.

  resident  joins at once and all_reduces in a loop (alone, until a joiner
            arrives) until --stop-file exists; its ring listener is a target
  joiner    imports JAX, then waits for --go-file (so "right after the
            attack" is not delayed by start-up), joins, and all_reduces until
            it has --steps results with the resident

Each peer contributes `value`, so a world-2 sum must equal the two values.
Records: {"connected": s}, {"ok": step, "world": w, "sum": [...]},
{"failure": type, "message": ...}, {"fatal": type, "message": ...}, {"done": n}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def wait_for(path: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--role", choices=["resident", "joiner"], required=True)
    ap.add_argument("--value", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, required=True, help="hard limit on this peer's life")
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--go-file", default="")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    import jax

    import jax_pccl as pccl

    out = open(args.out, "a", buffering=1)

    def emit(**record):
        record["t"] = time.time()
        out.write(json.dumps(record) + "\n")

    end = time.monotonic() + args.seconds
    if args.role == "joiner" and not wait_for(args.go_file, args.seconds):
        emit(fatal="Timeout", message="no go signal")
        return 3
    secret = bytes.fromhex(os.environ["PCCL_HOSTILE_SECRET_HEX"])
    t0 = time.monotonic()
    comm = pccl.Communicator(args.master, secret=secret, timeout=10.0)
    comm.connect(timeout=max(1.0, end - time.monotonic()))
    emit(connected=time.monotonic() - t0)
    step_fn = jax.jit(lambda x: pccl.all_reduce(x, comm, op="sum", return_info=True))
    x = np.full(8, args.value, np.int32)
    step = with_two = 0
    while time.monotonic() < end:
        if args.stop_file and os.path.exists(args.stop_file):
            break
        if args.role == "joiner" and with_two >= args.steps:
            break
        try:
            comm.update_topology()
            y, info = step_fn(x)
            y = np.asarray(y)
            emit(ok=step, world=int(info.world_size), sum=y.tolist())
            step += 1
            with_two += int(info.world_size) == 2
        except Exception as exc:  # noqa: BLE001 - classified below
            if not pccl.is_peer_failure(exc):
                emit(fatal=type(exc).__name__, message=str(exc)[:300])
                return 3
            emit(failure=type(exc).__name__, message=str(exc)[:300])
        if args.role == "resident":
            time.sleep(0.05)
    emit(done=step)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
