"""Fixtures for the multi-process tests: a master in this process, peers in subprocesses.

The master runs on a C++ thread inside the pytest process; peers are separate
Python processes started by tests/harness.py (one launch per scenario, shared
by all tests of a module through a module-scoped fixture that calls
harness.run_scenario).
"""
from __future__ import annotations

import faulthandler
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import native_builds  # noqa: E402  (after the path insert above)

# Watchdog for the pytest process itself (e.g. a Master that never closes):
# dump every thread's stack and exit rather than hang. Peers have their own
# hard timeouts in harness.run_peers, well below this.
TEST_WATCHDOG_S = float(os.environ.get("JAX_PCCL_TEST_WATCHDOG_S", 360))


# The first test that needs a sanitized build builds it (bounded by the
# build's own timeouts in native_builds.build): minutes on 2 busy cores.
BUILD_WATCHDOG_S = 1500
BUILD_FIXTURES = {"address_build", "thread_build"}


_watchdog_file = None


def pytest_configure(config):
    # The dump must reach the terminal or CI log: pytest captures fd 2 while a
    # test runs, and a process that exits takes the captured text with it (a
    # watchdog exit printed nothing at all). Write to pytest's saved copy of
    # the real stderr.
    global _watchdog_file
    capman = config.pluginmanager.getplugin("capturemanager")
    err = getattr(getattr(capman, "_global_capturing", None), "err", None)
    saved = getattr(err, "targetfd_save", None)
    _watchdog_file = os.fdopen(os.dup(saved), "w") if isinstance(saved, int) else sys.stderr


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    builds = BUILD_FIXTURES & set(getattr(item, "fixturenames", ()))
    seconds = BUILD_WATCHDOG_S if builds else TEST_WATCHDOG_S
    faulthandler.dump_traceback_later(seconds, exit=True, file=_watchdog_file)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def pccl():
    try:
        import jax_pccl
    except Exception as exc:  # an import failure is a failure, not a skip
        pytest.fail(f"jax_pccl is not importable: {type(exc).__name__}: {exc}")
    return jax_pccl


@pytest.fixture
def master(pccl):
    """A fresh master on 127.0.0.1 with a free port, closed after the test.

    Scenario launches use harness.run_scenario, which starts its own master
    per launch so that no membership state leaks from one launch to the next.
    """
    m = pccl.Master(host="127.0.0.1", port=0)
    try:
        yield m
    finally:
        m.close()


def pytest_sessionstart(session):
    # A run told to use a sanitized extension (tests/test_sanitized_python.py)
    # stops at once if it loaded another one.
    if os.environ.get("JAX_PCCL_EXPECT_SANITIZER"):
        from jax_pccl import _pccl
        try:
            native_builds.check_sanitizer(_pccl)
        except RuntimeError as exc:
            pytest.exit(str(exc), returncode=3)


# The sanitized builds (tests/native_builds.py), one per session: the C++
# suites and the sanitized Python runs share them.
@pytest.fixture(scope="session")
def address_build(tmp_path_factory):
    from test_engine_cpp import SUITES
    # What the suites, the simulator, the fuzzer and the sanitized Python runs
    # use: not the benchmarks (scale_bench, ring_solver_bench), to save CI time.
    return native_builds.build(tmp_path_factory.mktemp("asan-build"), "address",
                               targets=["_pccl", *SUITES, "sim_master", "fuzz_parsers"])


@pytest.fixture(scope="session")
def thread_build(tmp_path_factory):
    from test_engine_cpp import TSAN_SUITES
    return native_builds.build(tmp_path_factory.mktemp("tsan-build"), "thread",
                               targets=["_pccl", *TSAN_SUITES])
