"""Jitted programs whose rest runs after an all_reduce_wait completes.

all_reduce_wait is asynchronous: XLA carries on with the rest of the program
on the thread that completes the wait's future. When that thread was the
engine's slot worker, a later collective that needed the same slot waited for
the very thread it ran on (issue #17, defect 1): no deadline, heartbeats kept
going, the group hung. Each program below puts collectives after a completed
wait in one jit; every one must finish with exact results. The test process
runs one program per launch (--aux names it) and bounds it with the harness's
hard timeout, so a hang is a failed test, not a stuck pytest.

Every program takes this peer's input x (float32, small integers, exact in
any summation order) and returns a dict of arrays; REFERENCES computes the
same dict from every peer's input with numpy.
"""
from __future__ import annotations

import numpy as np

LENGTH = 8
BIG = 40_000  # tile factor: 320k float32 = 1.25 MiB, over the small-slot limit (bulk slot)


def peer_input(index: int) -> np.ndarray:
    return (np.arange(LENGTH) + 10 * index).astype(np.float32)


def programs(pccl, comm):
    """name -> jitted function of x; built lazily so jax is imported in the peer only."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    start = lambda v: pccl.all_reduce_start(v, comm, op="sum")  # noqa: E731
    wait = pccl.all_reduce_wait
    reduce = lambda v: pccl.all_reduce(v, comm, op="sum")  # noqa: E731

    def issue_single_slot(x):
        # The issue's first program: with one slot, start(c + b[0]) queues on
        # the slot whose worker completed b, and all_reduce(e) waits behind it.
        b = wait(start(x))
        h = start(x + b[0])
        e = reduce(x * 2)
        return {"b": b, "e": e, "r": wait(h)}

    def issue_pytree_after_wait(x):
        # The issue's second program: a 3-leaf all_reduce spreads over the
        # slots, one of them the slot whose worker completed the wait.
        b = wait(start(x))
        t = reduce({"p": x, "q": x * 3, "r": x[:3]})
        return {"b": b, **t}

    def mixed_sizes_after_wait(x):
        # Leaves on the bulk slot and on small ones, after waits on both.
        big = jnp.tile(x, BIG)
        b = wait(start(x))
        g = wait(start(big))
        t = reduce({"x": x + b, "big": big + g, "x3": x * 3})
        return {"b": b, "g": g, **t}

    def scan_start_wait_reduce(x):
        def body(c, _):
            y = wait(start(c))
            z = reduce(x)
            return y + z, y
        c, ys = lax.scan(body, x, None, length=3)
        return {"c": c, "ys": ys}

    def cond_wait_then_reduce(x):
        # Every peer takes the same branch (x[0] >= 0 on all of them).
        b = lax.cond(x[0] >= 0, lambda v: wait(start(v)), lambda v: v * 0, x)
        return {"b": b, "e": reduce(x + b)}

    def many_in_flight(x):
        h1, h2, h3, h4 = (start(x * k) for k in (1, 2, 3, 4))
        r1 = wait(h1)
        t = reduce([x, x * 2, r1])
        r2, r3, r4 = wait(h2), wait(h3), wait(h4)
        return {"r1": r1, "t0": t[0], "t1": t[1], "t2": t[2], "r2": r2, "r3": r3, "r4": r4,
                "last": reduce(r4 + r2)}

    def fori_pipeline(x):
        # A handle carried through a loop: each step waits for the previous
        # step's collective, starts the next, and reduces in between.
        def body(_, carry):
            h, acc = carry
            prev = wait(h)
            return start(prev - x), acc + reduce(prev)
        h, acc = lax.fori_loop(0, 3, body, (start(x), jnp.zeros_like(x)))
        return {"acc": acc, "last": wait(h)}

    def chained_waits(x):
        v = x
        outs = {}
        for k in range(3):
            v = wait(start(v))
            outs[f"w{k}"] = v
            v = reduce(v) - v  # (n - 1) * v on every peer
            outs[f"r{k}"] = v
        return outs

    fns = {f.__name__: f for f in (issue_single_slot, issue_pytree_after_wait, mixed_sizes_after_wait,
                                   scan_start_wait_reduce, cond_wait_then_reduce, many_in_flight,
                                   fori_pipeline, chained_waits)}
    return {name: jax.jit(f) for name, f in fns.items()}


# --- numpy references: xs is the list of every peer's input ------------------

def _issue_single_slot(xs):
    s = sum(xs)
    return {"b": s, "e": 2 * s, "r": s + len(xs) * s[0]}


def _pytree_ref(xs):
    s = sum(xs)
    return {"b": s, "p": s, "q": 3 * s, "r": s[:3]}


def _mixed_sizes_after_wait(xs):
    s = sum(xs)
    n = len(xs)
    big = np.tile(s, BIG)
    return {"b": s, "g": big, "x": s + n * s, "big": big + n * big, "x3": 3 * s}


def _scan_start_wait_reduce(xs):
    cs = list(xs)
    s = sum(xs)
    ys = []
    for _ in range(3):
        y = sum(cs)
        ys.append(y)
        cs = [y + s for _ in cs]
    return {"c": cs[0], "ys": np.stack(ys)}


def _cond_wait_then_reduce(xs):
    s = sum(xs)
    return {"b": s, "e": s + len(xs) * s}


def _many_in_flight(xs):
    s, n = sum(xs), len(xs)
    return {"r1": s, "t0": s, "t1": 2 * s, "t2": n * s, "r2": 2 * s, "r3": 3 * s, "r4": 4 * s,
            "last": n * (4 * s + 2 * s)}


def _fori_pipeline(xs):
    n = len(xs)
    prev = sum(xs)
    acc = np.zeros_like(prev)
    for _ in range(3):
        acc = acc + n * prev
        prev = sum(prev - x for x in xs)
    return {"acc": acc, "last": prev}


def _chained_waits(xs):
    n = len(xs)
    vs = list(xs)
    outs = {}
    for k in range(3):
        w = sum(vs)
        outs[f"w{k}"] = w
        outs[f"r{k}"] = (n - 1) * w
        vs = [(n - 1) * w for _ in vs]
    return outs


REFERENCES = {
    "issue_single_slot": _issue_single_slot,
    "issue_pytree_after_wait": _pytree_ref,
    "mixed_sizes_after_wait": _mixed_sizes_after_wait,
    "scan_start_wait_reduce": _scan_start_wait_reduce,
    "cond_wait_then_reduce": _cond_wait_then_reduce,
    "many_in_flight": _many_in_flight,
    "fori_pipeline": _fori_pipeline,
    "chained_waits": _chained_waits,
}


def scenario_continuation(ctx):
    """Runs the program --aux names, twice (the second run reuses the
    compiled program and the engine threads the first one left busy)."""
    from peer_scenarios import encode, ready

    fn = programs(ctx.pccl, ctx.comm)[ctx.args.aux]
    x = peer_input(ctx.index)
    for run in range(2):
        ctx.rec.check(f"run{run}", lambda: {k: encode(v) for k, v in ready(fn(x)).items()})


def thread_name() -> str:
    import threading
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


def scenario_continuation_thread(ctx):
    """Where the rest of a program runs once its wait completes: a host
    callback placed after the wait (and after a collective that follows it)
    reports its thread's name. Peer 1 joins each collective a second late, so
    that peer 0's wait is still pending when XLA reaches it and completes
    later, from the engine's side."""
    import time

    import jax
    from peer_scenarios import encode, ready

    pccl, comm = ctx.pccl, ctx.comm
    names = []
    record = lambda _: names.append(thread_name())  # noqa: E731

    @jax.jit
    def after_wait(x):
        r = pccl.all_reduce_wait(pccl.all_reduce_start(x, comm, op="sum"))
        jax.debug.callback(record, r)
        e = pccl.all_reduce(r, comm, op="sum")
        jax.debug.callback(record, e)
        return e

    x = peer_input(ctx.index)
    for run in range(2):
        def check():
            names.clear()
            if ctx.index != 0:
                time.sleep(1.0)
            out = encode(ready(after_wait(x)))
            return {"out": out, "threads": list(names)}
        ctx.rec.check(f"run{run}", check)


