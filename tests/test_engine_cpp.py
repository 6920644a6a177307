"""Runs the C++ engine's own test suites (no Python, no JAX) in the sanitized
builds of tests/native_builds.py.

The suites link the engine alone: ffi/ minus bindings/ and xla/ (and the
Python-free part of xla/) compiles and works without Python. Every suite
runs under AddressSanitizer + UndefinedBehaviorSanitizer, with a short run of
the parser fuzzer (ffi/tests/fuzz_parsers.cc); those with threads of their
own run under ThreadSanitizer too. Any report fails the test. The same builds
carry the whole extension, which tests/test_sanitized_python.py runs the
multi-process Python tests against.
Long fuzzing runs are by hand (docs/security.md).

The ASan build also runs the deterministic simulation of the master
(ffi/tests/sim_master_world.h) from a seed that changes every run (printed;
JAX_PCCL_SIM_SEED fixes it), and checks that it finds the defects it is meant
to find when they are put back on purpose. Long runs are by hand:
`sim_master --events 100000000` in a release build.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

import native_builds

SUITES = ["test_reduce_kernels", "test_wire", "test_engine", "test_handshake", "test_quantization",
          "test_shared_state", "test_shared_state_sync", "test_ring_acceptor", "test_concurrency",
          "test_socket_tuning", "test_link_reset", "test_ring_lanes", "test_ring_kinds", "test_collective_kinds",
          "test_master_claims", "test_state_fetcher",
          "test_ring_solver", "test_link_planning", "test_master_optimize",
          "test_background_planner", "test_background_live",
          "test_completion_executor", "test_staged_leaves"]  # ffi/xla's Python-free part (see CMakeLists.txt)
# Checks each suite must report having passed: a suite that silently stops
# early (or loses a test function) must not pass. The counts run here on
# 2026-12-06, rounded down where a suite's count depends on timing
# (test_concurrency: 177-179). Raise them when adding checks.
MIN_CHECKS = {
    "test_reduce_kernels": 124, "test_wire": 156, "test_engine": 235, "test_handshake": 4315,
    "test_quantization": 391, "test_shared_state": 115, "test_shared_state_sync": 33,
    "test_ring_acceptor": 16, "test_concurrency": 175, "test_socket_tuning": 11, "test_link_reset": 12,
    "test_ring_lanes": 37, "test_ring_kinds": 415, "test_collective_kinds": 75,
    "test_master_claims": 22, "test_state_fetcher": 13,
    "test_completion_executor": 37, "fuzz_parsers": 12,
    "test_ring_solver": 82,  # 83 in a release build (its 16-peer exact case is skipped sanitized)
    "test_link_planning": 128, "test_master_optimize": 1113, "test_background_planner": 12,
    "test_background_live": 6, "test_staged_leaves": 92,
}
# Under TSan, the suites with threads of their own (the others check parsers,
# kernels and codecs on one thread, which ASan covers; CI time is short).
# test_ring_kinds is left to ASan: each of its peers is one thread running
# the lane loop that test_ring_lanes and test_collective_kinds run under TSan.
TSAN_SUITES = ["test_engine", "test_concurrency", "test_ring_acceptor", "test_ring_lanes",
               "test_link_reset",
               "test_collective_kinds",
               "test_shared_state_sync", "test_master_claims", "test_state_fetcher",
               "test_background_planner", "test_background_live", "test_completion_executor",
               "test_staged_leaves"]
FUZZ_SECONDS_PER_PARSER = 2


def _run_suite(build: Path, cmd: list[str], sanitizer: str) -> None:
    env = dict(os.environ, JAX_PCCL_LOG="error", **native_builds.SUITE_ENV[sanitizer])
    result = subprocess.run([str(build / cmd[0]), *cmd[1:]], capture_output=True, text=True,
                            timeout=300, env=env)
    summary = [line for line in result.stdout.splitlines() if " passed, " in line]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert summary and summary[-1].endswith(", 0 failed"), result.stdout[-2000:]
    passed = int(summary[-1].split(": ", 1)[1].split(" passed", 1)[0])
    assert passed >= MIN_CHECKS[cmd[0]], f"{cmd[0]}: only {passed} checks ran (at least {MIN_CHECKS[cmd[0]]})"
    reports = [r for r in native_builds.REPORTS if r in result.stderr]
    assert not reports, result.stderr[-6000:]


@pytest.mark.parametrize("name", SUITES + ["fuzz_parsers"])
def test_engine_cpp_suite_under_asan_ubsan(address_build: Path, name: str):
    cmd = [name]
    if name == "fuzz_parsers":
        cmd = [name, "--seconds", str(FUZZ_SECONDS_PER_PARSER), "--seed", "1"]
    _run_suite(address_build, cmd, "address")


@pytest.mark.parametrize("name", TSAN_SUITES)
def test_engine_cpp_suite_under_tsan(thread_build: Path, name: str):
    _run_suite(thread_build, [name], "thread")


# Simulated events per run: about 0.15 million per CPU second under ASan +
# UBSan (0.9 million in a release build; 2 cores, shared). Simulating
# optimize_topology() made an event about 1.8x dearer (the ring planner's
# exact solves): 0.27 and 1.3 million before. 1.2 million: above the 10^6
# per CI run that #17 asks, with 20 s back for CI's budget (was 2 million).
SIM_EVENTS = 1_200_000
# Each injected defect, the invariant that must catch it, and the options.
# (a4, one HELLO freezing membership, shows as a newcomer never admitted, as
# a vote left open for good (seed 94137244 hit that first), or as an
# optimisation planned before the claim that never ends: seeds 400-700 gave
# 290, 10 and 1 of these)
SIM_DEFECTS = {
    "a4": (("never admitted", "is open since", "never ended"), []),
    "a7": (("re-registered at revision",), []),
    # (a7 without the learned-revision check: the guard lapses, or, when a
    # buggy peer's far-ahead revision is elected first by the master that
    # forgot the run's revision, an honest peer is refused: 4 of 121 seeds)
    "a7-guard": (("revision guard lapsed", "honest peer"), ["--learned-check", "off"]),
    # (b1, a background ring taken for other members, puts a departed peer
    # back in a ring: seeds 11-18 were caught by the link figures' check at
    # events 519-66 226)
    "b1": (("not between two members", "not a member before", "leaves out"), []),
}


def _sim_seed() -> int:
    return int(os.environ.get("JAX_PCCL_SIM_SEED", time.time_ns() % 1_000_000_007))


def _simulate(build: Path, events: int, *args: str) -> tuple[int, str]:
    seed = _sim_seed()
    env = dict(os.environ, JAX_PCCL_LOG="error", **native_builds.SUITE_ENV["address"])
    cmd = [str(build / "sim_master"), "--seed", str(seed), "--events", str(events), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    out = f"seed {seed}: {' '.join(cmd[1:])}\n{result.stdout[-3000:]}{result.stderr[-6000:]}"
    reports = [r for r in native_builds.REPORTS if r in result.stderr]
    assert not reports, out
    return result.returncode, out


def test_master_simulation_holds_every_invariant(address_build: Path):
    rc, out = _simulate(address_build, SIM_EVENTS)
    assert rc == 0 and "no violation" in out, out
    print(out)


@pytest.mark.parametrize("defect", sorted(SIM_DEFECTS))
def test_master_simulation_finds_an_injected_defect(address_build: Path, defect: str):
    expected, extra = SIM_DEFECTS[defect]
    rc, out = _simulate(address_build, 1_000_000, "--inject", defect.split("-")[0], *extra)
    assert rc == 1 and "VIOLATION" in out and any(e in out for e in expected), out
    # The printed replay command reproduces the same violation exactly.
    replay = out.split("replay: sim_master ")[1].split("\n")[0].split()
    env = dict(os.environ, JAX_PCCL_LOG="error", **native_builds.SUITE_ENV["address"])
    again = subprocess.run([str(address_build / "sim_master"), *replay], capture_output=True,
                           text=True, timeout=300, env=env)
    violation = [line for line in out.splitlines() if line.startswith("VIOLATION")]
    assert violation and violation[0] in again.stdout, (out, again.stdout)
