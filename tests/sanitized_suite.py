#!/usr/bin/env python3
"""The whole Python suite against the sanitized extension, by hand (#22):

    python tests/sanitized_suite.py [--sanitizer address|thread] [--build DIR] [pytest args]
                                    [test files: only these]

Builds the extension with the sanitizer (tests/native_builds.py; reused when
--build names an existing build), makes the overlay package, and runs pytest
over every test file in one process with the sanitizer's runtime preloaded
and the overlay first on PYTHONPATH; every peer, master and CLI process the
tests start inherits both and checks that it loaded the sanitized build.
CI runs a rotating sample of this (tests/test_sanitized_python.py); this
runs all of it.

Left out, with the reason:
- test_engine_cpp.py, test_sanitized_python.py: they build and run their own
  sanitized builds (the C++ suites, the sampled files): nothing to add;
- test_jax_versions.py: its venvs of older JAX releases start without the
  preloaded runtime (the test sets their environment), where a sanitized
  extension cannot load.

Exit status: pytest's; a sanitizer report ends the process that made it,
which fails its test, and any report text in the output fails the run too.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import native_builds  # noqa: E402

TESTS = Path(__file__).resolve().parent
LEFT_OUT = {"test_engine_cpp.py", "test_sanitized_python.py", "test_jax_versions.py"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sanitizer", choices=["address", "thread"], default="address")
    ap.add_argument("--build", type=Path, help="build directory (reused if it exists)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -x)")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix=f"sanitized-{a.sanitizer}-"))
    build = a.build or work / "build"
    if not (build / "CMakeCache.txt").exists():
        print(f"building the {a.sanitizer}-sanitized extension in {build}", flush=True)
    native_builds.build(build, a.sanitizer, targets=["_pccl"])
    path = native_builds.overlay(build, work / "overlay")
    env = native_builds.python_env(build, a.sanitizer, path)
    # The sampled CI runs quiet the engine's log; tests here read it (the
    # master's "registered" lines): leave each test its own level.
    env.pop("JAX_PCCL_LOG", None)
    chosen = [str(Path(x).resolve()) for x in a.pytest_args if x.endswith(".py")]
    files = chosen or sorted(str(f) for f in TESTS.glob("test_*.py") if f.name not in LEFT_OUT)
    a.pytest_args = [x for x in a.pytest_args if not x.endswith(".py")]
    print(f"{len(files)} test files under {a.sanitizer} (left out: {', '.join(sorted(LEFT_OUT))})",
          flush=True)
    # Outside the repository: its jax_pccl/ (no _pccl) must not shadow the overlay.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
           str(TESTS.parent), "-c", str(TESTS.parent / "pyproject.toml"), *a.pytest_args, *files]
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    reports = []
    for line in proc.stdout:
        sys.stdout.write(line)
        reports += [r for r in native_builds.REPORTS if r in line]
    rc = proc.wait()
    if reports and rc == 0:
        print(f"sanitizer report(s) in the output: {sorted(set(reports))}")
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
