"""Shared-state scenarios run inside each peer process (see peer_scenarios.py).

Every peer builds its state from a seed (shared_state_case), calls
sync_shared_state in a fixed order and records, per check, the hash of every
resulting leaf, the leaves' Python types and the SyncInfo figures. The test
process rebuilds the expected states from the same seeds and compares.
"""
from __future__ import annotations

import time

import numpy as np

import cases


def report(pccl, new, info) -> dict:
    import jax
    leaves = jax.tree_util.tree_leaves(new)
    return {
        "hashes": [str(pccl.content_hash(leaf)) for leaf in leaves],
        "kinds": [type(leaf).__name__ for leaf in leaves],
        "sha256": [cases.sha256(np.asarray(leaf)) for leaf in leaves],
        "revision": info.revision,
        "tx": info.tx_bytes,
        "rx": info.rx_bytes,
        "refetched": info.refetched_leaves,
    }


def evolve(state):
    """One deterministic 'training step': every peer computes the same."""
    import jax
    return jax.tree_util.tree_map(
        lambda x: x + 1 if np.asarray(x).dtype.kind == "f" else x, state)


def sync_check(ctx, name, state, revision, strategy="enforce_popular"):
    """Records one sync; returns (synced state or the input on error, entry)."""
    out = {"state": state}

    def run():
        new, info = ctx.comm.sync_shared_state(state, revision=revision, strategy=strategy)
        out["state"] = new
        return report(ctx.pccl, new, info)
    entry = ctx.rec.check(name, run)
    return out["state"], entry


def synced(ctx, state, revision, strategy="enforce_popular"):
    new, _ = ctx.comm.sync_shared_state(state, revision=revision, strategy=strategy)
    return new


def scenario_state_stale(ctx):
    """Peers 0 and 1 hold seed 1 at revision 5, peer 2 is stale (seed 2, revision 1)."""
    i = ctx.index
    state, _ = sync_check(ctx, "first", cases.shared_state_case(1 if i != 2 else 2),
                          5 if i != 2 else 1)
    state, _ = sync_check(ctx, "unchanged", evolve(state), 6)
    # Peer 2 claims a revision the run has not reached: refused, keeps its state.
    state, _ = sync_check(ctx, "ahead", evolve(state), 9 if i == 2 else 7)
    # Peer 2 comes back with old content at an old revision: it is updated.
    if i == 2:
        sync_check(ctx, "behind_is_updated", cases.shared_state_case(2), 3)
    else:
        sync_check(ctx, "behind_is_updated", evolve(state), 8)


def scenario_state_newer_minority(ctx):
    """First sync of a run: one peer at revision 10 against two at revision 3."""
    i = ctx.index
    sync_check(ctx, "first", cases.shared_state_case(3 if i == 0 else 1), 10 if i == 0 else 3)


def scenario_state_strategies(ctx):
    i = ctx.index
    a, b, c = (cases.shared_state_case(s) for s in (1, 2, 3))
    # receive_only does not vote: peers 0 (a) and 1 (b) tie, smaller hash wins per leaf.
    sync_check(ctx, "receive_only", [a, b, b][i], 1, "receive_only" if i == 2 else "enforce_popular")
    # A send_only peer is the declared source, even against a majority.
    sync_check(ctx, "send_only", c if i == 0 else a, 2, "send_only" if i == 0 else "enforce_popular")
    # A send_only peer that lags would have to receive: refused; the others go on.
    sync_check(ctx, "send_only_lagging", a, 2 if i == 0 else 3,
               "send_only" if i == 0 else "enforce_popular")
    # Nobody offers anything.
    sync_check(ctx, "all_receive_only", a, 4, "receive_only")
    sync_check(ctx, "after", b if i == 1 else a, 4)


def scenario_state_joiner(ctx):
    """Peers 0 and 1 train; peer 2 joins mid-run and must catch up in one sync."""
    import peer_scenarios
    pccl, i = ctx.pccl, ctx.index
    if i == 2:
        time.sleep(2.0)
        ctx.comm = pccl.Communicator(ctx.args.master, timeout=ctx.args.timeout).connect(timeout=60)
        state, entry = sync_check(ctx, "join_sync", cases.shared_state_case(9), 0)
        revision = entry["value"]["revision"] if entry["ok"] else 0
    else:
        args = ctx.args
        args.world = 2
        ctx.comm = peer_scenarios.join(pccl, args)
        state, revision = cases.shared_state_case(1), 1
        for _ in range(200):
            ctx.comm.update_topology()
            if ctx.comm.world_size == 3:
                break
            state = evolve(synced(ctx, state, revision))
            revision += 1
            time.sleep(0.1)
        state, _ = sync_check(ctx, "join_sync", state, revision)
    ctx.comm.update_topology()  # nothing pending: a ring check on every member
    sync_check(ctx, "after_join", evolve(state), revision + 1)


def scenario_state_corrupt(ctx):
    """Peer 0 alone holds the newest state and corrupts the first range it serves."""
    i = ctx.index
    sync_check(ctx, "first", cases.shared_state_case(1 if i == 0 else 2), 2 if i == 0 else 1)


def scenario_state_corrupt_always(ctx):
    """Peer 0 alone holds the newest state and corrupts everything it serves."""
    import jax.numpy as jnp
    i = ctx.index
    sync_check(ctx, "first", cases.shared_state_case(1 if i == 0 else 2), 2 if i == 0 else 1)
    x = jnp.asarray(cases.small_ints("after_corrupt", i, (7,), "float32"))
    ctx.rec.check("after/sum", lambda: np.asarray(ctx.pccl.all_reduce(x, ctx.comm, op="sum")).tolist())


