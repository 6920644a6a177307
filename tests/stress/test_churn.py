"""Short churn run in the default suite (peer kills, freezes, joins, at
least one master kill and restart, shared-state syncs); the 10-minute run is
by hand: `python tests/stress/churn.py --seconds 600`."""

import json
import os
import subprocess
import sys
from pathlib import Path

CHURN = str(Path(__file__).parent / "churn.py")


def test_short_churn_run_keeps_every_invariant():
    seconds = float(os.environ.get("JAX_PCCL_CHURN_SECONDS", "45"))
    result = subprocess.run([sys.executable, CHURN, "--seconds", str(seconds), "--seed", "7"],
                            capture_output=True, text=True, timeout=seconds + 120)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout[:result.stdout.rindex("}") + 1])
    assert figures["collectives_completed"] > 0 and figures["syncs_completed"] > 0, figures
    assert figures["master_restarts"] >= 1, figures
