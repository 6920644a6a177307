#!/usr/bin/env python3
"""Collectives benchmark: jax_pccl (TCP ring engine via XLA FFI) vs JAX's own
multi-process CPU collectives (gloo), and the link ceiling: one plain TCP
stream between two processes on the same loopback.

Usage:
    python bench/allreduce.py --peers 2 --sizes 4K,1M,16M,64M,256M --iters 10 \
        [--kinds all_reduce,all_gather,broadcast,reduce_scatter] \
        [--only pccl,gloo,tcp] [--connections K] [--donate]

--kinds (default all_reduce) picks the collectives, each timed in the same
run against JAX's equivalent inside shard_map: psum, all_gather(tiled),
psum_scatter(tiled), and for broadcast what JAX's multi-process
broadcast_one_to_all does (lax.pbroadcast has no CPU lowering): a psum of the
root's values and the others' zeros. jax_pccl's broadcast root is rank 0
too. The "tcp" row and --donate apply to all_reduce only.

For every implementation and message size (bytes of a float32 array held by
*each* peer) the driver spawns N worker processes (this same file re-invoked
with the hidden ``--worker`` flag), each worker times ``iters`` all-reduces
(sum) after a warm-up, with a tiny all-reduce as a start barrier before every
timed iteration. Messages of at most 64 KiB are latency-bound: there a timed
iteration is a burst of 50 back-to-back blocking calls, reported per call.
Every worker reports its per-iteration times; the driver takes the
per-iteration max over peers and then the median over iterations.

    algbw = bytes / t   (all_gather: the result's bytes, N times the input)
    busbw = algbw * factor, nccl-tests' definitions: 2 (N - 1) / N for
            all_reduce, (N - 1) / N for all_gather and reduce_scatter, 1 for
            broadcast

The "tcp" row is one TCP stream (4 MiB socket buffers, 4 MiB writes, receiver
reads into a preallocated buffer) moving `bytes` from one process to another:
its busbw is bytes / t, what a single connection of this loopback carries.
The ratios printed at the end are all from this one run.

Everything runs on 127.0.0.1 with free ports (found by binding port 0); every
subprocess has a hard timeout and is killed (whole process group) on expiry.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RESULT_TAG = "@@RESULT "
LOCALHOST = "127.0.0.1"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def parse_size(tok: str) -> int:
    tok = tok.strip().upper()
    if tok.endswith("B"):
        tok = tok[:-1]
    mult = 1
    for suf, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if tok.endswith(suf):
            mult, tok = m, tok[:-1]
            break
    n = int(float(tok) * mult)
    if n <= 0 or n % 4:
        raise argparse.ArgumentTypeError(f"size {tok!r}: must be a positive multiple of 4 bytes")
    return n


def fmt_size(n: int) -> str:
    for suf, m in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= m and n % m == 0:
            return f"{n // m}{suf}"
    return f"{n}B"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def busbw_factor(n: int) -> float:
    return 2.0 * (n - 1) / n if n > 1 else 1.0


def emit(obj) -> None:
    sys.stdout.write(RESULT_TAG + json.dumps(obj) + "\n")
    sys.stdout.flush()


# Messages up to this size are latency-bound: one timed iteration is a burst
# of back-to-back blocking calls, reported per call (as osu_allreduce and
# nccl-tests do). A single 4 KiB call lasts about as long as the jitter of
# the start barrier and of the scheduler on a shared machine, so timing calls
# one by one measures mostly noise.
BURST_MAX_BYTES = 64 << 10
BURST_CALLS = 50

KINDS = ("all_reduce", "all_gather", "broadcast", "reduce_scatter")


def kind_busbw_factor(kind: str, n: int) -> float:
    return {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n,
            "reduce_scatter": (n - 1) / n, "broadcast": 1.0}[kind]


def algbw_bytes(kind: str, size: int, n: int) -> int:
    """The bytes algbw counts for `size` bytes of input per peer."""
    return size * n if kind == "all_gather" else size


def expected_values(kind: str, n: int) -> tuple:
    """Inputs are full(rank + 1): (first element, last element) of every peer's result."""
    if kind == "all_gather":
        return 1.0, float(n)
    if kind == "broadcast":
        return 1.0, 1.0
    total = n * (n + 1) / 2
    return total, total


