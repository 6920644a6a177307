"""DiLoCo vs data parallel on real data: 4 local peers, one JSON line per mode.

    pip install '.[examples]'
    python examples/diloco_train.py --task digits            # MLP on sklearn's load_digits
    python examples/diloco_train.py --task chars             # char transformer on the stdlib's sources
    python examples/diloco_train.py --task digits --churn    # peers killed and restarted mid-run
    python examples/diloco_train.py --task chars --steps 8192 --inner-steps 128
        # long enough on chars for every DiLoCo mode to come within 5 % of DDP's eval
        # loss (43 min on 2 cores; examples/diloco_results/README.md)

For every mode it starts a master (in this process) and --peers peer processes
(this script with --peer), which train for the same number of inner steps:

  ddp               all_reduce(avg) of the gradients at every step
  diloco            H inner steps, then the outer step (Nesterov SGD; per-task
                    lr and momentum below: --outer-lr, --outer-momentum)
  streaming         F fragments, each synced every H steps on a staggered
                    schedule, overlapped with 1 inner step of compute
  async             the outer update lands one outer step late (overlap = H)
  diloco+quantized  diloco with minmax_uint8 pseudo-gradients on the wire

Every peer uses the same inner optimizer (AdamW, warmup + cosine decay),
batch size and seed for the model; peer i trains on shard i of the data. The
per-task defaults (TASK_DEFAULTS at the end) were picked from the grid in
examples/diloco_results/README.md (bench/diloco_sim.py). Printed per mode: final eval loss
and accuracy of the global params, bytes each peer put on the wire
(Communicator.stats()["bytes_sent"]), the largest single sync, and whether
all peers ended with bit-identical state. A PNG plots eval loss against inner
steps and against bytes sent.

--churn (DiLoCo modes): peer 1 is SIGKILLed at 30% of the run and restarted,
peer 2 likewise at 55%, and peer 3 is killed for good at 75%. Restarted peers
catch up through the shared state; the survivors must end bit-identical.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("ddp", "diloco", "streaming", "async", "diloco+quantized")


# --- one peer ----------------------------------------------------------------

def peer_main(args) -> int:
    import hashlib

    import jax
    import numpy as np
    import optax

    import jax_pccl as pccl
    from jax_pccl import diloco

    sys.path.insert(0, HERE)
    import diloco_tasks

    task = diloco_tasks.TASKS[args.task]()
    progress = open(args.out + ".progress", "a", buffering=1)

    def emit(**record):
        progress.write(json.dumps(record) + "\n")

    comm = pccl.Communicator(args.master, timeout=30.0).connect(timeout=None)
    if args.restart == 0:  # the run's first peers start together
        while comm.world_size < args.world:
            comm.update_topology()
            time.sleep(0.02)
    next_batch = task.sampler(args.index, args.world, seed=1000 * args.restart + args.index,
                              batch_size=args.batch)
    def make_inner(start: int = 0):
        """The same inner optimizer everywhere: AdamW, 5% warmup, cosine decay
        to lr/20, as a function of the run's inner step (a joiner starts at `start`)."""
        schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, args.steps // 20, args.steps,
                                                      args.lr / 20)
        return optax.adamw(lambda count: schedule(count + start))

    inner = make_inner()
    evaluate = jax.jit(task.evaluate)
    params = task.init(jax.random.PRNGKey(args.seed))  # the same on every peer
    curve = []

    def record(t, model):
        loss, acc = evaluate(model, task.eval_batch)
        curve.append({"t": t, "bytes_sent": comm.stats()["bytes_sent"], "loss": float(loss),
                      "accuracy": float(acc)})
        emit(t=t, loss=float(loss))

    if args.mode == "ddp":
        @jax.jit
        def train_step(params, opt_state, batch):
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            grads = pccl.all_reduce(grads, comm, op="avg")
            updates, opt_state = inner.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        train_step = pccl.retry_on_peer_failure(comm, train_step)
        opt_state = inner.init(params)
        sync_bytes = []
        for t in range(1, args.steps + 1):
            before = comm.stats()["bytes_sent"]
            params, opt_state, _ = train_step(params, opt_state, next_batch())
            time.sleep(args.step_delay)
            sync_bytes.append(comm.stats()["bytes_sent"] - before)
            if args.index == 0 and t % args.eval_every == 0:
                record(t, params)
        model, digest_tree, peak = params, (params, opt_state), max(sync_bytes)
        syncs = len(sync_bytes)
    else:
        run = diloco.DiLoCo(comm, diloco.nesterov(args.outer_lr, args.outer_momentum),
                            inner_steps=args.inner_steps,
                            fragments=args.fragments if args.mode == "streaming" else 1,
                            overlap={"streaming": args.overlap, "async": args.inner_steps}.get(args.mode, 0),
                            quantization="minmax_uint8" if args.mode == "diloco+quantized" else None,
                            shared_state=not args.no_shared_state)
        if args.restart > 0 and comm.world_size == 1:
            # accepted alone: the run it meant to rejoin is over; do not start a new one
            emit(late=True)
            comm.close()
            return 0
        local = run.init(params)  # a restarted peer receives the run's state and step here
        emit(joined=run.t, revision=run.revision, world=comm.world_size)
        inner = make_inner(run.t)
        opt_state = inner.init(local)

        @jax.jit
        def train_step(params, opt_state, batch):
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            updates, opt_state = inner.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        while run.t < args.steps:
            local, opt_state, _ = train_step(local, opt_state, next_batch())
            time.sleep(args.step_delay)
            local = run.step(local)
            if args.index == 0 and run.t % args.eval_every == 0:
                record(run.t, run.global_params)
        model, local = run.finish(local)
        digest_tree = (run.state.params, run.state.opt_states)
        peak = max(s.bytes_sent for s in run.tally.syncs)
        syncs = len(run.tally.syncs)

    loss, acc = evaluate(model, task.eval_batch)
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(digest_tree):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    stats = comm.stats()
    result = {"index": args.index, "restart": args.restart, "eval_loss": float(loss),
              "eval_accuracy": float(acc), "bytes_sent": stats["bytes_sent"], "peak_sync_bytes": peak,
              "syncs": syncs, "digest": h.hexdigest(), "curve": curve, "world_size": comm.world_size}
    with open(args.out, "w") as f:
        json.dump(result, f)
    comm.close()
    return 0


