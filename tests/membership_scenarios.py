"""Peer code of the membership-surface tests (tests/test_membership.py).

"pending" (3 peers): peers 0 and 1 join and run rounds with nobody waiting;
peer 2 registers only once both have (files in the launch's directory say
so), the two keep running rounds until they agree that someone is pending,
then admit it with update_topology(), and all three run rounds again.
Peers 0 and 1 advertise "127.0.0.1" and "localhost" (advertise_host=); peer 2
advertises nothing, so the master uses the address it sees.

"two_groups" (4 peers): peers 0 and 1 in peer_group 0, peers 2 and 3 in
peer_group 1, each pair with its own collectives and its own shared state.

A round: read comm.are_peers_pending(), then all-reduce it (as 0/1, op sum).
Every peer reads its answer after the same collective (the previous round's),
and the sum tells every peer everyone's answer, so loops that end on the
sum end at the same round on every peer (no peer can be left in a collective
the others skipped). API.md: the answer is the same on every accepted peer
between two collectives, so each round's sum is 0 or the group size.
"""
from __future__ import annotations

import os
import time

import numpy as np

import cases

ADVERTISE = {0: "127.0.0.1", 1: "localhost", 2: ""}
QUIET_ROUNDS = 3
PENDING_MAX_ROUNDS = 600  # >= 30 s with the 0.05 s pause: the newcomer's notice takes ms
GROUP_OF = {0: 0, 1: 0, 2: 1, 3: 1}
STATE_REVISION = {0: 5, 1: 40}  # each group's first sync (any revision may start a run)


def pending_round(pccl, comm) -> list:
    mine = bool(comm.are_peers_pending())
    total = int(np.asarray(pccl.all_reduce(np.array([int(mine)], np.int32), comm, op="sum"))[0])
    return [mine, total, comm.group_world_size]


def _touch(path: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write("1")
    os.replace(path + ".tmp", path)


def _wait_for(paths: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"never appeared within {timeout:.0f} s: {paths}")
        time.sleep(0.05)


def scenario_pending(ctx):
    pccl, args, rec, i = ctx.pccl, ctx.args, ctx.rec, ctx.index
    workdir = os.path.dirname(os.path.abspath(args.out))
    joined = [os.path.join(workdir, f"joined{k}") for k in (0, 1)]
    comm = ctx.comm = pccl.Communicator(args.master, timeout=args.timeout,
                                        advertise_host=ADVERTISE[i])

    def ids():
        return {"peer_id": comm.peer_id, "type": type(comm.peer_id).__name__}

    if i < 2:
        comm.connect(min_peers=2, timeout=args.join_timeout)
        rec.check("ids/joined", ids)
        rec.check("quiet", lambda: [pending_round(pccl, comm) for _ in range(QUIET_ROUNDS)])
        _touch(joined[i])

        def until_pending():
            rounds = []
            while len(rounds) < PENDING_MAX_ROUNDS:
                rounds.append(pending_round(pccl, comm))
                if rounds[-1][1] == comm.group_world_size:  # everyone said True
                    break
                time.sleep(0.05)
            return rounds
        rec.check("pending", until_pending)
        rec.check("ids/pending", ids)
        # The test process watches master.status(); it says (--aux directory)
        # once it has seen the newcomer listed as pending. Waiting for that
        # keeps the newcomer pending long enough to be seen however loaded
        # the machine is (on timeout the test's check of the status fails).
        if args.aux:
            try:
                _wait_for([os.path.join(args.aux, "saw_pending")], 30)
            except TimeoutError:
                pass

        def admit():
            comm.update_topology()
            return comm.group_world_size
        rec.check("admit", admit)
    else:
        _wait_for(joined, args.join_timeout)
        comm.connect(timeout=args.join_timeout)
        rec.check("ids/joined", ids)
    rec.check("after", lambda: [pending_round(pccl, comm) for _ in range(QUIET_ROUNDS)])
    rec.check("ids/after", ids)


def group_input(index: int) -> np.ndarray:
    return cases.small_ints("two_groups", index, (6,), "float32")


def scenario_two_groups(ctx):
    import jax

    pccl, args, rec, i = ctx.pccl, ctx.args, ctx.rec, ctx.index
    group = GROUP_OF[i]
    comm = ctx.comm = pccl.Communicator(args.master, peer_group=group, timeout=args.timeout)
    comm.connect(min_peers=2, timeout=args.join_timeout)

    workdir = os.path.dirname(os.path.abspath(args.out))

    def sizes():
        # The run's size reaches a group that saw no topology change when the
        # other group filled up through the master's heartbeats (1 s apart).
        deadline = time.monotonic() + 30
        while comm.world_size != 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = {"world_size": comm.world_size, "group_world_size": comm.group_world_size,
                "rank": comm.rank, "peer_id": comm.peer_id}
        # Nobody leaves before every peer has looked: a group done with its
        # checks within a heartbeat of filling up would otherwise shrink the
        # run again before the other group heard of 4.
        _touch(os.path.join(workdir, f"sized{i}"))
        _wait_for([os.path.join(workdir, f"sized{k}") for k in GROUP_OF], 60)
        return seen
    rec.check("sizes", sizes)
    x = group_input(i)
    rec.check("sum", lambda: np.asarray(pccl.all_reduce(x, comm, op="sum")).tolist())
    avg = jax.jit(lambda v: pccl.all_reduce(v, comm, op="avg", return_info=True))

    def jit_avg():
        y, info = avg(x)
        return {"avg": np.asarray(y).tolist(), "world": int(info.world_size)}
    rec.check("jit_avg", jit_avg)

    def sync():
        # The even peer of each group holds the group's content, the odd one
        # zeros and receive_only: it must get its own group's content and
        # revision, never the other group's (same structure in both).
        content = np.full(4, 100.0 + group, np.float32) if i % 2 == 0 else np.zeros(4, np.float32)
        strategy = "enforce_popular" if i % 2 == 0 else "receive_only"
        state, info = comm.sync_shared_state({"w": content}, revision=STATE_REVISION[group],
                                             strategy=strategy)
        return {"w": np.asarray(state["w"]).tolist(), "revision": int(info.revision)}
    rec.check("sync", sync)
    # A second round at the next revision: each group's revision advances on its own.
    rec.check("sync2", lambda: int(comm.sync_shared_state(
        {"w": np.full(4, 200.0 + group, np.float32)}, revision=STATE_REVISION[group] + 1)[1].revision))


SCENARIOS = {
    # name: (function, joins the run?) -- both join on their own
    "pending": (scenario_pending, False),
    "two_groups": (scenario_two_groups, False),
}
