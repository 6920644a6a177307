"""examples/diloco_train.py end to end, shortened: a master and real peer
processes per mode, one JSON line per mode. The full-length runs and their
numbers are in examples/diloco_results/; this only checks that the example
runs on a clean checkout and that its lines say what they should."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile

import harness

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "diloco_train.py")
STEPS, H, PEERS = 64, 16, 2


def test_the_example_runs_ddp_and_async_and_reports_what_it_measured():
    out = tempfile.mkdtemp(prefix="pccl-example-")
    cmd = [sys.executable, EXAMPLE, "--task", "chars", "--modes", "ddp,async", "--peers", str(PEERS),
           "--steps", str(STEPS), "--inner-steps", str(H), "--out", out, "--timeout", "240"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=harness.peer_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line["mode"]: line for line in map(json.loads, proc.stdout.splitlines())}
    assert sorted(lines) == ["async", "ddp"], proc.stdout
    for line in lines.values():
        assert line["peers_finished"] == PEERS and line["bit_identical"], line
        assert math.isfinite(line["eval_loss"]) and 0 < line["eval_accuracy"] <= 1, line
    ddp, asy = lines["ddp"], lines["async"]
    assert ddp["syncs"] == STEPS and asy["syncs"] == STEPS // H, (ddp["syncs"], asy["syncs"])
    # async sends one pseudo-gradient per H steps where DDP sends one gradient per step
    ratio = ddp["bytes_sent_per_peer"] / asy["bytes_sent_per_peer"]
    assert 0.8 * H < ratio < 1.2 * H, ratio
    with open(os.path.join(out, "diloco_chars.jsonl")) as f:
        saved = [json.loads(line) for line in f]
    assert [s["mode"] for s in saved] == ["ddp", "async"]
    for s in saved:  # the eval curve: STEPS // 16 steps apart, the loss falling
        assert [p["t"] for p in s["curve"]] == list(range(STEPS // 16, STEPS + 1, STEPS // 16)), s["curve"]
        assert s["curve"][-1]["loss"] < s["curve"][0]["loss"], s["curve"]
