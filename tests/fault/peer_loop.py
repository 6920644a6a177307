"""A peer that trains 'forever': one jitted all_reduce per step, retried on
peer failure. Peer `index` contributes 2**index, so every result is the
bitmask of exactly the peers that took part. Writes JSON lines:
  {"ok": step, "mask": m, "world": w, "exact": bool, "key": [epoch, seq],
   "digest": sha256 prefix of the result bytes, "t": unix time}
  {"resources": {"fds": n, "threads": n, "rss_kb": n}, "t": ...}  (every ~2 s)
  {"failure": type, "message": ..., "t": unix time, "since_start": s}
  {"fatal": type, "message": ..., "t": ...}   (then exits)
With --sync-every K, after every K-th collective of an epoch the peer also syncs a shared state (an
int32 vector that accumulates the results, a 0-d step counter and a bf16
leaf) and writes
  {"synced": revision, "digest": sha256 prefix of every leaf's bytes,
   "layout_ok": bool (treedef, shapes and dtypes exactly as passed in), "t": ...}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np


def resources() -> dict:
    """Open fds, threads and resident memory of this process (Linux /proc)."""
    field = {}
    for line in open("/proc/self/status"):
        name, _, value = line.partition(":")
        if value.split():
            field[name] = value.split()[0]
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": int(field["Threads"]),
            "rss_kb": int(field["VmRSS"])}


class SyncedState:
    """A shared state that drifts apart between syncs: each peer adds the
    results it saw (peers that missed collectives hold other values), so
    every sync has something to elect and move."""

    def __init__(self, index: int):
        import jax.numpy as jnp

        self.tree = {"acc": np.zeros(64, np.int32),
                     "opt": (jnp.zeros((), jnp.int32), jnp.full((3,), index, jnp.bfloat16))}
        self.revision = 0

    def accumulate(self, y) -> None:
        import jax.numpy as jnp

        count, scale = self.tree["opt"]
        self.tree = {"acc": self.tree["acc"] + y[:64], "opt": (count + jnp.int32(1), scale)}

    def layout(self, tree):
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(tree)
        return treedef, [(np.shape(v), np.asarray(v).dtype) for v in leaves]

    def sync(self, comm) -> dict:
        import jax

        before = self.layout(self.tree)
        self.tree, info = comm.sync_shared_state(self.tree, self.revision + 1)
        self.revision = info.revision
        digest = hashlib.sha256()
        for leaf in jax.tree_util.tree_leaves(self.tree):
            digest.update(np.asarray(leaf).tobytes())
        return {"synced": info.revision, "digest": digest.hexdigest()[:16],
                "layout_ok": self.layout(self.tree) == before}


def kind_step(pccl, comm, kind: str):
    """x -> (int32 vector, info with world_size) for the other kinds. Their
    output shapes depend on the group size: one trace per size, as a user
    who keeps training through membership changes writes it."""
    import types

    import jax

    def step(x, world):
        if kind == "all_gather":
            return pccl.all_gather(x, comm, world_size=world).sum(axis=0)
        if kind == "reduce_scatter":
            return pccl.reduce_scatter(x, comm, op="sum", world_size=world)
        # Rank 1 when there is one: the chain 1 -> 2 -> 0 has the last
        # joiner (rank 2) forward, so it can die mid-collective.
        return pccl.broadcast(x, comm, root=min(1, world - 1))

    jitted = jax.jit(step, static_argnums=1)

    def run(x):
        world = comm.group_world_size
        return jitted(x, world), types.SimpleNamespace(world_size=world)

    return run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--elements", type=int, default=1 << 20)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--shape", choices=["update_first", "step_first"], default="update_first")
    ap.add_argument("--start-wait", action="store_true",
                    help="the step is all_reduce_start + all_reduce_wait in one jit")
    ap.add_argument("--start-reduce-wait", action="store_true",
                    help="the step is all_reduce_start, an all_reduce, then all_reduce_wait "
                         "in one jit (a failure of the all_reduce skips the wait)")
    ap.add_argument("--wait-start-reduce", action="store_true",
                    help="the step is wait(start(x)), then start, an all_reduce and the second "
                         "wait, in one jit (work queued behind the first wait's completion)")
    ap.add_argument("--kind", choices=["all_reduce", "all_gather", "broadcast", "reduce_scatter"],
                    default="all_reduce",
                    help="the step's collective: all_gather's rows and reduce_scatter's slice "
                         "sum to the mask of peers that took part, broadcast's result is the "
                         "root's (rank 1's) contribution")
    ap.add_argument("--retry-helper", action="store_true",
                    help="run the step through pccl.retry_on_peer_failure")
    ap.add_argument("--min-peers", type=int, default=1,
                    help="connect(min_peers=N): wait until N peers are accepted before stepping")
    ap.add_argument("--master-grace", type=float, default=0.0,
                    help="ride out a master outage this long (restart tests)")
    ap.add_argument("--sync-every", type=int, default=0,
                    help="sync a shared state every this many steps (0: never)")
    ap.add_argument("--optimize-when", default=None, metavar="PATH",
                    help="once every peer has seen PATH exist (a flag all-reduced each "
                         "step), call optimize_topology() once")
    args = ap.parse_args()

    import jax

    import jax_pccl as pccl

    out = open(args.out, "a", buffering=1)

    def emit(**record):
        record["t"] = time.time()
        out.write(json.dumps(record) + "\n")

    t_connect = time.time()
    comm = pccl.Communicator(args.master, timeout=args.timeout)
    comm.connect(timeout=120, **({"min_peers": args.min_peers} if args.min_peers > 1 else {}))
    emit(connected=comm.rank, world=comm.world_size, connect_s=time.time() - t_connect)
    step_fn = jax.jit(lambda x: pccl.all_reduce(x, comm, op="sum", return_info=True))
    if args.start_wait:  # the asynchronous wait handler (an XLA future)
        step_fn = jax.jit(lambda x: pccl.all_reduce_wait(pccl.all_reduce_start(x, comm, op="sum"),
                                                         return_info=True))
    if args.start_reduce_wait:
        def start_reduce_wait(x):
            import jax.numpy as jnp
            handle = pccl.all_reduce_start(x, comm, op="sum")
            between = pccl.all_reduce(x, comm, op="sum")
            y, info = pccl.all_reduce_wait(handle, return_info=True)
            return jnp.where(between == y, y, -1), info  # -1: the two results differ
        step_fn = jax.jit(start_reduce_wait)
    if args.wait_start_reduce:
        def wait_start_reduce(x):
            import jax.numpy as jnp
            first = pccl.all_reduce_wait(pccl.all_reduce_start(x, comm, op="sum"))
            handle = pccl.all_reduce_start(x, comm, op="sum")  # queued behind `first`'s wait
            between = pccl.all_reduce(x, comm, op="sum")
            y, info = pccl.all_reduce_wait(handle, return_info=True)
            return jnp.where((first == y) & (between == y), y, -1), info  # -1: results differ
        step_fn = jax.jit(wait_start_reduce)
    if args.kind != "all_reduce":
        step_fn = kind_step(pccl, comm, args.kind)
    if args.retry_helper:  # failures are absorbed: the loop below never sees them
        step_fn = pccl.retry_on_peer_failure(comm, step_fn)
    x = np.full(args.elements, 1 << args.index, np.int32)
    state = SyncedState(args.index)
    end = time.time() + args.seconds
    step = 0
    next_sample = 0.0
    master_lost_at = None
    optimized = False
    while time.time() < end:
        try:
            if args.shape == "update_first":
                comm.update_topology()
            t0 = time.time()
            y, info = step_fn(x)
            y = np.asarray(y)
            stats = comm.stats()
            emit(ok=step, mask=int(y[0]), world=int(info.world_size),
                 exact=bool((y == y[0]).all()), took=time.time() - t0,
                 key=[stats["epoch"], stats["seq"]],
                 digest=hashlib.sha256(y.tobytes()).hexdigest()[:16])
            step += 1
            state.accumulate(y)
            # Every peer of the epoch ran the same collectives, so seq picks
            # the same steps on all of them (a local step count would not).
            if args.sync_every and stats["seq"] % args.sync_every == 0:
                emit(**state.sync(comm))
            if time.time() >= next_sample:
                emit(resources=resources())
                next_sample = time.time() + 2.0
            if args.shape == "step_first":
                comm.update_topology()
            if args.optimize_when and not optimized:
                seen = np.array([int(os.path.exists(args.optimize_when))], np.int32)
                if int(np.asarray(pccl.all_reduce(seen, comm, op="sum"))[0]) == comm.group_world_size:
                    t0 = time.time()
                    comm.optimize_topology()
                    optimized = True
                    emit(optimized=comm.stats()["epoch"], rank=comm.rank, took=time.time() - t0)
        except Exception as exc:  # noqa: BLE001 - classified below
            if pccl.is_peer_failure(exc):
                emit(failure=type(exc).__name__, message=str(exc)[:300])
                try:
                    comm.update_topology()
                except Exception as exc2:  # noqa: BLE001
                    # A neighbour that noticed a master outage first breaks the
                    # ring: the peer failure is then followed by the outage.
                    if (args.master_grace > 0
                            and "MasterUnreachableError" in f"{type(exc2).__name__} {exc2}"):
                        master_lost_at = master_lost_at or time.time()
                        emit(master_lost=type(exc2).__name__, message=str(exc2)[:200])
                        time.sleep(0.2)
                    elif not pccl.is_peer_failure(exc2):
                        emit(fatal=type(exc2).__name__, message=str(exc2)[:300])
                        return 3
                continue
            if args.master_grace > 0 and "MasterUnreachableError" in f"{type(exc).__name__} {exc}":
                master_lost_at = master_lost_at or time.time()
                if time.time() - master_lost_at < args.master_grace:
                    emit(master_lost=type(exc).__name__, message=str(exc)[:200])
                    time.sleep(0.2)
                    continue
            emit(fatal=type(exc).__name__, message=str(exc)[:600])
            return 3
        else:
            master_lost_at = None
    emit(done=step, world=comm.world_size)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
