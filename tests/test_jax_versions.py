"""The installed jax_pccl on the oldest JAX release of the supported range
(#21): the rest of the suite runs on the newest (the `test`
extra pins it); here a fresh venv per release gets only jax, jaxlib and numpy
from the package index, and the compiled package this suite tested (built
against the oldest jaxlib's FFI headers, pyproject.toml) is put first on its
path. tests/jax_version_smoke.py then runs 2 peers: jitted sum, a bf16 avg
over a pytree, start/wait, a shared-state sync with a 0-d leaf.

XLA accepts FFI handlers of an older API version, never of a newer one: a
build against a newer jaxlib than the oldest of the range fails here.

Releases between the two ends are run by hand (CI time: each costs about
15 s, most of it pip), e.g. JAX_PCCL_MORE_JAX=0.9.2 pytest
tests/test_jax_versions.py."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import jax_pccl

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "jax_version_smoke.py"


def supported_range() -> tuple[str, str]:
    """(oldest, exclusive upper bound) of jax from pyproject.toml's dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"jax\s*[<>=]", d))
    low = re.search(r">=\s*([\d.]+)", spec)
    high = re.search(r"<\s*([\d.]+)", spec)
    assert low and high, f"jax's requirement is not a range: {spec}"
    return low.group(1), high.group(1)


def test_the_runtime_requirement_is_a_range_the_build_headers_open():
    oldest, _ = supported_range()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert f"jaxlib=={oldest}" in build, (
        "the extension must be built against the oldest jaxlib of the range (FFI headers)")


MORE = [v for v in os.environ.get("JAX_PCCL_MORE_JAX", "").split(",") if v]


@pytest.mark.parametrize("release", ["oldest", *MORE])
def test_smoke_on_an_older_jax_release(tmp_path, release):
    version = supported_range()[0] if release == "oldest" else release
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"jax=={version}", f"jaxlib=={version}", "numpy"],
        capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    overlay = tmp_path / "overlay"
    shutil.copytree(Path(jax_pccl.__file__).parent, overlay / "jax_pccl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(overlay), "JAX_PLATFORMS": "cpu",
           "HOME": str(tmp_path)}
    run = subprocess.run([str(python), str(SMOKE)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "smoke passed" in run.stdout, out[-4000:]
    assert out.count(f"jax {version}, jaxlib {version}") == 2, out[-4000:]
