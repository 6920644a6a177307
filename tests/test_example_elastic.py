"""examples/elastic_train.py end to end, shortened: configured through
JAX_PCCL_MASTER alone, the first peer waits (and says so) until a second one
joins (--min-peers 2); both end at the same step with the same state."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

import harness
import jax_pccl as pccl

EXAMPLE = os.path.join(harness.REPO_ROOT, "examples", "elastic_train.py")
STEPS = 200
WAITING = "1 peer in group 0, min_peers=2 needed"


def test_the_example_waits_for_a_second_peer_and_both_end_with_the_same_state():
    workdir = tempfile.mkdtemp(prefix="pccl-example-elastic-")
    errs = [os.path.join(workdir, f"peer{i}.err") for i in range(2)]
    with pccl.Master(host="127.0.0.1", port=0) as master:
        env = dict(harness.peer_env(), JAX_PCCL_MASTER=master.address)
        procs = []
        try:
            for i in range(2):
                with open(errs[i], "w") as err:
                    procs.append(subprocess.Popen([sys.executable, EXAMPLE, "--steps", str(STEPS)],
                                                  stdout=subprocess.PIPE, stderr=err, text=True,
                                                  env=env, cwd=workdir))
                deadline = time.monotonic() + 90
                while i == 0 and WAITING not in open(errs[0]).read():
                    if time.monotonic() > deadline or procs[0].poll() is not None:
                        pytest.fail(f"the first peer did not say that it waits: {open(errs[0]).read()[-2000:]}")
                    time.sleep(0.1)
            outs = [p.communicate(timeout=120)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
    for p, err in zip(procs, errs):
        assert p.returncode == 0, open(err).read()[-3000:]
    lines = [out.strip().splitlines() for out in outs]
    pattern = r"step +(\d+)  loss (\S+)  peers (\d+)  state ([0-9a-f]{16})"
    last = [re.fullmatch(pattern, ls[-1]) for ls in lines]
    assert all(last), lines
    assert [m[1] for m in last] == [str(STEPS)] * 2 and [m[3] for m in last] == ["2", "2"], lines
    assert last[0][4] == last[1][4], lines
    assert float(last[0][2]) < 0.2, lines  # it learns (the loss starts near 1.4)
