"""Runs examples/readme_first.py exactly as written, for tests/test_elastic.py.

The snippet reads the master's address from JAX_PCCL_MASTER (set here from
--master). What this adds from outside, by wrapping DataParallel.step:
before each step, an optional pause of --step-s and a hold while the run has
reached the step written to --hold-file ({"holding": s} is written once),
so that the test can have peers come and go before the run ends; after each step, a record
{"step": s, "world": w, "digest": d} in --out. The snippet's own output (its
last line: step, loss, state digest) goes to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time

SNIPPET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "examples", "readme_first.py")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hold-file", required=True)
    ap.add_argument("--stop-file", default=None, help="unused: the snippet stops by itself")
    ap.add_argument("--die-file", default=None, help="unused")
    ap.add_argument("--step-s", type=float, default=0.0)
    args = ap.parse_args()
    os.environ["JAX_PCCL_MASTER"] = args.master
    out = open(args.out, "a", buffering=1)

    def hold_at() -> int:
        try:
            with open(args.hold_file) as f:
                return int(f.read())
        except (FileNotFoundError, ValueError):
            return 1 << 30

    import jax_pccl as pccl

    step = pccl.DataParallel.step

    def paced_step(self, batch):
        if args.step_s:
            time.sleep(args.step_s)
        if self.step_count >= hold_at():
            out.write(json.dumps({"holding": self.step_count}) + "\n")
            while self.step_count >= hold_at():
                time.sleep(0.02)
        result = step(self, batch)
        out.write(json.dumps({"step": self.step_count, "world": self.world_size,
                              "digest": self.digest()}) + "\n")
        return result

    pccl.DataParallel.step = paced_step
    sys.argv = [SNIPPET]
    runpy.run_path(SNIPPET, run_name="__main__")


if __name__ == "__main__":
    main()