# --- the launcher --------------------------------------------------------------

def peer_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("JAX_PLATFORMS", "cpu")
    # Several peers share a few cores: one XLA thread each.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    return env


def launch_mode(task: str, mode: str, args, workdir: str) -> dict:
    import jax_pccl as pccl

    churn = args.churn and mode != "ddp"
    procs, outs = {}, {}
    with pccl.Master(host="127.0.0.1", port=0) as master:
        def start(index: int, restart: int = 0):
            out = os.path.join(workdir, f"{task}-{mode}-{index}-{restart}.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--peer", "--master", master.address,
                   "--task", task, "--mode", mode, "--index", str(index), "--world", str(args.peers),
                   "--restart", str(restart), "--out", out, "--steps", str(args.steps),
                   "--inner-steps", str(args.inner_steps), "--fragments", str(args.fragments),
                   "--overlap", str(args.overlap), "--lr", str(args.lr), "--seed", str(args.seed),
                   "--batch", str(args.batch),
                   "--eval-every", str(args.eval_every), "--step-delay", str(args.step_delay),
                   "--outer-lr", str(args.outer_lr), "--outer-momentum", str(args.outer_momentum)] + (["--no-shared-state"] if args.no_shared_state else [])
            log = open(out + ".log", "w")
            procs[index] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=peer_env(),
                                            start_new_session=True)
            outs[index] = out

        def kill(index: int):
            os.killpg(procs[index].pid, signal.SIGKILL)
            procs[index].wait()
            del outs[index]

        def progress() -> int:
            try:
                with open(outs[0] + ".progress") as f:
                    return max([json.loads(line).get("t", 0) for line in f if line.strip()] or [0])
            except FileNotFoundError:
                return 0

        t0 = time.time()
        for i in range(args.peers):
            start(i)
        # --churn: (fraction of the run, peer, restart?)
        events = [(0.30, 1, True), (0.55, 2, True), (0.75, 3, False)] if churn else []
        restarts = {i: 0 for i in range(args.peers)}
        while procs[0].poll() is None:
            if time.time() - t0 > args.timeout:
                raise TimeoutError(f"{task}/{mode} did not finish in {args.timeout}s (logs in {workdir})")
            if events and progress() >= events[0][0] * args.steps:
                _, index, again = events.pop(0)
                print(f"[churn] {task}/{mode}: SIGKILL peer {index} at t={progress()}"
                      f"{', restarting it' if again else ''}", file=sys.stderr)
                kill(index)
                if again:
                    time.sleep(1.0)
                    restarts[index] += 1
                    start(index, restarts[index])
            time.sleep(0.1)
        for index, p in procs.items():  # the others finish within moments of peer 0
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    wall = time.time() - t0

    results, late = [], []
    for index, out in sorted(outs.items()):
        try:
            with open(out) as f:
                results.append(json.load(f))
        except (OSError, ValueError):
            if os.path.exists(out + ".progress"):  # absent: the peer died before its first step
                with open(out + ".progress") as f:
                    if any(json.loads(line).get("late") for line in f if line.strip()):
                        late.append(index)  # restarted after the run ended
                        continue
            tail = open(out + ".log").read()[-3000:]
            raise RuntimeError(f"{task}/{mode}: peer {index} left no result:\n{tail}")
    first = results[0]
    return {
        "task": task, "mode": mode, "peers": args.peers, "inner_steps": args.steps,
        "batch_per_peer": args.batch, "lr": args.lr,
        "H": None if mode == "ddp" else args.inner_steps,
        "outer": None if mode == "ddp" else [args.outer_lr, args.outer_momentum],
        "fragments": args.fragments if mode == "streaming" else 1,
        "eval_loss": round(first["eval_loss"], 5), "eval_accuracy": round(first["eval_accuracy"], 4),
        "bytes_sent_per_peer": int(sum(r["bytes_sent"] for r in results) / len(results)),
        "peak_sync_bytes": max(r["peak_sync_bytes"] for r in results),
        "syncs": first["syncs"],
        "peers_finished": len(results),
        "restarted": sorted(r["index"] for r in results if r["restart"] > 0),
        "late_restarts": late,
        "bit_identical": len({r["digest"] for r in results}) == 1,
        "wall_s": round(wall, 1),
        "curve": first["curve"],
    }


