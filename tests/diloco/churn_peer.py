"""A DiLoCo peer of the churn tests: trains tests/diloco/problem.py, sleeping
--step-s per inner step, until the run's inner step reaches the number the
test writes to --stop-file (the test picks one every peer reads in time).
Writes JSON lines to --out:

  {"joined": t, "revision": r, "digest": d, "cursor": [t, action, retrying]}   after init()
  {"holding": t}                                  waiting at --hold-file
  {"sync": t, "fragment": p, "contributors": n, "world": w, "retries": k, "digest": d}
  {"done": t, "digest": d, "global": [...], "recoveries": n, "state_syncs": [...]}
  {"fatal": type, "message": ...}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import problem  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--world", type=int, default=0, help="wait for this many peers before starting")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="sync", choices=sorted(problem.MODES))
    ap.add_argument("--inner-steps", type=int, default=10)
    ap.add_argument("--stop-file", required=True,
                    help="the test writes the inner step to stop at here (read every step)")
    ap.add_argument("--step-s", type=float, default=0.02)
    ap.add_argument("--hold-file", default=None,
                    help="while this file holds a number t, stop before the inner step that would reach t")
    args = ap.parse_args()
    out = open(args.out, "a", buffering=1)

    def emit(**record):
        out.write(json.dumps(record) + "\n")

    try:
        import jax
        import optax

        import jax_pccl as pccl
        from jax_pccl import diloco

        comm = pccl.Communicator(args.master, timeout=10.0).connect(timeout=120)
        while comm.world_size < args.world:
            comm.update_topology()
            time.sleep(0.02)
        config = dict(problem.MODES[args.mode], inner_steps=args.inner_steps)
        if config.get("fragments", 1) > 1:
            config["overlap"] = 1
        if config.get("overlap", 0) > 1:  # async: one outer step late
            config["overlap"] = args.inner_steps
        run = diloco.DiLoCo(comm, diloco.nesterov(problem.OUTER_LR, problem.OUTER_MOMENTUM), **config)
        local = run.init(problem.initial_params())
        emit(joined=run.t, revision=run.revision, digest=run.state_digest(), world=comm.world_size,
             cursor=[int(v) for v in run.state.cursor])
        emitted = 0

        def emit_syncs():  # syncs completed since the last call (init() may complete one)
            nonlocal emitted
            for r in run.tally.syncs[emitted:]:
                emit(sync=r.t, fragment=r.fragment, contributors=r.contributors, world=comm.world_size,
                     retries=r.retries, digest=r.digest)
            emitted = len(run.tally.syncs)

        emit_syncs()
        inner = optax.sgd(problem.INNER_LR)
        opt_state = inner.init(local)
        target = problem.target(args.index)

        @jax.jit
        def inner_step(params, opt_state):
            grads = jax.grad(problem.loss)(params, target)
            updates, opt_state = inner.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        def stop_at() -> int:
            try:
                with open(args.stop_file) as f:
                    return int(f.read())
            except (FileNotFoundError, ValueError):
                return 1 << 30

        def hold_at() -> int:
            try:
                with open(args.hold_file) as f:
                    return int(f.read())
            except (TypeError, FileNotFoundError, ValueError):
                return 1 << 30

        holding = False
        while run.t < stop_at():
            while run.t + 1 >= hold_at():
                if not holding:
                    emit(holding=run.t)
                    holding = True
                time.sleep(0.02)
            holding = False
            local, opt_state = inner_step(local, opt_state)
            time.sleep(args.step_s)
            local = run.step(local)
            emit_syncs()
        global_params, _ = run.finish(local)
        emit_syncs()
        emit(done=run.t, digest=run.state_digest(), recoveries=run.tally.recoveries,
             global_params=problem.flat(global_params).tolist(),
             state_syncs=run.tally.state_syncs)
        comm.close()
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        emit(fatal=type(exc).__name__, message=str(exc)[:2000], traceback=traceback.format_exc()[-3000:])
        return 3


if __name__ == "__main__":
    sys.exit(main())
