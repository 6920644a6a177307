"""Peer code of the topology tests (tests/test_topology.py).

"optimize" (4 peers): all-reduce, optimize_topology(), all-reduce (eager and
jitted), optimize_topology() again (every figure fresh: nothing probed), and
all-reduce once more. Sums of small integers are exact; the average of
random floats must be bit-identical on every peer (its digest is compared).

"optimize_churn" (5 peers): peers 0-3 join and optimize; peer 4 registers
only after that (a file in the launch's directory says so) and is admitted
by update_topology(); all five all-reduce and optimize again (the new
peer's links are probed); peer 4 then SIGKILLs itself; the others' next
all-reduce fails, they recover with update_topology() and all-reduce with
four, then optimize once more (nothing left to probe).
"""
from __future__ import annotations

import hashlib
import os
import signal
import time

import numpy as np

import cases
from membership_scenarios import _touch, _wait_for as wait_for_files

OPTIMIZE_PEERS = 4
CHURN_PEERS = 5
NEWCOMER = 4
MAX_RECOVERIES = 10


def ints(scenario: str, index: int) -> np.ndarray:
    return cases.small_ints(scenario, index, (1000,), "float32")


def floats(index: int) -> np.ndarray:
    return np.random.default_rng(1000 + index).standard_normal(4096).astype(np.float32)


def reduce_round(pccl, comm, scenario: str, index: int) -> dict:
    from peer_scenarios import encode

    total = pccl.all_reduce(ints(scenario, index), comm, op="sum")
    mean = np.asarray(pccl.all_reduce(floats(index), comm, op="avg"))
    return {"sum": encode(total), "avg_digest": hashlib.sha256(mean.tobytes()).hexdigest(),
            "rank": comm.rank, "size": comm.group_world_size}


def optimize(comm) -> dict:
    t0 = time.monotonic()
    comm.optimize_topology()
    return {"rank": comm.rank, "size": comm.group_world_size, "peer_id": comm.peer_id,
            "epoch": comm.stats()["epoch"], "seconds": time.monotonic() - t0}


def scenario_optimize(ctx):
    import jax
    from peer_scenarios import encode

    pccl, args, rec, i = ctx.pccl, ctx.args, ctx.rec, ctx.index
    comm = ctx.comm = pccl.Communicator(args.master, timeout=args.timeout)
    comm.connect(min_peers=OPTIMIZE_PEERS, timeout=args.join_timeout)
    rec.check("before", lambda: reduce_round(pccl, comm, "optimize", i))
    rec.check("optimize", lambda: optimize(comm))
    rec.check("after", lambda: reduce_round(pccl, comm, "optimize", i))
    jitted = jax.jit(lambda v: pccl.all_reduce(v, comm, op="sum"))
    rec.check("jit", lambda: encode(jitted(ints("optimize", i))))
    rec.check("optimize2", lambda: optimize(comm))
    rec.check("after2", lambda: reduce_round(pccl, comm, "optimize", i))


def _wait_for(path: str, timeout: float) -> None:
    wait_for_files([path], timeout)


def recover_and_reduce(pccl, comm, index: int) -> dict:
    failures = []
    for _ in range(MAX_RECOVERIES):
        try:
            got = reduce_round(pccl, comm, "optimize_churn", index)
            got["failures"] = failures
            return got
        except pccl.PeerFailureError as exc:
            failures.append(str(exc)[:200])
            comm.update_topology()
    raise RuntimeError(f"no all-reduce after {MAX_RECOVERIES} recoveries: {failures}")


def scenario_optimize_churn(ctx):
    pccl, args, rec, i = ctx.pccl, ctx.args, ctx.rec, ctx.index
    workdir = os.path.dirname(os.path.abspath(args.out))
    optimized = os.path.join(workdir, "optimized")
    comm = ctx.comm = pccl.Communicator(args.master, timeout=args.timeout)
    if i == NEWCOMER:
        _wait_for(optimized, args.join_timeout)
        comm.connect(timeout=args.join_timeout)
    else:
        comm.connect(min_peers=CHURN_PEERS - 1, timeout=args.join_timeout)
        rec.check("optimize", lambda: optimize(comm))
        if i == 0:
            _touch(optimized)

        def admit():
            # Collective: every member sees the newcomer admitted by the same call.
            rounds = 0
            while comm.group_world_size < CHURN_PEERS:
                comm.update_topology()
                rounds += 1
                time.sleep(0.02)
            return rounds
        rec.check("admit", admit)
    rec.check("five", lambda: reduce_round(pccl, comm, "optimize_churn", i))
    rec.check("optimize5", lambda: optimize(comm))
    if i == NEWCOMER:
        rec.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    rec.check("four", lambda: recover_and_reduce(pccl, comm, i))
    rec.check("optimize4", lambda: optimize(comm))
    rec.check("after4", lambda: reduce_round(pccl, comm, "optimize_churn", i))


