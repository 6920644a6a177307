"""`jax-pccl demo`: a master and N local peers train a small MLP data-parallel.

Each peer owns a different shard of a synthetic regression task; every step's
gradients are averaged with ``all_reduce`` inside one jitted step, so all peers
hold bit-identical parameters throughout (checked by hash at the end).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from .progress import Progress

IN_DIM, HIDDEN, OUT_DIM = 32, 256, 8


def _params_hash(params) -> str:
    import jax

    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(params):
        h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()[:16]


def _make_data(rank: int, batch: int, steps: int):
    """A fixed random 'teacher' MLP labels inputs; peers draw different inputs."""
    teacher = np.random.default_rng(0)
    w1 = teacher.normal(size=(IN_DIM, HIDDEN)) / np.sqrt(IN_DIM)
    w2 = teacher.normal(size=(HIDDEN, OUT_DIM)) / np.sqrt(HIDDEN)
    rng = np.random.default_rng(1000 + rank)
    x = rng.normal(size=(steps, batch, IN_DIM)).astype(np.float32)
    y = (np.tanh(x @ w1) @ w2).astype(np.float32)
    return x, y


def run_peer(address: str, peers: int, steps: int, batch: int, lr: float) -> int:
    import jax
    import jax.numpy as jnp

    import jax_pccl as pccl

    comm = pccl.Communicator(address, timeout=30.0).connect(timeout=120.0)
    while comm.group_world_size < peers:  # wait for the others to join
        comm.update_topology()
        time.sleep(0.02)
    rank = comm.rank
    key = jax.random.PRNGKey(42)  # same seed everywhere: identical start
    k1, k2 = jax.random.split(key)
    params = {
        "w1": jax.random.normal(k1, (IN_DIM, HIDDEN)) / np.sqrt(IN_DIM),
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k2, (HIDDEN, OUT_DIM)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros(OUT_DIM),
    }

    def loss_fn(p, x, y):
        pred = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return jnp.mean((pred - y) ** 2)

    @jax.jit
    def train_step(p, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        # donate: the reduced gradients reuse the local gradients' buffers
        grads, info = pccl.all_reduce(grads, comm, op="avg", return_info=True, donate=True)
        loss = pccl.all_reduce(loss, comm, op="avg")
        p = jax.tree_util.tree_map(lambda w, g: w - lr * g, p, grads)
        return p, loss, info.world_size

    # A peer that dies mid-step costs one retry over the survivors, not the run.
    train_step = pccl.retry_on_peer_failure(comm, train_step)
    xs, ys = _make_data(rank, batch, steps)
    params, loss, _ = train_step(params, xs[0], ys[0])  # compile + warm up
    jax.block_until_ready(params)
    grad_bytes = sum(int(np.asarray(v).nbytes) for v in params.values())
    t0 = time.perf_counter()
    for step in range(1, steps):
        comm.update_topology()  # admits late joiners; a no-op otherwise
        params, loss, world = train_step(params, xs[step], ys[step])
        if rank == 0 and (step % max(1, steps // 10) == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {float(loss):.5f}  peers {int(world)}", flush=True)
        elif rank == 0 and step % max(1, steps // 100) == 0:
            print(f"PROGRESS {step}", flush=True)  # for the driver's bar, never shown
    jax.block_until_ready(params)
    elapsed = time.perf_counter() - t0
    summary = {
        "rank": rank,
        "peers": int(comm.group_world_size),
        "final_loss": float(loss),
        "steps_per_s": (steps - 1) / elapsed,
        "samples_per_s": (steps - 1) * batch * comm.group_world_size / elapsed,
        "allreduce_bytes_per_step": grad_bytes,
        "params_hash": _params_hash(params),
    }
    print("RESULT " + json.dumps(summary), flush=True)
    comm.close()
    return 0


def run_demo(peers: int, steps: int, batch: int, lr: float, timeout: float) -> int:
    """Starts a master here and `peers` peer processes; returns an exit code."""
    import jax_pccl as pccl

    with pccl.Master(host="127.0.0.1", port=0) as master:
        print(f"master at {master.address}; starting {peers} peers", flush=True)
        cmd = [sys.executable, "-m", "jax_pccl.demo", "--master", master.address,
               "--peers", str(peers), "--steps", str(steps), "--batch", str(batch),
               "--lr", str(lr)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # `python -m` puts the cwd first on sys.path: start the peers where the
        # jax_pccl we run lives, so a source checkout can't shadow the install.
        here = os.path.dirname(os.path.dirname(os.path.abspath(pccl.__file__)))
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=here)
                 for _ in range(peers)]
        results, ok = [], True
        deadline = time.monotonic() + timeout
        with Progress(steps - 1, "demo") as bar:
            readers = [threading.Thread(target=_relay, args=(p, bar, results), daemon=True)
                       for p in procs]
            for r in readers:
                r.start()
            for p in procs:
                try:
                    p.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    bar.print("a peer timed out", stream=sys.stderr)
                    ok = False
                ok &= p.returncode == 0
            for r in readers:
                r.join(timeout=10)
    if len(results) != peers or not ok:
        print(f"demo FAILED: {len(results)}/{peers} peers finished", file=sys.stderr)
        return 1
    r0 = min(results, key=lambda r: r["rank"])
    hashes = {r["params_hash"] for r in results}
    print(f"final loss {r0['final_loss']:.5f}; {r0['steps_per_s']:.1f} steps/s; "
          f"{r0['samples_per_s']:.0f} samples/s over {peers} peers; "
          f"{r0['allreduce_bytes_per_step'] / 1e6:.2f} MB all-reduced per step")
    print(f"parameters bit-identical on all peers: {len(hashes) == 1} ({hashes.pop()})")
    return 0 if len({r["params_hash"] for r in results}) == 1 else 1


def _relay(proc: subprocess.Popen, bar: Progress, results: list) -> None:
    """One peer's output as it comes: results collected, progress drawn,
    other lines shown (above the bar)."""
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith("RESULT "):
            results.append(json.loads(line[len("RESULT "):]))
        elif line.startswith("PROGRESS "):
            bar.update(int(line.split()[1]))
        else:
            m = line.split()
            if len(m) >= 2 and m[0] == "step" and m[1].isdigit():
                bar.update(int(m[1]), note=" ".join(m[2:]))
            bar.print(line)


def _peer_main(argv=None) -> int:
    """One demo peer (run_demo starts these as `python -m jax_pccl.demo`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m jax_pccl.demo")
    ap.add_argument("--master", required=True)
    ap.add_argument("--peers", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    args = ap.parse_args(argv)
    return run_peer(args.master, args.peers, args.steps, args.batch, args.lr)


if __name__ == "__main__":
    sys.exit(_peer_main())
