"""Every ```python block of README.md and docs/**/*.md runs as written.

How each block is checked follows the marker before it (tests/docs_snippets.py,
docs/development.md "The docs"):
- no marker: run once in a fresh interpreter, from a directory outside the
  repository, with the peers' environment (harness.peer_env); exit 0;
- `peers=N`: run as N processes at once, JAX_PCCL_MASTER set to a master
  started by this test; every one exits 0;
- `file=PATH`: the block's text equals PATH's;
- `excerpt`: compiled only.
Every block must compile. A failing block fails here; nothing is skipped.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from docs_snippets import REPO_ROOT, Snippet, all_snippets
from harness import _kill_group, peer_env

SNIPPETS = all_snippets()
RUN_TIMEOUT_S = 120.0  # per block (all its peers together); `timeout=S` in the marker overrides
AFTER_CRASH_S = 20.0  # how long the other peers may go on once one has failed
TAIL = 3000


def test_the_docs_have_snippets():
    assert len(SNIPPETS) >= 10, [s.id for s in SNIPPETS]
    assert any(s.path == "README.md" and s.mode == "file" for s in SNIPPETS), \
        "README.md's first example must be included from its file"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet(snippet: Snippet, request):
    assert not snippet.problems, "\n".join(snippet.problems)
    compile(snippet.code, snippet.id, "exec")  # raises SyntaxError naming file:line
    if snippet.mode == "file":
        target = os.path.join(REPO_ROOT, snippet.options["file"])
        assert os.path.isfile(target), f"{snippet.id}: {snippet.options['file']} does not exist"
        with open(target, encoding="utf-8") as f:
            expected = f.read()
        assert snippet.code == expected, (
            f"{snippet.id}: the block differs from {snippet.options['file']}; copy the file's "
            "text into the block (or fix the file)")
    elif snippet.mode == "peers":
        master = request.getfixturevalue("master")
        _run(snippet, int(snippet.options["peers"]), {"JAX_PCCL_MASTER": master.address})
    elif snippet.mode == "run":
        _run(snippet, 1, {})


def _run(snippet: Snippet, n: int, extra_env: dict) -> None:
    """Runs the block as n processes; fails with their output unless all exit 0 in time."""
    timeout = float(snippet.options.get("timeout", RUN_TIMEOUT_S))
    workdir = tempfile.mkdtemp(prefix="pccl-snippet-")  # outside the repository
    script = os.path.join(workdir, "snippet.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(snippet.code)
    env = peer_env()
    env.pop("JAX_PCCL_MASTER", None)
    env.update(extra_env)
    logs, procs = [], []
    try:
        for i in range(n):
            logs.append(open(os.path.join(workdir, f"peer{i}.log"), "w+b"))
            procs.append(subprocess.Popen([sys.executable, script], cwd=workdir, env=env,
                                          stdout=logs[i], stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + timeout
        problem = None
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if any(p.poll() not in (None, 0) for p in procs):
                deadline = min(deadline, now + AFTER_CRASH_S)
            if now > deadline:
                still = [i for i, p in enumerate(procs) if p.poll() is None]
                problem = f"processes {still} still running after the bound (killed)"
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            _kill_group(p)
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read().decode(errors="replace"))
        log.close()
    if problem or failed:
        report = [f"{snippet.id} ({snippet.mode}, {n} process(es)): "
                  f"{problem or ''} exit statuses {[p.returncode for p in procs]}"]
        report += [f"--- process {i} (tail) ---\n{out[-TAIL:]}" for i, out in enumerate(outputs)]
        pytest.fail("\n".join(report), pytrace=False)
    shutil.rmtree(workdir, ignore_errors=True)
