"""examples/equinox_train.py, shortened: an Equinox model trained by 2 peer
processes over a local master, data-parallel and DiLoCo. Both peers must
finish, hold the same params (one digest) and end with a lower eval loss than
they started from. Figures of full-length runs are in the example's docstring."""
from __future__ import annotations

import json
import os
import sys

import pytest

import harness

EXAMPLE = os.path.join(harness.REPO_ROOT, "examples", "equinox_train.py")
PEERS, STEPS = 2, 60
MODES = {"dp": [], "diloco": ["--inner-steps", "15"]}  # diloco: 4 outer steps


@pytest.mark.parametrize("mode", sorted(MODES))
def test_peers_train_the_equinox_model_to_the_same_params(pccl, mode):
    with pccl.Master(host="127.0.0.1", port=0) as master:
        cmd = [sys.executable, EXAMPLE, "--master", master.address, "--mode", mode,
               "--steps", str(STEPS), "--min-peers", str(PEERS), "--eval-every", "20", *MODES[mode]]
        runs = harness.run_commands([cmd] * PEERS, timeout=150)
    for i, (returncode, output) in enumerate(runs):
        assert returncode == 0, f"peer {i} exited with {returncode}:\n{output[-3000:]}"
    results = [json.loads(output.strip().splitlines()[-1]) for _, output in runs]
    for r in results:
        assert r["mode"] == mode and r["steps"] == STEPS and r["peers"] == PEERS, r
        assert r["eval_loss"] < 0.8 * r["eval_loss_start"], r  # it learned something
    assert len({r["params_digest"] for r in results}) == 1, results
