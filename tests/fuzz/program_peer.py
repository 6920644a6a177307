"""One peer of a program-fuzz launch (started by tests/fuzz/run_programs.py).

Runs positions 0..P-1, position = (program, step), in lockstep with the others:

    loop: update_topology(); sync_shared_state({"pos", ...}, revision=pos + 1)
          -> pos = the run's position (a newcomer jumps to it);
          run program `pos` once (jitted or eager; pending handles waited for by
          a second call, with a guard call in between); pos += 1

A failed step is not retried (every peer advances, so they never pair
different positions); a failed update_topology / sync is retried from the
top. A peer evicted (woke from SIGSTOP) or closed (`--close-at`) connects
again with a new Communicator. Writes one JSON line per event to --out:

  {"call": what, "phase": "begin", "pos", "t"}      before every call that may block
  {"call": what, "phase": "end", "ok": bool, "dur", "err": {...}, ...}
  step ends add: "prog", "step", "epoch", "infos", "outs" (hex), "digest"
  {"stuck": reason}   the communicator stayed unusable (exit 4)
  {"done": pos}       finished
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import programs as P  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--first", type=int, default=0, help="first program index")
    ap.add_argument("--programs", type=int, required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-stmts", type=int, default=7)
    ap.add_argument("--with-kinds", action="store_true", help="see programs.generate")
    ap.add_argument("--state-kib", type=int, default=0, help="add a leaf this large to the shared "
                    "state, different on every peer (each sync then transfers it)")
    ap.add_argument("--timeout", type=float, default=6.0)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--close-at", default="", help="POS:DELAY_S: close() from a thread "
                    "DELAY_S after starting position POS")
    ap.add_argument("--world", type=int, default=0, help="initial peers: wait until this many "
                    "are accepted before the first step (newcomers: 0)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import jax
    jax.config.update("jax_enable_x64", True)
    import jax_pccl as pccl

    out = open(args.out, "a", buffering=1)
    lock = threading.Lock()

    def emit(**rec):
        rec["t"] = time.time()
        with lock:
            out.write(json.dumps(rec) + "\n")

    positions = [(p, s) for p in range(args.first, args.first + args.programs)
                 for s in range(args.steps)]
    total = len(positions)
    close_pos, close_delay = (None, 0.0)
    if args.close_at:
        a, b = args.close_at.split(":")
        close_pos, close_delay = int(a), float(b)
    reached = threading.Event()

    def err_info(exc: BaseException) -> dict:
        text = f"{type(exc).__name__}: {exc}"
        return {"type": type(exc).__name__, "msg": str(exc)[:600],
                "peer_failure": bool(pccl.is_peer_failure(exc)),
                "master": "MasterUnreachableError" in text}

    state = {"comm": None, "built": {}}

    def connect():
        t0 = time.time()
        emit(call="connect", phase="begin", pos=-1)
        # A peer may (re)connect while the master is down (the driver restarts
        # it within seconds): refused connections are retried, as a real
        # launcher would, within the same 90 s bound; other errors are not.
        while True:
            comm = pccl.Communicator(args.master, timeout=args.timeout,
                                     concurrency=args.concurrency)
            try:
                comm.connect(timeout=90)
                break
            except pccl.MasterUnreachableError:
                comm.close()
                if time.time() - t0 > 90:
                    raise
                time.sleep(0.2)
        emit(call="connect", phase="end", ok=True, dur=time.time() - t0, world=comm.world_size)
        state["comm"], state["built"] = comm, {}

    def closer():
        reached.wait()
        time.sleep(close_delay)
        emit(closing=True)
        state["comm"].close()
        emit(closed=True)

    if close_pos is not None:
        threading.Thread(target=closer, daemon=True).start()

    def call(what: str, pos: int, fn):
        emit(call=what, phase="begin", pos=pos)
        t0 = time.time()
        try:
            res = fn()
        except Exception as exc:  # noqa: BLE001 - reported, classified by the driver
            emit(call=what, phase="end", pos=pos, ok=False, dur=time.time() - t0, err=err_info(exc))
            return False, exc
        return True, (res, t0)

    connect()
    deadline = time.time() + 60
    while state["comm"].world_size < args.world:  # the initial peers start together
        if time.time() > deadline:
            emit(stuck=f"world size {state['comm'].world_size} < {args.world} after 60 s of joining")
            return 4
        state["comm"].update_topology()
        time.sleep(0.05)
    pos = 0
    acc = np.zeros(4, np.int64)
    unexpected = 0  # consecutive errors that are neither peer failures nor master outages
    last_success = time.time()
    while pos < total:
        comm = state["comm"]
        if unexpected >= 5 or time.time() - last_success > 45:
            emit(stuck=f"{unexpected} consecutive unexpected errors, {time.time() - last_success:.0f} s "
                       f"since the last successful call: the communicator stays unusable")
            return 4

        def recover(exc) -> None:
            nonlocal unexpected
            text = f"{type(exc).__name__}: {exc}"
            if pccl.is_peer_failure(exc) or "MasterUnreachableError" in text:
                unexpected = 0
            else:
                unexpected += 1
            if "MasterUnreachableError" in text:
                time.sleep(0.2)
            elif ("removed from the run" in text or "closed" in text
                  or "CancelledError" in text or "cancelled" in text.lower()) and not pccl.is_peer_failure(exc):
                ok, exc2 = call("reconnect", pos, connect)
                if not ok:
                    # An evicted peer that wakes during a master outage cannot connect
                    # again until the master is back: the outage explains it (and the
                    # old communicator's "removed from the run" before it).
                    if "MasterUnreachableError" in f"{type(exc2).__name__}: {exc2}":
                        unexpected = 0
                    time.sleep(0.5)

        ok, res = call("update_topology", pos, comm.update_topology)
        if not ok:
            recover(res)
            continue
        last_success = time.time()
        emit(call="update_topology", phase="end", pos=pos, ok=True, dur=time.time() - res[1],
             world=comm.world_size)
        shared = {"pos": np.int64(pos), "acc": acc.copy(), "tag": np.asarray(float(pos % 7), np.float32)}
        if args.state_kib:
            shared["blob"] = np.full(args.state_kib * 256, float(args.index * 1000 + pos), np.float32)
        ok, res = call("sync", pos, lambda: comm.sync_shared_state(shared, revision=pos + 1))
        if not ok:
            recover(res)
            continue
        last_success = time.time()
        (new_state, info), t0 = res
        # The state comes back with the structure, shapes and dtypes it went in with.
        bad = [f"{k}: sent {np.asarray(shared[k]).dtype}{np.shape(shared[k])}, got "
               f"{np.asarray(new_state[k]).dtype}{np.shape(new_state[k])}"
               for k in shared if k not in new_state or np.shape(new_state[k]) != np.shape(shared[k])
               or np.asarray(new_state[k]).dtype != np.asarray(shared[k]).dtype]
        if bad or set(new_state) != set(shared):
            emit(call="sync", phase="end", pos=pos, ok=True, dur=time.time() - t0, bad_structure=bad
                 or [f"keys {sorted(new_state)}"], revision=int(info.revision), state_pos=-1, state="")
            new_state = {k: np.asarray(new_state.get(k, shared[k])).reshape(np.shape(shared[k]))
                         if np.size(new_state.get(k, shared[k])) == np.size(shared[k]) else shared[k]
                         for k in shared}
        new_pos = int(np.asarray(new_state["pos"]))
        acc = np.asarray(new_state["acc"]).copy()
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(np.asarray(new_state[k])).tobytes()
                                         for k in sorted(shared))).hexdigest()[:16]
        try:
            sync_epoch = comm.stats().get("epoch")
        except Exception:  # noqa: BLE001
            sync_epoch = None
        emit(call="sync", phase="end", pos=pos, ok=True, dur=time.time() - t0,
             revision=int(info.revision), epoch=sync_epoch, state_pos=new_pos, state=digest)
        pos = new_pos
        if pos >= total:
            break
        if close_pos is not None and pos >= close_pos:
            reached.set()

        prog_index, step = positions[pos]
        prog = P.generate(args.seed, prog_index, args.max_stmts, args.with_kinds)
        if prog_index not in state["built"]:
            state["built"] = {prog_index: P.build(prog, comm, pccl)}  # only the current one
        run_main, run_finish = state["built"][prog_index]
        xs = P.make_inputs(prog, args.index, step)
        preds = P.predicates(prog)
        try:
            epoch = comm.stats().get("epoch")
        except Exception:  # noqa: BLE001 - closed meanwhile: the step reports it
            epoch = None
        ok, res = call("step", pos, lambda: jax.block_until_ready(run_main(preds, *xs)))
        outs, infos, guard = [], [], None
        if ok:
            (o1, i1, pend), t0 = res
            outs, infos = list(o1), list(i1)
            if prog["pending"]:
                if prog["guard"]:
                    gfn = (comm.update_topology if prog["guard"] == "update_topology"
                           else lambda: comm.sync_shared_state(shared, revision=pos + 1))
                    g_ok, g_res = call("guard", pos, gfn)
                    if g_ok:
                        emit(call="guard", phase="end", pos=pos, ok=True, dur=time.time() - g_res[1],
                             what=prog["guard"], returned=True)
                    guard = "returned" if g_ok else f"{type(g_res).__name__}: {str(g_res)[:200]}"
                ok, res = call("finish", pos, lambda: jax.block_until_ready(run_finish(pend)))
                if ok:
                    (o2, i2), _ = res
                    outs += list(o2)
                    infos += list(i2)
        if ok:
            unexpected, last_success = 0, time.time()
            arrs = [np.array(o, copy=True, order="C") for o in outs]  # keeps 0-d (ascontiguousarray would not)
            digest = hashlib.sha256(b"".join(a.tobytes() for a in arrs)).hexdigest()[:16]
            acc = acc + np.array([1, pos, len(arrs), 0], np.int64)
            emit(call="step", phase="end", pos=pos, ok=True, dur=time.time() - t0, prog=prog_index,
                 step=step, epoch=epoch, infos=[int(np.asarray(i)) for i in infos], digest=digest,
                 outs=[[a.dtype.name, list(a.shape), a.tobytes().hex()] for a in arrs], guard=guard)
        else:
            recover(res)
        pos += 1
    emit(done=pos)
    time.sleep(0.5)  # let the last collective's bytes drain to slower peers
    state["comm"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
