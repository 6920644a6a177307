"""Shared-state sync costs on loopback.

    python bench/shared_state.py --peers 2 4 --mib 256 --iters 5

For each N: (a) one stale peer and (b) N-1 stale peers receive the whole
state (every leaf changed) from the up-to-date peers; (c) a sync in which
nothing changed (hashing plus one master round trip). Also the hash's
single-threaded speed. Prints medians (seconds, GB/s) and one JSON line.
GB/s = bytes delivered to the stale peer(s) / wall time of the sync.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SCRIPT = os.path.abspath(__file__)
LEAVES = 4


def make_state(mib: int, fill: float):
    import numpy as np
    n = mib * (1 << 20) // 4 // LEAVES
    return {f"layer{k}": np.full(n, fill + k, dtype=np.float32) for k in range(LEAVES)}


def timed_sync(comm, state, revision):
    t = time.perf_counter()
    new, info = comm.sync_shared_state(state, revision=revision)
    return new, info, time.perf_counter() - t


def worker(args) -> int:
    import numpy as np

    import jax_pccl as pccl

    args.peers = args.peers[0]
    comm = pccl.Communicator(args.master, timeout=60).connect(timeout=120)
    while comm.group_world_size < args.peers:
        comm.update_topology()
        time.sleep(0.01)
    stale_roles = {"one": [args.peers - 1], "all_but_one": list(range(1, args.peers))}
    state = make_state(args.mib, 1.0)
    revision = 0
    out = {"index": args.index}
    # Decide who is stale by rank, which every peer knows identically.
    for case, stale in stale_roles.items():
        times = []
        for it in range(args.iters + 1):  # the first is a warm-up
            revision += 1
            if comm.rank in stale:
                mine = make_state(args.mib, -1.0 - it)  # differs in every leaf
                claim = 0
            else:
                for leaf in state.values():
                    leaf[0] = revision  # a change in every leaf
                mine, claim = state, revision
            new, info, dt = timed_sync(comm, mine, claim)
            if it > 0:
                times.append({"s": dt, "rx": info.rx_bytes, "tx": info.tx_bytes,
                              "stale": comm.rank in stale, "phases": info.seconds})
            state = {k: np.array(v) for k, v in new.items()} if comm.rank in stale else state
        out[case] = times
    unchanged = []
    for it in range(args.iters + 1):
        revision += 1
        _, info, dt = timed_sync(comm, state, revision)
        if it > 0:
            unchanged.append({"s": dt, "rx": info.rx_bytes, "tx": info.tx_bytes})
    out["unchanged"] = unchanged
    big = np.ones(args.mib * (1 << 20) // 4, np.float32)
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        pccl.content_hash(big)
        samples.append(time.perf_counter() - t)
    out["hash_gbps"] = big.nbytes / statistics.median(samples) / 1e9
    with open(args.out, "w") as f:
        json.dump(out, f)
    comm.close()
    return 0


def run(n: int, args) -> dict:
    import jax_pccl as pccl

    with pccl.Master() as master, tempfile.TemporaryDirectory() as tmp:
        procs, outs = [], []
        for i in range(n):
            out = os.path.join(tmp, f"peer{i}.json")
            cmd = [sys.executable, SCRIPT, "--worker", "--master", master.address, "--peers", str(n),
                   "--index", str(i), "--mib", str(args.mib), "--iters", str(args.iters), "--out", out]
            procs.append(subprocess.Popen(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu")))
            outs.append(out)
        for p in procs:
            if p.wait(timeout=1800) != 0:
                raise SystemExit(f"a peer failed (exit {p.returncode})")
        reports = [json.load(open(o)) for o in outs]
    size = args.mib * (1 << 20)
    result = {"peers": n, "mib": args.mib}
    for case in ("one", "all_but_one"):
        per_iter = list(zip(*[r[case] for r in reports]))
        stale_s = [max(x["s"] for x in it if x["stale"]) for it in per_iter]
        stale_n = sum(1 for x in per_iter[0] if x["stale"])
        rx_ok = all(x["rx"] == size for it in per_iter for x in it if x["stale"])
        med = statistics.median(stale_s)
        phases = {}
        for k in ("hash", "plan", "fetch", "verify", "finish"):
            phases[k] = statistics.median(x["phases"][k] for it in per_iter for x in it if x["stale"])
        result[case] = {"stale_peers": stale_n, "median_s": med, "stale_phases_s": phases,
                        "gbps_per_stale_peer": size / med / 1e9,
                        "gbps_delivered": stale_n * size / med / 1e9, "rx_is_full_state": rx_ok}
    un = [max(x) for x in zip(*[[u["s"] for u in r["unchanged"]] for r in reports])]
    result["unchanged_median_s"] = statistics.median(un)
    result["unchanged_moved_bytes"] = sum(u["rx"] + u["tx"] for r in reports for u in r["unchanged"])
    result["hash_gbps"] = statistics.median(r["hash_gbps"] for r in reports)
    return result


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--peers", type=int, nargs="+", default=[2, 4])
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--master")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    results = []
    for n in args.peers:
        r = run(n, args)
        results.append(r)
        print(f"N={n}, {args.mib} MiB state, median of {args.iters}:")
        for case, label in (("one", "one stale peer"), ("all_but_one", "N-1 stale peers")):
            c = r[case]
            print(f"  {label:16s}: {c['median_s']:.3f} s  {c['gbps_per_stale_peer']:.2f} GB/s per stale peer, "
                  f"{c['gbps_delivered']:.2f} GB/s delivered ({c['stale_peers']} stale; full state received: "
                  f"{c['rx_is_full_state']})")
            print("      stale peer's phases (median s): " +
                  ", ".join(f"{k} {v:.3f}" for k, v in c["stale_phases_s"].items()))
        print(f"  nothing changed : {r['unchanged_median_s'] * 1e3:.1f} ms (bytes moved: {r['unchanged_moved_bytes']})")
        print(f"  xxh64 hashing   : {r['hash_gbps']:.2f} GB/s single-threaded")
    print(json.dumps({"bench": "shared_state", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
