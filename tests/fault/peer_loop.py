"""A peer that trains 'forever': one jitted all_reduce per step, retried on
peer failure. Peer `index` contributes 2**index, so every result is the
bitmask of exactly the peers that took part. Writes JSON lines:
  {"ok": step, "mask": m, "world": w, "exact": bool, "t": unix time}
  {"failure": type, "message": ..., "t": unix time, "since_start": s}
  {"fatal": type, "message": ..., "t": ...}   (then exits)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--elements", type=int, default=1 << 20)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--shape", choices=["update_first", "step_first"], default="update_first")
    args = ap.parse_args()

    import jax

    import jax_pccl as pccl

    out = open(args.out, "a", buffering=1)

    def emit(**record):
        record["t"] = time.time()
        out.write(json.dumps(record) + "\n")

    t_connect = time.time()
    comm = pccl.Communicator(args.master, timeout=args.timeout).connect(timeout=120)
    emit(connected=comm.rank, world=comm.world_size, connect_s=time.time() - t_connect)
    step_fn = jax.jit(lambda x: pccl.all_reduce(x, comm, op="sum", return_info=True))
    x = np.full(args.elements, 1 << args.index, np.int32)
    end = time.time() + args.seconds
    step = 0
    while time.time() < end:
        try:
            if args.shape == "update_first":
                comm.update_topology()
            t0 = time.time()
            y, info = step_fn(x)
            y = np.asarray(y)
            emit(ok=step, mask=int(y[0]), world=int(info.world_size),
                 exact=bool((y == y[0]).all()), took=time.time() - t0)
            step += 1
            if args.shape == "step_first":
                comm.update_topology()
        except Exception as exc:  # noqa: BLE001 - classified below
            if pccl.is_peer_failure(exc):
                emit(failure=type(exc).__name__, message=str(exc)[:300])
                try:
                    comm.update_topology()
                except Exception as exc2:  # noqa: BLE001
                    if not pccl.is_peer_failure(exc2):
                        emit(fatal=type(exc2).__name__, message=str(exc2)[:300])
                        return 3
                continue
            emit(fatal=type(exc).__name__, message=str(exc)[:300])
            return 3
    emit(done=step, world=comm.world_size)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
