"""System programs a test needs, installed where CI runs (#22: no skip in CI
hides a test): as root with apt-get and $CI set, a missing program's
package is installed, as CI has nothing the repo does not install itself;
elsewhere the caller skips, saying what to install.

The install runs without a sanitizer's environment: a sanitized suite run
(tests/sanitized_suite.py) preloads ASan into every process it starts, and a
package's maintainer script under ASan hung (gtk-query-immodules-3.0, in
Chromium's dependencies, for over an hour). It runs in a session of its own,
killed whole at its timeout, so nothing of it outlives the test.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

SANITIZER_VARS = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS",
                  "JAX_PCCL_EXPECT_SANITIZER")
APT_TIMEOUT_S = 600


def clean_env() -> dict:
    """This process's environment without a sanitizer's preload and options."""
    return {k: v for k, v in os.environ.items() if k not in SANITIZER_VARS}


def _apt(args: list[str]) -> subprocess.CompletedProcess:
    env = {**clean_env(), "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.Popen(["apt-get", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=APT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # apt-get, dpkg and the scripts it runs
        out, err = proc.communicate()
        err += f"\napt-get {' '.join(args)}: no end within {APT_TIMEOUT_S} s"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def program(name: str, package: str, *other_names: str) -> str | None:
    """The path of `name` (or one of `other_names`); in CI, as root, with
    apt-get, installs `package` first if none is there. None if still missing."""
    def found():
        return next(filter(None, (shutil.which(n) for n in (name, *other_names))), None)
    if found() or not os.environ.get("CI") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found()
    install = ["install", "-y", "-q", "--no-install-recommends", package]
    if _apt(install).returncode != 0:
        _apt(["update", "-q"])
        r = _apt(install)
        assert r.returncode == 0, f"CI could not install {package}: {r.stderr[-2000:]}"
    return found()
