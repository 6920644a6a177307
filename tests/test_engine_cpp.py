"""Builds the C++ engine alone (no Python, no JAX) and runs its own test suite.

This proves the layering rule: ffi/ minus bindings/ and xla/ compiles and works
without Python. Needs cmake, ninja and a C++17 compiler (the test extras
install cmake and ninja).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    # Prefer the tool installed next to this interpreter (the test extras).
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the test extras (pip install '.[test]')")
    return found


@pytest.fixture(scope="module")
def engine_build(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("engine-build")
    configure = [
        _tool("cmake"), "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
        "-DJAX_PCCL_BUILD_PYTHON=OFF", "-DJAX_PCCL_BUILD_TESTS=ON",
    ]
    subprocess.run(configure, check=True, capture_output=True, timeout=300)
    result = subprocess.run([_tool("cmake"), "--build", str(build)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build


@pytest.mark.parametrize("name", ["test_reduce_kernels", "test_wire", "test_engine", "test_handshake",
                                  "test_quantization", "test_shared_state", "test_ring_acceptor"])
def test_engine_cpp_suite(engine_build: Path, name: str):
    env = dict(os.environ, JAX_PCCL_LOG="error")
    result = subprocess.run([str(engine_build / name)], capture_output=True, text=True,
                            timeout=180, env=env)
    summary = [line for line in result.stdout.splitlines() if " passed, " in line]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert summary and summary[-1].endswith(", 0 failed"), result.stdout[-2000:]