def plot(lines: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({line["task"] for line in lines})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 4 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for line in (x for x in lines if x["task"] == task):
            t = [p["t"] for p in line["curve"]]
            loss = [p["loss"] for p in line["curve"]]
            mb = [max(p["bytes_sent"], 1) / 2**20 for p in line["curve"]]
            row[0].plot(t, loss, label=line["mode"])
            row[1].plot(mb, loss, label=line["mode"])
        row[0].set(title=f"{task}: eval loss vs inner steps", xlabel="inner steps", ylabel="eval loss")
        row[1].set(title=f"{task}: eval loss vs bytes sent per peer", xlabel="MiB sent (peer 0)",
                   ylabel="eval loss", xscale="log")
        for ax in row:
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits", choices=["digits", "chars", "both"])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="inner steps per peer (task default)")
    ap.add_argument("--inner-steps", type=int, default=None, help="H (task default)")
    ap.add_argument("--fragments", type=int, default=None, help="F for streaming (task default)")
    ap.add_argument("--overlap", type=int, default=1, help="streaming: inner steps a fragment is in flight")
    ap.add_argument("--lr", type=float, default=None, help="inner AdamW learning rate (task default)")
    ap.add_argument("--batch", type=int, default=None, help="batch size per peer (task default)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="inner steps between eval points of the curve (default: steps / 16)")
    ap.add_argument("--outer-lr", type=float, default=None, help="outer Nesterov SGD learning rate "
                                                                 "(task default)")
    ap.add_argument("--outer-momentum", type=float, default=None, help="outer Nesterov momentum "
                                                                       "(task default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--churn", action="store_true")
    ap.add_argument("--step-delay", type=float, default=None,
                    help="seconds of extra 'compute' per inner step (default 0; 0.03 with --churn, so "
                         "restarted peers are up before the run ends)")
    ap.add_argument("--no-shared-state", action="store_true", help="(no joiners can catch up)")
    ap.add_argument("--plot", default=None, help="PNG path (default: diloco_<task>.png in --out)")
    ap.add_argument("--out", default=None, help="directory for peer logs and the plot")
    ap.add_argument("--timeout", type=float, default=1800)
    # internal: one peer
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--master", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--restart", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        return peer_main(args)

    tasks = ["digits", "chars"] if args.task == "both" else [args.task]
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        ap.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    missing = missing_requirements(tasks)
    if missing:
        print(f"diloco_train.py: {missing}", file=sys.stderr)
        return 2
    workdir = args.out or tempfile.mkdtemp(prefix="diloco-")
    os.makedirs(workdir, exist_ok=True)
    lines = []
    for task in tasks:
        run_args = argparse.Namespace(**vars(args))
        if run_args.step_delay is None:
            run_args.step_delay = 0.03 if args.churn else 0.0
        for key, value in TASK_DEFAULTS[task].items():
            if getattr(run_args, key) is None:
                setattr(run_args, key, value)
        if run_args.eval_every is None:  # 16 points: evaluating costs more than a few inner steps
            run_args.eval_every = max(1, run_args.steps // 16)
        for mode in modes:
            line = launch_mode(task, mode, run_args, workdir)
            lines.append(line)
            print(json.dumps({k: v for k, v in line.items() if k != "curve"}), flush=True)
    path = args.plot or os.path.join(workdir, f"diloco_{args.task}.png")
    try:
        plot(lines, path)
        print(f"plot: {path}", file=sys.stderr)
    except ImportError:
        print("matplotlib is not installed (pip install '.[examples]'): no plot", file=sys.stderr)
    with open(os.path.join(workdir, f"diloco_{args.task}.jsonl"), "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return 0


def missing_requirements(tasks) -> str | None:
    """What the run needs and cannot import, with the command that installs it."""
    import importlib

    needs = {"optax": "optax"}
    if "digits" in tasks:
        needs["sklearn"] = "scikit-learn"  # the digits data set ships with it
    absent = []
    for module, package in needs.items():
        try:
            importlib.import_module(module)
        except ImportError:
            absent.append(package)
    if not absent:
        return None
    return (f"{', '.join(absent)} not installed: pip install '.[examples]' "
            f"(or pip install {' '.join(absent)})")


# Per-task hyper-parameters (also what examples/diloco_results/ was measured
# with), picked with bench/diloco_sim.py from the grid listed in
# examples/diloco_results/README.md; lr is DDP's best inner lr of that grid.
# The outer optimizer is Nesterov SGD lr 1.0, momentum 0.5 (DiLoCo's usual
# 0.7/0.9 overshoots with only 16 outer steps).
TASK_DEFAULTS = {
    "digits": dict(steps=1024, inner_steps=64, fragments=5, lr=1e-2, batch=64, outer_lr=1.0,
                   outer_momentum=0.5),
    "chars": dict(steps=1024, inner_steps=64, fragments=4, lr=3e-3, batch=16, outer_lr=1.0,
                  outer_momentum=0.5),
}

if __name__ == "__main__":
    sys.exit(main())