def scenario_state_holder_dies(ctx):
    """Peers 0 and 1 hold the newest (large) state; peer 0 is killed mid-transfer."""
    import jax.numpy as jnp
    i = ctx.index
    holder = i in (0, 1)
    sync_check(ctx, "first", cases.shared_state_case(1 if holder else 2, big=True), 2 if holder else 1)
    x = jnp.asarray(cases.small_ints("after_death", i, (7,), "float32"))

    def after():
        ctx.comm.update_topology()
        return {"world": ctx.comm.world_size,
                "sum": np.asarray(ctx.pccl.all_reduce(x, ctx.comm, op="sum")).tolist()}
    ctx.rec.check("after", after)


def scenario_state_only_holder_dies(ctx):
    """Peer 0 alone holds the newest state and is killed mid-transfer: the others
    fail cleanly, recover, and sync among themselves."""
    i = ctx.index
    state = cases.shared_state_case(1 if i == 0 else 2, big=True)
    sync_check(ctx, "first", state, 2 if i == 0 else 1)

    def retry():
        ctx.comm.update_topology()
        new, info = ctx.comm.sync_shared_state(state, revision=1)
        return dict(report(ctx.pccl, new, info), world=ctx.comm.world_size)
    ctx.rec.check("retry", retry)


def layout_check(ctx, name, state, revision):
    """Records one sync's layout of what came back; returns (state, entry)."""
    import state_structures
    out = {"state": state}

    def run():
        new, info = ctx.comm.sync_shared_state(state, revision=revision)
        out["state"] = new
        return dict(state_structures.layout(ctx.pccl, new), revision=info.revision,
                    tx=info.tx_bytes, rx=info.rx_bytes, refused=info.refused_peers)
    entry = ctx.rec.check(name, run)
    return out["state"], entry


def scenario_state_layouts(ctx):
    """Peers 0 and 1 hold seed 1 at revision 3; peer 2 (seed 2, revision 1)
    receives every leaf that differs, then all take an adam step and sync again."""
    import state_structures
    i = ctx.index
    state = state_structures.structured_state(2 if i == 2 else 1)
    ctx.rec.check("input", lambda: state_structures.layout(ctx.pccl, state))
    state, _ = layout_check(ctx, "first", state, 1 if i == 2 else 3)
    stepped = state_structures.adam_step(state)
    ctx.rec.check("stepped", lambda: state_structures.layout(ctx.pccl, stepped))
    layout_check(ctx, "second", stepped, 4)


def odd_variants():
    """Peer 2's pytree per check: (check name, how it differs from the others')."""
    import jax.numpy as jnp

    def keys(s):  # same bytes, one key renamed (same leaf order)
        p = dict(s["params"])
        p["weight"] = p.pop("w")
        return dict(s, params=p)

    def shape(s):  # same bytes, another shape
        return dict(s, params=dict(s["params"], w=s["params"]["w"].reshape(3, 4)))

    def dtype(s):  # same bytes, another dtype
        return dict(s, params=dict(s["params"], h=s["params"]["h"].view(jnp.bfloat16)))

    def bool_for_uint8(s):  # same wire dtype and shape: only the digest tells
        z = s["zero_d"]
        return dict(s, zero_d=dict(z, numpy=dict(z["numpy"], uint8=z["numpy"]["uint8"] != 0)))

    def extra_leaf(s):
        return dict(s, extra=np.zeros(2, np.float32))
    return [("keys", keys), ("shape", shape), ("dtype", dtype),
            ("bool_for_uint8", bool_for_uint8), ("leaf_count", extra_leaf)]


def scenario_state_odd_structure(ctx):
    """Peer 2 syncs another pytree structure each time: it alone is refused,
    peers 0 and 1 go on; then it syncs the right structure with stale content."""
    import state_structures
    i = ctx.index
    base = state_structures.structured_state(1)
    ctx.rec.check("input", lambda: state_structures.layout(ctx.pccl, base))
    revision = 1
    for name, variant in odd_variants():
        layout_check(ctx, name, variant(base) if i == 2 else base, revision)
        revision += 1
    layout_check(ctx, "after", state_structures.structured_state(2) if i == 2 else base, revision)


def scenario_state_structure_tie(ctx):
    """Two peers, one structure each, same revision: nobody can tell which is odd."""
    import state_structures
    base = state_structures.structured_state(1)
    odd = dict(base, extra=np.zeros(2, np.float32))
    layout_check(ctx, "tie", odd if ctx.index == 1 else base, 1)
    layout_check(ctx, "after", base, 1)


SCENARIOS = {
    "state_layouts": (scenario_state_layouts, True),
    "state_odd_structure": (scenario_state_odd_structure, True),
    "state_structure_tie": (scenario_state_structure_tie, True),
    "state_stale": (scenario_state_stale, True),
    "state_newer_minority": (scenario_state_newer_minority, True),
    "state_strategies": (scenario_state_strategies, True),
    "state_joiner": (scenario_state_joiner, False),
    "state_corrupt": (scenario_state_corrupt, True),
    "state_corrupt_always": (scenario_state_corrupt_always, True),
    "state_holder_dies": (scenario_state_holder_dies, True),
    "state_only_holder_dies": (scenario_state_only_holder_dies, True),
}
