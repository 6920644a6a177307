"""Builds the C++ engine alone (no Python, no JAX) and runs its own test suite.

This proves the layering rule: ffi/ minus bindings/ and xla/ compiles and works
without Python. Needs cmake, ninja and a C++17 compiler (the test extras
install cmake and ninja).

The suite runs twice: in a plain build, and in an AddressSanitizer +
UndefinedBehaviorSanitizer build (-DJAX_PCCL_SANITIZE=address), where any
report fails the test. Both include a short run of the parser fuzzer
(ffi/tests/fuzz_parsers.cc); long fuzzing runs and ThreadSanitizer are by hand
(docs/security.md).

Both also run the deterministic simulation of the master
(ffi/tests/sim_master_world.h) from a seed that changes every run (printed;
JAX_PCCL_SIM_SEED fixes it), and check that it finds the defects it is meant
to find when they are put back on purpose. Long runs are by hand:
`sim_master --events 100000000`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


SUITES = ["test_reduce_kernels", "test_wire", "test_engine", "test_handshake", "test_quantization",
          "test_shared_state", "test_shared_state_sync", "test_ring_acceptor", "test_concurrency",
          "test_socket_tuning", "test_ring_lanes", "test_master_claims", "test_state_fetcher",
          "test_completion_executor"]  # ffi/xla's Python-free part (see CMakeLists.txt)
# Checks each suite must report having passed: a suite that silently stops
# early (or loses a test function) must not pass. The counts run here on
# 2026-12-06, rounded down where a suite's count depends on timing
# (test_concurrency: 177-179). Raise them when adding checks.
MIN_CHECKS = {
    "test_reduce_kernels": 124, "test_wire": 156, "test_engine": 235, "test_handshake": 4315,
    "test_quantization": 391, "test_shared_state": 115, "test_shared_state_sync": 33,
    "test_ring_acceptor": 16, "test_concurrency": 175, "test_socket_tuning": 11,
    "test_ring_lanes": 37, "test_master_claims": 22, "test_state_fetcher": 13,
    "test_completion_executor": 37, "fuzz_parsers": 10,
}
FUZZ_SECONDS_PER_PARSER = {"plain": 1, "address": 2}
# A sanitizer report ends the process with a non-zero status (-fno-sanitize-recover);
# these catch one that somehow did not.
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:strict_string_checks=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def _build(build: Path, *options: str) -> Path:
    configure = [
        _tool("cmake"), "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
        "-DJAX_PCCL_BUILD_PYTHON=OFF", "-DJAX_PCCL_BUILD_TESTS=ON", *options,
    ]
    subprocess.run(configure, check=True, capture_output=True, timeout=300)
    result = subprocess.run([_tool("cmake"), "--build", str(build)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build


@pytest.fixture(scope="module")
def engine_build(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("engine-build"))


@pytest.fixture(scope="module")
def asan_build(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("engine-asan-build"), "-DJAX_PCCL_SANITIZE=address")


def _run_suite(build: Path, cmd: list[str], sanitized: bool) -> None:
    env = dict(os.environ, JAX_PCCL_LOG="error", **(SANITIZER_ENV if sanitized else {}))
    result = subprocess.run([str(build / cmd[0]), *cmd[1:]], capture_output=True, text=True,
                            timeout=300, env=env)
    summary = [line for line in result.stdout.splitlines() if " passed, " in line]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert summary and summary[-1].endswith(", 0 failed"), result.stdout[-2000:]
    passed = int(summary[-1].split(": ", 1)[1].split(" passed", 1)[0])
    assert passed >= MIN_CHECKS[cmd[0]], f"{cmd[0]}: only {passed} checks ran (at least {MIN_CHECKS[cmd[0]]})"
    reports = [r for r in SANITIZER_REPORTS if r in result.stderr]
    assert not reports, result.stderr[-6000:]


def _fuzz_cmd(kind: str) -> list[str]:
    return ["fuzz_parsers", "--seconds", str(FUZZ_SECONDS_PER_PARSER[kind]), "--seed", "1"]


@pytest.mark.parametrize("name", SUITES + ["fuzz_parsers"])
def test_engine_cpp_suite(engine_build: Path, name: str):
    _run_suite(engine_build, _fuzz_cmd("plain") if name == "fuzz_parsers" else [name], False)


@pytest.mark.parametrize("name", SUITES + ["fuzz_parsers"])
def test_engine_cpp_suite_under_asan_ubsan(asan_build: Path, name: str):
    _run_suite(asan_build, _fuzz_cmd("address") if name == "fuzz_parsers" else [name], True)


# Simulated events per run: about 1.3 million a second in the plain build,
# 0.27 million under ASan + UBSan (2 cores, shared).
SIM_EVENTS = {"plain": 10_000_000, "address": 2_000_000}
# Each injected defect, the invariant that must catch it, and the options.
# (a4, one HELLO freezing membership, shows either as a newcomer never
# admitted or as a vote left open for good: seed 94137244 hit the second first)
SIM_DEFECTS = {
    "a4": (("never admitted", "is open since"), []),
    "a7": (("re-registered at revision",), []),
    "a7-guard": (("revision guard lapsed",), ["--learned-check", "off"]),
}


def _sim_seed() -> int:
    return int(os.environ.get("JAX_PCCL_SIM_SEED", time.time_ns() % 1_000_000_007))


def _simulate(build: Path, events: int, sanitized: bool, *args: str) -> tuple[int, str]:
    seed = _sim_seed()
    env = dict(os.environ, JAX_PCCL_LOG="error", **(SANITIZER_ENV if sanitized else {}))
    cmd = [str(build / "sim_master"), "--seed", str(seed), "--events", str(events), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    out = f"seed {seed}: {' '.join(cmd[1:])}\n{result.stdout[-3000:]}{result.stderr[-6000:]}"
    reports = [r for r in SANITIZER_REPORTS if r in result.stderr]
    assert not reports, out
    return result.returncode, out


@pytest.mark.parametrize("kind", ["plain", "address"])
def test_master_simulation_holds_every_invariant(request, kind: str):
    build = request.getfixturevalue("engine_build" if kind == "plain" else "asan_build")
    rc, out = _simulate(build, SIM_EVENTS[kind], kind == "address")
    assert rc == 0 and "no violation" in out, out
    print(out)


@pytest.mark.parametrize("defect", sorted(SIM_DEFECTS))
def test_master_simulation_finds_an_injected_defect(engine_build: Path, defect: str):
    expected, extra = SIM_DEFECTS[defect]
    rc, out = _simulate(engine_build, 1_000_000, False, "--inject", defect.split("-")[0], *extra)
    assert rc == 1 and "VIOLATION" in out and any(e in out for e in expected), out
    # The printed replay command reproduces the same violation exactly.
    replay = out.split("replay: sim_master ")[1].split("\n")[0].split()
    again = subprocess.run([str(engine_build / "sim_master"), *replay], capture_output=True,
                           text=True, timeout=300)
    violation = [line for line in out.splitlines() if line.startswith("VIOLATION")]
    assert violation and violation[0] in again.stdout, (out, again.stdout)
