"""DataParallel under random churn, by hand: peers SIGKILLed and started at
seeded random moments (during a step, a shared-state sync, a join, a quorum
wait: wherever they happen to be) while the others train.

    python tests/stress/elastic_churn.py --seeds 1-20

Per seed: 3 peers (tests/elastic_peer.py, min_peers=2) start together; then
--rounds times, after 0.5-3 s, either one of them is killed (while at least
2 are in the run: if all died, the next peer would start a new run from its
own init) or a new one starts; at the end one more starts if only one lives.
Checks: the survivors end at the same step with the same digest, every step's
digest is the same on every peer that recorded it, and (when it can tell who
took part in every step) the final params equal a replay of the run. Prints
one line per seed and exits 1 if any seed failed.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)

import jax_pccl as pccl  # noqa: E402
from test_elastic import (Peers, assert_finished_identical,  # noqa: E402
                          assert_identical_at_every_step, reference_params)

ARGS = ("--min-peers", "2", "--step-s", "0.01", "--max-steps", "1000000")


def run(seed: int, rounds: int) -> str:
    rng = random.Random(seed)
    with pccl.Master(host="127.0.0.1", port=0) as master:
        peers = Peers(master)
        try:
            for i in range(3):
                peers.start(i, "--connect-min", "3", *ARGS)
            peers.wait_until(lambda: all(peers.progress(i) >= 3 for i in range(3)), "3 peers training")
            events, n = [], 3

            def alive():
                return [i for i, p in peers.procs.items() if p.poll() is None and i not in peers.killed]

            def in_run():  # alive and through init(): they hold the run's state
                return [i for i in alive() if peers.joined(i) is not None]

            for _ in range(rounds):
                time.sleep(rng.uniform(0.5, 3.0))
                # never the last peer of the run: the run's state would die with it
                if rng.random() < 0.5 and len(in_run()) >= 2:
                    victim = rng.choice(alive())
                    peers.kill(victim)
                    events.append(f"kill {victim}")
                else:
                    peers.start(n, *ARGS)
                    events.append(f"start {n}")
                    n += 1
            if len(alive()) < 2:
                peers.start(n, *ARGS)
                events.append(f"start {n}")
            time.sleep(6)
            survivors = alive()
            print(f"seed {seed}: {', '.join(events)}; survivors {survivors}, workdir {peers.dir}", flush=True)
            peers.stop_at(max(peers.progress(i) for i in survivors) + 20)
            peers.join(survivors, timeout=120)
            final = assert_finished_identical(peers, survivors)
            assert_identical_at_every_step(peers, list(peers.procs))
            try:
                expected = reference_params(peers, final["done"])
            except ValueError as exc:
                replay = f"no replay ({exc})"
            else:
                for name, value in expected.items():
                    np.testing.assert_allclose(np.asarray(final["params"][name], np.float32), value,
                                               rtol=1e-4, atol=1e-5, err_msg=name)
                replay = "replay equal"
            retries = sum(peers.final(i).get("retries", 0) for i in survivors)
            return (f"ok: {', '.join(events)}; {len(survivors)} survivors at step {final['done']}, "
                    f"{retries} retries, {replay}")
        finally:
            peers.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-5", help="a range like 1-20")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    first, _, last = args.seeds.partition("-")
    failed = 0
    for seed in range(int(first), int(last or first) + 1):
        try:
            print(f"seed {seed}: {run(seed, args.rounds)}", flush=True)
        except BaseException as exc:  # noqa: BLE001 - pytest.fail raises a BaseException
            failed += 1
            print(f"seed {seed}: FAILED {type(exc).__name__}: {str(exc)[:4000]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
