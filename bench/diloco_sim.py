"""Single-process simulator of examples/diloco_train.py, for hyper-parameter sweeps.

    python bench/diloco_sim.py --task digits --modes ddp,diloco,async --lr 1e-3,3e-3 --batch 32,64

The W peers are one vmapped, jitted inner step (same task, sampler seeds,
AdamW warmup + cosine schedule as the example); DDP averages the W peers'
gradients at every step; the DiLoCo modes follow jax_pccl.diloco's schedule
(fragments.Schedule, fragments.Fragments) and its outer update (pseudo-gradient
averaged over the peers, the outer optax optimizer, progress made while a
fragment was in flight kept), without a network. One JSON line per run: final
eval loss of the global params and its ratio to DDP at the same (lr, batch,
steps) and to the best DDP of the grid.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import diloco_tasks  # noqa: E402

from jax_pccl import diloco  # noqa: E402
from jax_pccl.diloco import Fragments, Schedule  # noqa: E402


def make_inner(lr: float, steps: int) -> optax.GradientTransformation:
    # as examples/diloco_train.py: AdamW, 5% warmup, cosine decay to lr/20
    return optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, steps // 20, steps, lr / 20))


def simulate(task, mode: str, *, world: int, steps: int, H: int, batch: int, lr: float,
             outer_lr: float, outer_momentum: float, fragments: int, iid: bool, seed: int = 0,
             eval_every: int = 0, nesterov: bool = True, async_mix: float = 1.0,
             async_eager: str = "none", async_keep: float = 1.0) -> dict:
    inner = make_inner(lr, steps)
    samplers = [task.sampler(i, world, seed=i, batch_size=batch, iid=iid) for i in range(world)]
    params = task.init(jax.random.PRNGKey(seed))
    evaluate = jax.jit(task.evaluate)
    curve = []

    def batches():
        return jax.tree_util.tree_map(lambda *b: np.stack(b), *[s() for s in samplers])

    if mode == "ddp":
        @jax.jit
        def step(p, o, b):
            g = jax.vmap(jax.grad(task.loss), in_axes=(None, 0))(p, b)
            g = jax.tree_util.tree_map(lambda x: x.mean(0), g)
            u, o = inner.update(g, o, p)
            return optax.apply_updates(p, u), o

        opt = inner.init(params)
        for t in range(1, steps + 1):
            params, opt = step(params, opt, batches())
            if eval_every and t % eval_every == 0:
                curve.append(round(float(evaluate(params, task.eval_batch)[0]), 4))
        model = params
    else:
        F = fragments if mode == "streaming" else 1
        overlap = {"streaming": 1, "async": H}.get(mode, 0)
        sched = Schedule(H, F, overlap)
        frag = Fragments(params, F)
        outer = (diloco.nesterov(outer_lr, outer_momentum) if nesterov else
                 optax.sgd(outer_lr, momentum=outer_momentum))  # heavy ball
        # Experiment (async only, not in jax_pccl.diloco): each peer restarts the inner phase
        # from new + mix * (own progress while in flight) + (1 - mix) * (averaged progress of the
        # phase just completed, = -pseudo); the pseudo-gradients sent still count every peer's
        # real progress, so the global params and outer state stay identical on every peer.
        if async_mix != 1.0 and mode != "async":
            raise ValueError("--async-mix applies to mode async only")
        # Experiment (async only, not in jax_pccl.diloco): "eager" start points. When the delayed
        # update lands, each peer starts its next inner phase where one more outer step would
        # take the new global params if the still-missing average were estimated from what the
        # peer knows: "own" = its own progress while in flight, "avg" = that for its 1/W share
        # and the average just received for the others' (W-1)/W. The step is only previewed
        # (the outer state is not advanced) and the pseudo-gradients still count every peer's
        # real progress, so the global params and outer state stay identical on every peer.
        if async_eager != "none" and (mode != "async" or async_mix != 1.0):
            raise ValueError("--async-eager applies to mode async (with --async-mix 1) only")
        # Experiment (async only): when the delayed update lands, each peer keeps only
        # keep x its own progress while in flight on top of the new global params (1 = all of
        # it, jax_pccl.diloco's async; 0 = none, every peer restarts from the new global
        # params). The progress still goes whole into the next pseudo-gradient.
        if async_keep != 1.0 and (mode != "async" or async_mix != 1.0 or async_eager != "none"):
            raise ValueError("--async-keep applies to mode async (without --async-mix/--async-eager) only")
        shifts = {}
        stack = lambda tree: jax.tree_util.tree_map(lambda x: jnp.stack([x] * world), tree)  # noqa: E731
        local = stack(params)
        opt = jax.vmap(inner.init)(local)
        g = params
        outer_states = [outer.init(frag.gather(params, p)) for p in range(F)]
        pending = {}

        @jax.jit
        def step(local, opt, b):
            def one(p, o, bb):
                gr = jax.grad(task.loss)(p, bb)
                u, o = inner.update(gr, o, p)
                return optax.apply_updates(p, u), o
            return jax.vmap(one)(local, opt, b)

        def send(g, local, p):
            gp = frag.gather(g, p)
            lp = jax.vmap(lambda l: frag.gather(l, p))(local)
            pseudo = jax.tree_util.tree_map(lambda a, b: (a[None] - b).mean(0), gp, lp)
            return pseudo, lp

        def complete(g, os_p, local, pseudo, at_send, p):
            gp = frag.gather(g, p)
            u, os_p = outer.update(pseudo, os_p, gp)
            new = optax.apply_updates(gp, u)
            lp = jax.vmap(lambda l: frag.gather(l, p))(local)
            if overlap == 0:
                nl = jax.tree_util.tree_map(lambda n, l: jnp.broadcast_to(n, l.shape), new, lp)
            else:
                nl = jax.tree_util.tree_map(lambda n, now, sent: n[None] + (now - sent), new, lp, at_send)
            local = jax.vmap(lambda l, part: frag.scatter(l, p, part))(local, nl)
            return frag.scatter(g, p, new), os_p, local

        send_j = [jax.jit(lambda g, l, p=p: send(g, l, p)) for p in range(F)]
        complete_j = [jax.jit(lambda g, o, l, ps, a, p=p: complete(g, o, l, ps, a, p)) for p in range(F)]

        @jax.jit
        def eager_shift(new, os_p, local, pseudo):
            # local = new + own progress (per peer); returns the move to the previewed point
            progress = jax.tree_util.tree_map(lambda l, n: l - n[None], local, new)
            share = 1.0 if async_eager == "own" else 1.0 / world
            est = jax.tree_util.tree_map(lambda pr, ps: share * -pr + (1 - share) * ps[None],
                                         progress, pseudo)
            u = jax.vmap(lambda e: outer.update(e, os_p, new)[0])(est)
            return jax.tree_util.tree_map(lambda uu, pr: uu - pr, u, progress)

        @jax.jit
        def shift_of(local, pseudo, at_send):
            return jax.tree_util.tree_map(lambda now, ps, sent: (1 - async_mix) * (-ps[None] - (now - sent)),
                                          local, pseudo, at_send)

        @jax.jit
        def keep_shift(local, new):
            return jax.tree_util.tree_map(lambda l, n: (async_keep - 1.0) * (l - n[None]), local, new)

        def finish_one(p, local):
            nonlocal g
            pseudo, at_send = pending.pop(p)
            if async_mix != 1.0:
                shifts[p] = shift_of(local, pseudo, at_send)
            g, outer_states[p], local = complete_j[p](g, outer_states[p], local, pseudo, at_send)
            if async_eager != "none":
                shifts[p] = eager_shift(g, outer_states[p], local, pseudo)
            if async_keep != 1.0:
                shifts[p] = keep_shift(local, g)
            return local

        for t in range(1, steps + 1):
            local, opt = step(local, opt, batches())
            for p in sched.waits_at(t):
                local = finish_one(p, local)
            for p in sched.sends_at(t):
                pending[p] = send_j[p](g, local)
                if p in shifts:  # the next phase starts (and its progress is measured) from the shifted point
                    sh = shifts.pop(p)
                    add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)  # noqa: E731
                    local = add(local, sh)
                    pending[p] = (pending[p][0], add(pending[p][1], sh))
                if overlap == 0:
                    local = finish_one(p, local)
            if eval_every and t % eval_every == 0:
                curve.append(round(float(evaluate(g, task.eval_batch)[0]), 4))
        for p in sorted(pending):
            local = finish_one(p, local)
        model = g
    loss, acc = evaluate(model, task.eval_batch)
    out = {"loss": round(float(loss), 5), "acc": round(float(acc), 4)}
    if curve:
        out["curve"] = curve
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits", choices=sorted(diloco_tasks.TASKS))
    ap.add_argument("--modes", default="ddp,diloco,async")
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--steps", default="1024", help="comma-separated grid")
    ap.add_argument("--H", default="64")
    ap.add_argument("--batch", default="32")
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--outer", default="0.7:0.9", help="comma-separated lr:momentum pairs")
    ap.add_argument("--fragments", type=int, default=4)
    ap.add_argument("--iid", default="0", help="0 (peer i samples shard i), 1 (every peer samples "
                                               "the whole training set) or 0,1")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--nesterov", type=int, default=1, help="outer SGD momentum: 1 Nesterov, 0 heavy ball")
    ap.add_argument("--async-mix", default="1", help="experiment, async only (comma-separated grid): "
                    "restart each inner phase from new + mix * own progress + (1 - mix) * the "
                    "averaged progress just received; 1 = jax_pccl.diloco's async")
    ap.add_argument("--async-eager", default="none", choices=["none", "own", "avg"],
                    help="experiment, async only: start each inner phase where one previewed "
                         "outer step would go, estimating the missing average from the peer's own "
                         "progress (own) or from it for its 1/W share and the received average "
                         "for the rest (avg); none = jax_pccl.diloco's async")
    ap.add_argument("--async-keep", type=float, default=1.0,
                    help="experiment, async only: keep this fraction of each peer's own progress "
                         "while in flight when the delayed update lands; 1 = jax_pccl.diloco's async")
    ap.add_argument("--seed", type=int, default=0, help="model init seed (as the example's --seed)")
    ap.add_argument("--task-kw", default="", help="keyword arguments of the task's constructor, e.g. "
                                                  "d_model=32,layers=2 (chars); default: the task's own")
    args = ap.parse_args()

    task_kw = {k: int(v) for k, v in (kv.split("=") for kv in args.task_kw.split(",") if kv)}
    task = diloco_tasks.TASKS[args.task](**task_kw)
    grid = lambda s, f: [f(x) for x in s.split(",")]  # noqa: E731
    modes = args.modes.split(",")
    outers = [tuple(float(v) for v in o.split(":")) for o in args.outer.split(",")]
    best_ddp = {}
    for steps, batch, iid, H in itertools.product(grid(args.steps, int), grid(args.batch, int),
                                                  grid(args.iid, int), grid(args.H, int)):
        ddp = {}
        for lr in grid(args.lr, float):
            for mode in modes:
                for (olr, om), mix in ([((None, None), 1.0)] if mode == "ddp" else
                                       itertools.product(outers, grid(args.async_mix, float)
                                                         if mode == "async" else [1.0])):
                    t0 = time.time()
                    r = simulate(task, mode, world=args.world, steps=steps, H=H, batch=batch, lr=lr,
                                 outer_lr=olr, outer_momentum=om, fragments=args.fragments,
                                 iid=bool(iid), eval_every=args.eval_every, seed=args.seed,
                                 nesterov=bool(args.nesterov), async_mix=mix,
                                 async_eager=args.async_eager if mode == "async" else "none",
                                 async_keep=args.async_keep if mode == "async" else 1.0)
                    line = {"task": args.task, "mode": mode, "steps": steps, "batch": batch,
                            "iid": iid, "lr": lr, "seed": args.seed}
                    if task_kw:
                        line["task_kw"] = task_kw
                    if mode == "ddp":
                        ddp[lr] = r["loss"]
                        key = (steps, batch, iid)
                        best_ddp[key] = min(best_ddp.get(key, np.inf), r["loss"])
                    else:
                        line.update(H=H, outer=[olr, om])
                        if not args.nesterov:
                            line["nesterov"] = False
                        if mix != 1.0:
                            line["async_mix"] = mix
                        if mode == "async" and args.async_eager != "none":
                            line["async_eager"] = args.async_eager
                        if mode == "async" and args.async_keep != 1.0:
                            line["async_keep"] = args.async_keep
                        if lr in ddp:
                            line["vs_ddp_same_lr"] = round(r["loss"] / ddp[lr], 4)
                    line.update(r, s=round(time.time() - t0, 1))
                    print(json.dumps(line), flush=True)
        if ddp:
            print(json.dumps({"task": args.task, "steps": steps, "batch": batch, "iid": iid,
                              "ddp_lr_sweep": ddp, "ddp_best": min(ddp.values())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
