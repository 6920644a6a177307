"""One peer of the multi-process DiLoCo tests (launched by tests/harness.py).

Same command line and report format as tests/peer_scenarios.py, whose
Recorder and join() it reuses. Every peer trains the toy problem of
tests/diloco/problem.py (peer i pulls the params toward its own target), so
the test process can replay the whole run in numpy and compare.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import problem  # noqa: E402
from peer_scenarios import Recorder, encode, join  # noqa: E402


def flat(tree) -> np.ndarray:
    import jax
    return np.concatenate([np.asarray(x).reshape(-1) for x in jax.tree_util.tree_leaves(tree)])


def train(ctx, config: dict, steps: int, shared_state: bool):
    """Runs one DiLoCo configuration for `steps` inner steps; returns its record."""
    import jax
    import optax

    from jax_pccl import diloco

    pccl, comm, index = ctx.pccl, ctx.comm, ctx.index
    run = diloco.DiLoCo(comm, diloco.nesterov(problem.OUTER_LR, problem.OUTER_MOMENTUM),
                        shared_state=shared_state, **config)
    local = run.init(problem.initial_params())
    inner = optax.sgd(problem.INNER_LR)
    opt_state = inner.init(local)
    target = problem.target(index)

    @jax.jit
    def inner_step(params, opt_state):
        grads = jax.grad(problem.loss)(params, target)
        updates, opt_state = inner.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    digests = []  # (t, digest) after every completed sync, as the driver saw it
    for _ in range(steps):
        local, opt_state = inner_step(local, opt_state)
        before = len(run.tally.syncs)
        local = run.step(local)
        digests += [(r.t, r.digest) for r in run.tally.syncs[before:]]
    global_params, local = run.finish(local)
    del pccl
    return {
        "syncs": [{"t": r.t, "fragment": r.fragment, "contributors": r.contributors,
                   "payload_bytes": r.payload_bytes, "bytes_sent": r.bytes_sent,
                   "retries": r.retries, "digest": r.digest} for r in run.tally.syncs],
        "global": encode(flat(global_params).astype(np.float32)),
        "final_digest": run.state_digest(),
        "state_syncs": run.tally.state_syncs,
        "digests": digests,
    }


def scenario_outer_step(ctx):
    """The pure outer_step, eagerly and under jit, on per-peer local params."""
    import jax

    from jax_pccl import diloco

    outer = diloco.nesterov(problem.OUTER_LR, problem.OUTER_MOMENTUM)
    for mode in ("eager", "jit"):
        state = diloco.outer_init(problem.initial_params(), outer)
        fn = lambda s, l: diloco.outer_step(s, l, ctx.comm, outer)  # noqa: E731
        fn = jax.jit(fn) if mode == "jit" else fn
        results = []
        for k in range(2):
            state = fn(state, problem.local_params(ctx.index, k))
            results.append({"params": encode(flat(state.params).astype(np.float32)),
                            "trace": encode(flat(state.opt_state).astype(np.float32)),
                            "step": int(state.step)})
        ctx.rec.check(f"outer_step/{mode}", lambda r=results: r)


def scenario_modes(ctx):
    """Every DiLoCo shape of problem.MODES, one after the other (same order on every peer)."""
    shared = ctx.args.aux == "shared_state"
    for name, config in problem.MODES.items():
        ctx.rec.check(f"mode/{name}", lambda c=config: train(ctx, c, problem.STEPS, shared))


QUANT_FORMATS = (None, "zero_point_uint8", "bfloat16")  # None: the reference run


def scenario_quant_formats(ctx):
    """Sync DiLoCo with each wire format of the pseudo-gradient, one after the other."""
    for quantization in QUANT_FORMATS:
        config = dict(problem.MODES["sync"], quantization=quantization)
        ctx.rec.check(f"quant/{quantization}", lambda c=config: train(ctx, c, problem.STEPS, True))


def scenario_all(ctx):
    scenario_outer_step(ctx)
    scenario_modes(ctx)


SCENARIOS = {"outer_step": scenario_outer_step, "modes": scenario_modes, "all": scenario_all,
             "quant_formats": scenario_quant_formats}


class Ctx:
    def __init__(self, args, pccl, comm, rec):
        self.args, self.pccl, self.comm, self.rec, self.index = args, pccl, comm, rec, args.index


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--aux", default=None)
    p.add_argument("--join-mode", choices=("step", "topology"), default="topology")
    p.add_argument("--join-timeout", type=float, default=60.0)
    args = p.parse_args(argv)

    rec = Recorder(args.out, args.index)
    try:
        import jax_pccl as pccl

        t0 = time.monotonic()
        comm = join(pccl, args)
        rec.data["meta"] = {"rank": int(comm.rank), "world_size": int(comm.world_size),
                            "join_s": time.monotonic() - t0}
        rec.flush()
        SCENARIOS[args.scenario](Ctx(args, pccl, comm, rec))
        comm.close()
        rec.data["done"] = True
        rec.flush()
        return 0
    except BaseException as exc:
        from peer_scenarios import describe_error
        rec.data["fatal"] = dict(describe_error(exc), traceback=traceback.format_exc()[-4000:])
        rec.flush()
        traceback.print_exc()
        return 3


if __name__ == "__main__":
    sys.exit(main())