SCENARIOS = {
    # name: (function, joins the run?) -- both join on their own
    "optimize": (scenario_optimize, False),
    "optimize_churn": (scenario_optimize_churn, False),
}


# --- peer groups: a death in one group leaves the other undisturbed ----------------------

GROUP_OF = {0: 0, 1: 0, 2: 1, 3: 1}
VICTIM = 3
VICTIM_ROUNDS = 5
GOING_ROUNDS = 3  # group 0's rounds before group 1 starts: its rounds span the kill
MAX_GROUP_ROUNDS = 3000


def scenario_groups_kill(ctx):
    """Group 0 (peers 0, 1) all-reduces round after round while, in group 1,
    peer 3 SIGKILLs itself and peer 2 recovers alone. Group 0's rounds go on
    until both its peers saw peer 2 recovered (a flag all-reduced with each
    round, so both stop at the same round): none of them may fail."""
    pccl, args, rec, i = ctx.pccl, ctx.args, ctx.rec, ctx.index
    group = GROUP_OF[i]
    workdir = os.path.dirname(os.path.abspath(args.out))
    recovered = os.path.join(workdir, "recovered")
    going = os.path.join(workdir, "group0_going")
    comm = ctx.comm = pccl.Communicator(args.master, peer_group=group, timeout=args.timeout)
    comm.connect(min_peers=2, timeout=args.join_timeout)
    _touch(os.path.join(workdir, f"ready{i}"))
    for k in GROUP_OF:
        _wait_for(os.path.join(workdir, f"ready{k}"), args.join_timeout)
    x = ints("groups_kill", i)
    if group == 0:
        def rounds():
            sums, failures = [], []
            for _ in range(MAX_GROUP_ROUNDS):
                seen = float(os.path.exists(recovered))
                try:
                    out = np.asarray(pccl.all_reduce(np.append(x, seen), comm, op="sum"))
                except pccl.PcclError as exc:  # any failure is the finding
                    failures.append(f"{type(exc).__name__}: {exc}"[:300])
                    comm.update_topology()
                    continue
                sums.append(out[:-1])
                if len(sums) == GOING_ROUNDS and i == 0:
                    _touch(going)
                if out[-1] == 2:
                    break
            distinct = {s.tobytes() for s in sums}
            return {"rounds": len(sums), "failures": failures, "distinct_sums": len(distinct),
                    "sum": sums[-1].tolist() if sums else None}
        rec.check("rounds", rounds)
        deadline = time.monotonic() + 30
        while comm.world_size != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        rec.check("world_after", lambda: {"world_size": comm.world_size,
                                          "group_world_size": comm.group_world_size})
        _touch(os.path.join(workdir, f"looked{i}"))
        return
    _wait_for(going, args.join_timeout)
    for _ in range(VICTIM_ROUNDS):
        pccl.all_reduce(x, comm, op="sum")
    if i == VICTIM:
        rec.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def recover():
        failures = 0
        for _ in range(MAX_RECOVERIES):
            try:
                got = np.asarray(pccl.all_reduce(x, comm, op="sum"))
            except pccl.PeerFailureError:
                failures += 1
                comm.update_topology()
                continue
            return {"failures": failures, "sum": got.tolist(),
                    "group_world_size": comm.group_world_size}
        raise RuntimeError(f"still failing after {MAX_RECOVERIES} recoveries")
    rec.check("recover", recover)
    _touch(recovered)
    # Stay in the run until group 0 has read the run's size (3 with us).
    for k in (0, 1):
        _wait_for(os.path.join(workdir, f"looked{k}"), 60)


SCENARIOS["groups_kill"] = (scenario_groups_kill, False)
