"""The multi-process Python tests, against the whole extension built with a
sanitizer (tests/native_builds.py): the XLA FFI handlers, the bound waits,
the communicator registry and the bindings run only inside Python, so this is
where their memory errors, undefined behaviour and data races show.

Each test file below runs in its own pytest process with the sanitizer's
runtime preloaded and the sanitized jax_pccl first on PYTHONPATH; the peers it
starts inherit both, and every process checks that it loaded the sanitized
extension (tests/conftest.py, tests/peer_scenarios.py). A sanitizer report
ends the process that made it, which fails its test.

The split, for CI time (about 20 minutes in all on 2 cores):
- every run: under ASan + UBSan, start/wait, the handlers' failure paths and
  the errors (every FFI entry point and the bindings' error translation);
  under TSan, start/wait, concurrent collectives and ordered effects (the most
  threads at once);
- one more half file per run, rotating over the heavier ones
  (continuations, peer deaths, shared state) under each sanitizer in turn:
  twelve picks, each half the tests of its file (every other one in
  collection order, JAX_PCCL_TEST_SHARD in tests/conftest.py): a whole
  heavy file took 34-120 s under a sanitizer, too much of CI's 20 minutes
  for one run. The pick is printed and derived from a seed that changes
  every run; JAX_PCCL_SANITIZED_SEED fixes it.
The rest of the suite runs against the release build only.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import native_builds

TESTS = Path(__file__).resolve().parent

EVERY_RUN = {
    "address": ["test_all_reduce_async.py", "test_xla_handler_edges.py", "test_errors.py"],
    "thread": ["test_all_reduce_async.py", "test_all_reduce_concurrent.py",
               "test_effect_tokens.py"],
}
ROTATING = {
    "address": ["test_xla_continuations.py", "test_fault_tolerance.py", "test_shared_state.py"],
    "thread": ["test_xla_continuations.py", "test_fault_tolerance.py", "test_shared_state.py"],
}
SEED = int(os.environ.get("JAX_PCCL_SANITIZED_SEED", int(time.time()) // 60))
HALVES = 2
ROTATION = [(s, name, half) for s in ROTATING for name in ROTATING[s] for half in range(HALVES)]
PICKED = ROTATION[SEED % len(ROTATION)]
CASES = [(s, name, None) for s in EVERY_RUN for name in EVERY_RUN[s]] + [PICKED]


@pytest.mark.parametrize("sanitizer,name,half", CASES)
def test_python_tests_under_sanitizer(request, tmp_path, sanitizer: str, name: str, half):
    build = request.getfixturevalue(f"{sanitizer}_build")
    path = native_builds.overlay(build, tmp_path / "overlay")
    env = native_builds.python_env(build, sanitizer, path)
    if half is not None:
        env["JAX_PCCL_TEST_SHARD"] = f"{half}/{HALVES}"
        print(f"rotating pick under {sanitizer}: {name}, half {half} of {HALVES} "
              f"(JAX_PCCL_SANITIZED_SEED={SEED})")
    # Run outside the repository: its jax_pccl/ (no _pccl) must not shadow the overlay.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(TESTS.parent), "-c", str(TESTS.parent / "pyproject.toml"), str(TESTS / name)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=330)
    out = f"JAX_PCCL_SANITIZED_SEED={SEED}\n" + result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 0, out
    assert " passed" in result.stdout.splitlines()[-1], out
    reports = [r for r in native_builds.REPORTS if r in result.stdout + result.stderr]
    assert not reports, out