def time_sizes(run_allreduce, barrier, make_input, check, sizes, warmup, iters, log,
               donate=False):
    """Shared timing loop. Returns {size: [seconds per call, one per timed iteration]}.

    With ``donate`` each call consumes its input (jit with donate_argnums) and
    its result is the next call's input, as in a training loop that reduces
    a buffer it no longer needs. Only the first result is checked: later
    sums keep growing (float32 reaches inf, at unchanged speed).
    """
    def call(x):
        """One blocking call; returns (result, the next call's input)."""
        y = run_allreduce(x)
        y.block_until_ready()
        return y, (y if donate else x)

    out = {}
    for nbytes in sizes:
        x = make_input(nbytes // 4)
        calls = BURST_CALLS if nbytes <= BURST_MAX_BYTES else 1
        y, x = call(x)
        check(y)
        for _ in range(warmup):
            barrier()
            y, x = call(x)
        del y
        times = []
        for _ in range(iters):
            barrier()
            t0 = time.perf_counter()
            for _ in range(calls):
                y, x = call(x)
            times.append((time.perf_counter() - t0) / calls)
            del y
        out[nbytes] = times
        log(f"size {fmt_size(nbytes)}: median {statistics.median(times) * 1e3:.3f} ms")
        del x
    return out


# --------------------------------------------------------------------------
# workers
# --------------------------------------------------------------------------
def worker_gloo(a) -> None:
    rank, n = a.rank, a.nprocs
    log = lambda m: print(f"[gloo {rank}] {m}", file=sys.stderr, flush=True)

    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # One CPU device per process.
    jax.config.update("jax_num_cpu_devices", 1)

    # Make gloo bind/advertise 127.0.0.1 explicitly (default uses the
    # hostname, which usually resolves to loopback too).  Private API; fall
    # back to JAX's default factory if it changes.
    try:
        from jax._src import distributed as _dist
        from jax._src import xla_bridge as _xb
        from jax._src.lib import _jax

        reg = _xb._backend_factories["cpu"]

        def _factory():
            coll = _jax.make_gloo_tcp_collectives(
                distributed_client=_dist.global_state.client, hostname=LOCALHOST)
            return _xb.make_cpu_client(collectives=coll)

        import dataclasses
        _xb._backend_factories["cpu"] = dataclasses.replace(reg, factory=_factory)
        log("gloo pinned to 127.0.0.1")
    except Exception as e:  # pragma: no cover
        log(f"could not pin gloo hostname ({e!r}); using JAX default")

    jax.distributed.initialize(
        coordinator_address=a.addr, num_processes=n, process_id=rank,
        initialization_timeout=60)
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    assert jax.process_count() == n, jax.process_count()
    assert jax.local_device_count() == 1, jax.local_devices()
    devs = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    assert len(devs) == n, devs
    mesh = Mesh(np.array(devs), ("x",))
    sharding = NamedSharding(mesh, P("x"))
    local_dev = jax.local_devices()[0]

    def global_array(local: np.ndarray):
        shard = jax.device_put(local, local_dev)
        return jax.make_array_from_single_device_arrays(
            (n * local.shape[0],), sharding, [shard])

    def sharded(fn):
        return jax.shard_map(fn, mesh=mesh, in_specs=P("x"), out_specs=P("x"))

    psum_fn = sharded(lambda v: jax.lax.psum(v, "x"))
    kind_fn = sharded({
        "all_reduce": lambda v: jax.lax.psum(v, "x"),
        "all_gather": lambda v: jax.lax.all_gather(v, "x", tiled=True),
        # lax.pbroadcast has no CPU lowering; JAX's multi-process broadcast
        # (multihost_utils.broadcast_one_to_all) is a psum of the root's
        # values and everyone else's zeros: that is what we time.
        "broadcast": lambda v: jax.lax.psum(
            jax.numpy.where(jax.lax.axis_index("x") == 0, v, jax.numpy.zeros_like(v)), "x"),
        "reduce_scatter": lambda v: jax.lax.psum_scatter(v, "x", tiled=True),
    }[a.kind])
    psum = jax.jit(psum_fn)
    timed = jax.jit(kind_fn, donate_argnums=0) if a.donate else jax.jit(kind_fn)

    tiny = global_array(np.ones((1,), np.float32))

    def barrier():
        psum(tiny).block_until_ready()

    def make_input(count):
        return global_array(np.full((count,), float(rank + 1), np.float32))

    first, last = expected_values(a.kind, n)

    def check(y):
        loc = np.asarray(y.addressable_shards[0].data)
        if not (np.allclose(loc[0], first) and np.allclose(loc[-1], last)):
            raise SystemExit(f"gloo {a.kind}: wrong result {loc[0]}..{loc[-1]}, expected {first}..{last}")

    res = time_sizes(timed, barrier, make_input, check, a.sizes, a.warmup, a.iters, log,
                     donate=a.donate)
    emit({"impl": "gloo", "rank": rank, "times": {str(k): v for k, v in res.items()}})
    try:
        jax.distributed.shutdown()
    except Exception:
        pass


def worker_pccl(a) -> None:
    idx, n = a.rank, a.nprocs
    log = lambda m: print(f"[pccl {idx}] {m}", file=sys.stderr, flush=True)

    import jax

    jax.config.update("jax_platforms", "cpu")
    import jax.numpy as jnp
    import numpy as np
    import jax_pccl as pccl

    comm = pccl.Communicator(a.addr, connections=a.connections)
    comm.connect()
    # Admission: first peer is accepted at once; later ones are admitted when
    # already-accepted peers call update_topology() (collective among the
    # accepted peers; no-op when nothing is pending).
    def world_size():
        ws = comm.world_size
        return ws() if callable(ws) else ws

    f = jax.jit(lambda v: pccl.all_reduce(v, comm, op="sum"))
    kind_fn = {
        "all_reduce": f,
        "all_gather": jax.jit(lambda v: pccl.all_gather(v, comm, world_size=n)),
        "broadcast": jax.jit(lambda v: pccl.broadcast(v, comm, root=0)),
        "reduce_scatter": jax.jit(lambda v: pccl.reduce_scatter(v, comm, world_size=n)),
    }[a.kind]
    # Donated: the result reuses the input's buffer (in-place engine path).
    timed = (jax.jit(lambda v: pccl.all_reduce(v, comm, op="sum", donate=True), donate_argnums=0)
             if a.donate else kind_fn)
    tiny = jnp.ones((1,), jnp.float32)

    # Early engine builds refreshed their (group-consistent) "peers pending"
    # flag only at a collective, so a lone accepted peer calling just
    # update_topology() never admitted anyone.  Every accepted peer therefore
    # runs a tiny all_reduce before each update_topology() (harmless when
    # update_topology() polls the master itself); all accepted peers share the
    # same world_size after each update, so they leave the loop together.
    deadline = time.monotonic() + a.join_timeout
    while world_size() != n:
        if time.monotonic() > deadline:
            raise SystemExit(f"pccl: world_size {world_size()} != {n} after {a.join_timeout}s")
        f(tiny).block_until_ready()
        comm.update_topology()
        if world_size() != n:
            time.sleep(0.05)
    log(f"joined, world_size={world_size()}, rank={getattr(comm, 'rank', '?')}")

    def barrier():
        f(tiny).block_until_ready()

    rank = comm.rank  # broadcast's root and the gather's rows are by rank

    def make_input(count):
        return jnp.full((count,), float(rank + 1), jnp.float32)

    first, last = expected_values(a.kind, n)

    def check(y):
        loc = np.asarray(y).reshape(-1)
        if not (np.allclose(loc[0], first) and np.allclose(loc[-1], last)):
            raise SystemExit(f"pccl {a.kind}: wrong result {loc[0]}..{loc[-1]}, expected {first}..{last}")

    res = time_sizes(timed, barrier, make_input, check, a.sizes, a.warmup, a.iters, log,
                     donate=a.donate)
    emit({"impl": "pccl", "rank": idx, "times": {str(k): v for k, v in res.items()}})
    for name in ("close", "destroy", "shutdown", "disconnect"):
        fn = getattr(comm, name, None)
        if callable(fn):
            try:
                fn()
            except Exception:
                pass
            break


def worker_tcp(a) -> None:
    """Rank 0 receives, rank 1 sends: one stream, `iters` timed transfers per size."""
    import numpy as np

    host, port = a.addr.rsplit(":", 1)
    buf_bytes = 4 << 20
    if a.rank == 0:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buf_bytes)
        srv.bind((host, int(port)))
        srv.listen(1)
        srv.settimeout(60)
        conn, _ = srv.accept()
        srv.close()
    else:
        conn = None
        deadline = time.monotonic() + 60
        while conn is None:
            try:
                conn = socket.create_connection((host, int(port)), timeout=60)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buf_bytes)
    conn.settimeout(120)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = {}
    for nbytes in a.sizes:
        data = np.ones(nbytes, np.uint8)  # touched: no page faults while timing
        view = memoryview(data)
        times = []
        for it in range(a.warmup + a.iters):
            if a.rank == 0:
                conn.sendall(b"g")  # go: the receiver starts the clock
                t0 = time.perf_counter()
                got = 0
                while got < nbytes:
                    k = conn.recv_into(view[got:], min(buf_bytes, nbytes - got))
                    if k == 0:
                        raise SystemExit("tcp: sender closed early")
                    got += k
                t = time.perf_counter() - t0
            else:
                if conn.recv(1) != b"g":
                    raise SystemExit("tcp: no go")
                for off in range(0, nbytes, buf_bytes):
                    conn.sendall(view[off:off + buf_bytes])
                t = 0.0
            if it >= a.warmup:
                times.append(t)
        out[nbytes] = times
    conn.close()
    if a.rank == 0:  # only the receiver's clock means anything
        emit({"impl": "tcp", "rank": 0, "times": {str(k): v for k, v in out.items()}})


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------
def run_workers(impl: str, addr: str, a, timeout: float):
    """Spawn a.peers workers; return (list of per-rank result dicts, error str|None)."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("PYTHONUNBUFFERED", "1")
    sizes_arg = ",".join(str(s) for s in a.sizes)
    procs = []
    tmp = tempfile.mkdtemp(prefix=f"bench_{impl}_")
    nworkers = 2 if impl == "tcp" else a.peers
    for i in range(nworkers):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl,
               "--rank", str(i), "--nprocs", str(nworkers), "--addr", addr,
               "--sizes", sizes_arg, "--iters", str(a.iters), "--warmup", str(a.warmup),
               "--join-timeout", str(a.join_timeout), "--kind", a.kind]
        if a.connections is not None:
            cmd += ["--connections", str(a.connections)]
        if a.donate:
            cmd += ["--donate"]
        out = open(os.path.join(tmp, f"{i}.out"), "w+")
        err = open(os.path.join(tmp, f"{i}.err"), "w+")
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append((p, out, err))
        if impl == "pccl":
            time.sleep(0.2)  # stagger joins a little; admission handles the rest
    deadline = time.monotonic() + timeout
    error = None
    try:
        while True:
            rcs = [p.poll() for p, _, _ in procs]
            if any(rc not in (None, 0) for rc in rcs):
                bad = [i for i, rc in enumerate(rcs) if rc not in (None, 0)]
                error = f"worker(s) {bad} exited with {[rcs[i] for i in bad]}"
                break
            if all(rc == 0 for rc in rcs):
                break
            if time.monotonic() > deadline:
                error = f"timeout after {timeout:.0f}s"
                break
            time.sleep(0.1)
    finally:
        for p, _, _ in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p, _, _ in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    results = []
    keep_logs = False
    for i, (p, out, err) in enumerate(procs):
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        out.close()
        err.close()
        got = [json.loads(l[len(RESULT_TAG):]) for l in stdout.splitlines()
               if l.startswith(RESULT_TAG)]
        if got:
            results.append(got[-1])
        elif error is None and not (impl == "tcp" and i > 0):  # the tcp sender reports nothing
            error = f"worker {i} reported nothing"
        if error is not None:
            tail = "\n".join(stderr.strip().splitlines()[-15:])
            print(f"--- {impl} worker {i} (rc={p.returncode}) stderr tail ---\n{tail}",
                  file=sys.stderr)
            keep_logs = True
    if keep_logs or os.environ.get("BENCH_KEEP_LOGS"):
        print(f"[driver] full worker logs kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return results, error


def summarize(impl, results, n, sizes, kind="all_reduce"):
    rows = []
    reporters = 1 if impl == "tcp" else n
    factor = 1.0 if impl == "tcp" else kind_busbw_factor(kind, n)  # one stream: busbw = bytes/t
    for s in sizes:
        per_rank = [r["times"][str(s)] for r in results if str(s) in r["times"]]
        if len(per_rank) != reporters:
            continue
        per_iter_max = [max(ts) for ts in zip(*per_rank)]
        t = statistics.median(per_iter_max)
        algbw = (s if impl == "tcp" else algbw_bytes(kind, s, n)) / t / 1e9
        rows.append({"impl": impl, "kind": kind, "peers": n, "bytes": s, "size": fmt_size(s),
                     "iters": len(per_iter_max), "median_s": t,
                     "min_s": min(per_iter_max),
                     "algbw_GBps": algbw, "busbw_GBps": algbw * factor})
    return rows


def run_impl(impl, a):
    if impl in ("gloo", "tcp"):
        addr = f"{LOCALHOST}:{free_port()}"
        master = None
    else:
        try:
            import jax_pccl as pccl
            master = pccl.Master(host=LOCALHOST, port=0)
            addr = master.address
        except Exception as e:
            return [], f"jax_pccl unavailable: {e!r}"
    try:
        print(f"[driver] {a.kind} {impl}: {a.peers} peers, addr {addr}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        results, err = run_workers(impl, addr, a, a.timeout)
        print(f"[driver] {impl}: done in {time.monotonic() - t0:.1f}s"
              + (f" (ERROR: {err})" if err else ""), file=sys.stderr, flush=True)
    finally:
        if master is not None:
            for name in ("close", "shutdown", "stop", "interrupt"):
                fn = getattr(master, name, None)
                if callable(fn):
                    try:
                        fn()
                    except Exception:
                        pass
                    break
    if err:
        return [], err
    return summarize(impl, results, a.peers, a.sizes, a.kind), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=2)
    ap.add_argument("--sizes", type=lambda s: [parse_size(t) for t in s.split(",") if t],
                    default=[parse_size(t) for t in "4K,1M,64M,256M".split(",")],
                    help="comma list, suffix K/M/G = KiB/MiB/GiB (default 4K,1M,64M,256M)")
    ap.add_argument("--kinds", type=lambda s: [t for t in s.split(",") if t],
                    default=["all_reduce"], help=f"comma list of {','.join(KINDS)}")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", type=lambda s: [t for t in s.split(",") if t],
                    help="comma list of pccl,gloo,tcp (default: all three)")
    ap.add_argument("--connections", type=int, default=None,
                    help="jax_pccl connections per ring hop (default: the library's)")
    ap.add_argument("--donate", action="store_true",
                    help="all_reduce, jax_pccl and gloo alike: each call donates its input and "
                         "the result feeds the next call (in place, no fresh output buffer per call)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="hard timeout per implementation run in s (default: scaled with sizes)")
    ap.add_argument("--join-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=["pccl", "gloo", "tcp"], help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="all_reduce", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--nprocs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--addr", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        {"gloo": worker_gloo, "pccl": worker_pccl, "tcp": worker_tcp}[a.worker](a)
        return

    if a.peers < 1:
        ap.error("--peers must be >= 1")
    if set(a.kinds) - set(KINDS):
        ap.error(f"--kinds: unknown kind in {a.kinds} (known: {', '.join(KINDS)})")
    if a.donate and a.kinds != ["all_reduce"]:
        ap.error("--donate applies to all_reduce only")
    bad = [s for s in a.sizes if "reduce_scatter" in a.kinds and s % (4 * a.peers)]
    if bad:
        ap.error(f"reduce_scatter: sizes {[fmt_size(s) for s in bad]} do not split over {a.peers} peers")
    if a.timeout is None:
        # Generous: assume >= ~20 MB/s effective, plus startup.
        total = sum(a.sizes) * (a.iters + a.warmup) * (a.peers if "all_gather" in a.kinds else 1)
        a.timeout = 120.0 + total / 20e6
    impls = a.only or ["pccl", "gloo", "tcp"]
    if set(impls) - {"pccl", "gloo", "tcp"}:
        ap.error(f"--only: unknown implementation in {impls}")

    print(f"[driver] load average (1, 5, 15 min) at the start: {os.getloadavg()}", file=sys.stderr)
    rows, ratios, errors = [], [], {}
    for kind in a.kinds:
        a.kind = kind
        kind_rows = []
        for impl in impls:
            if impl == "tcp" and kind != "all_reduce":
                continue  # one stream is the all-reduce's ceiling only
            r, err = run_impl(impl, a)
            kind_rows += r
            if err:
                errors[f"{kind} {impl}"] = err
        print_kind(kind, a, kind_rows)
        rows += kind_rows
        ratios += kind_ratios(kind, a, kind_rows)
    for what, err in errors.items():
        print(f"{what}: FAILED: {err}")
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")

    print()
    for r in rows + ratios:
        print(json.dumps(r))
    for what, err in errors.items():
        print(json.dumps({"impl": what, "peers": a.peers, "error": err}))
    sys.exit(1 if errors else 0)


def print_kind(kind, a, rows) -> None:
    n = a.peers
    what = {"all_reduce": "all_reduce(sum", "reduce_scatter": "reduce_scatter(sum",
            "all_gather": "all_gather(", "broadcast": "broadcast(root 0"}[kind]
    print(f"\n{what}, float32), {n} peers on {LOCALHOST}, size = bytes of input per peer, "
          f"{a.iters} iters (+{a.warmup} warm-up), time = median over iters of max over peers; "
          f"busbw = algbw * {kind_busbw_factor(kind, n):.3f}")
    hdr = f"{'impl':<6}{'size':>8}{'median ms':>12}{'min ms':>10}{'algbw GB/s':>12}{'busbw GB/s':>12}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['impl']:<6}{r['size']:>8}{r['median_s'] * 1e3:>12.3f}{r['min_s'] * 1e3:>10.3f}"
              f"{r['algbw_GBps']:>12.4f}{r['busbw_GBps']:>12.4f}")


def kind_ratios(kind, a, rows) -> list:
    ratios = []
    by = {(r["impl"], r["bytes"]): r for r in rows}
    for s in a.sizes:
        p, g, t = by.get(("pccl", s)), by.get(("gloo", s)), by.get(("tcp", s))
        if p and (g or t):
            r = {"impl": "ratios", "kind": kind, "peers": a.peers, "bytes": s, "size": fmt_size(s)}
            if g:
                r["busbw_pccl_over_gloo"] = p["busbw_GBps"] / g["busbw_GBps"]
                r["latency_pccl_over_gloo"] = p["median_s"] / g["median_s"]
            if t:
                r["busbw_pccl_over_tcp"] = p["busbw_GBps"] / t["busbw_GBps"]
            if g and t:
                r["busbw_gloo_over_tcp"] = g["busbw_GBps"] / t["busbw_GBps"]
            ratios.append(r)
    if ratios:
        print(f"\n{kind} ratios, same run (busbw ratio > 1: pccl faster; latency ratio < 1: pccl"
              " faster; tcp = one plain TCP stream)")
        print(f"{'size':>8}{'pccl/gloo busbw':>17}{'pccl/gloo latency':>19}"
              f"{'pccl/tcp busbw':>16}{'gloo/tcp busbw':>16}")
        fmt = lambda r, k: f"{r[k]:.3f}" if k in r else "-"  # noqa: E731
        for r in ratios:
            print(f"{r['size']:>8}{fmt(r, 'busbw_pccl_over_gloo'):>17}"
                  f"{fmt(r, 'latency_pccl_over_gloo'):>19}{fmt(r, 'busbw_pccl_over_tcp'):>16}"
                  f"{fmt(r, 'busbw_gloo_over_tcp'):>16}")
    return ratios


if __name__ == "__main__":
    main()