CLOSE_AFTER_S = 2.0


def scenario_close_during_continuation(ctx):
    """Peer 0's program goes on after its wait into an all_reduce that peer 1
    never joins, so a completion thread is blocked in it; then peer 0 closes
    the communicator from another Python thread. close() must cancel it,
    let the program end with an error and join every thread, long before the
    communicator's own timeout would have ended the collective."""
    import threading
    import time

    import jax
    from peer_scenarios import describe_error, ready

    pccl, comm, rec = ctx.pccl, ctx.comm, ctx.rec
    x = peer_input(ctx.index)
    if ctx.index != 0:
        rec.check("joined", lambda: ready(jax.jit(
            lambda v: pccl.all_reduce_wait(pccl.all_reduce_start(v, comm)))(x)).tolist())
        time.sleep(3 * CLOSE_AFTER_S)  # while peer 0 closes; never joins its all_reduce
        return

    def run():
        closed = {}

        def close_later():
            time.sleep(CLOSE_AFTER_S)
            t0 = time.monotonic()
            comm.close()
            closed["close_s"] = time.monotonic() - t0

        closer = threading.Thread(target=close_later)
        t0 = time.monotonic()
        closer.start()
        try:
            ready(jax.jit(lambda v: pccl.all_reduce(
                pccl.all_reduce_wait(pccl.all_reduce_start(v, comm)), comm))(x))
            error = None
        except Exception as exc:  # noqa: BLE001 - the test checks what it was
            error = describe_error(exc)
        elapsed = time.monotonic() - t0
        closer.join(timeout=60)
        return {"error": error, "elapsed": elapsed, "close_s": closed.get("close_s"),
                "closer_alive": closer.is_alive()}
    rec.check("closed", run)
    ctx.comm = None  # closed already


SCENARIOS = {"continuation": (scenario_continuation, True),
             "close_during_continuation": (scenario_close_during_continuation, True),
             "continuation_thread": (scenario_continuation_thread, True)}
