"""Fixtures for the multi-process tests: a master in this process, peers in subprocesses.

The master runs on a C++ thread inside the pytest process; peers are separate
Python processes started by tests/harness.py (one launch per scenario, shared
by all tests of a module through a module-scoped fixture that calls
harness.run_scenario).
"""
from __future__ import annotations

import concurrent.futures
import faulthandler
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import native_builds  # noqa: E402  (after the path insert above)

# Watchdog for the pytest process itself (e.g. a Master that never closes):
# dump every thread's stack and exit rather than hang. Peers have their own
# hard timeouts in harness.run_peers, well below this.
TEST_WATCHDOG_S = float(os.environ.get("JAX_PCCL_TEST_WATCHDOG_S", 360))


# The first test that needs a sanitized build waits for it (EarlyBuilds
# below; bounded by the build's own timeouts in native_builds.build): minutes
# on 2 busy cores. The watchdog outlasts those timeouts (configure + build),
# so that a slow build ends in its own clear error, not a stack dump.
BUILD_WATCHDOG_S = native_builds.BUILD_TIMEOUT_S * 4 // 3 + 120
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


def _builds_of(item) -> set:
    """The sanitized builds a test needs: its fixtures, or (for a test that
    asks for one by name, tests/test_sanitized_python.py) its `sanitizer`."""
    names = BUILD_FIXTURES & set(getattr(item, "fixturenames", ()))
    sanitizer = getattr(getattr(item, "callspec", None), "params", {}).get("sanitizer")
    if f"{sanitizer}_build" in BUILD_FIXTURES:
        names.add(f"{sanitizer}_build")
    return names


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    builds = _builds_of(item)
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


def pytest_collection_modifyitems(config, items):
    # JAX_PCCL_TEST_SHARD=K/N keeps every N-th test from the K-th (0-based),
    # in collection order: tests/test_sanitized_python.py runs half of a heavy
    # file per CI run this way.
    shard = os.environ.get("JAX_PCCL_TEST_SHARD")
    if not shard:
        return
    k, n = (int(x) for x in shard.split("/"))
    if not 0 <= k < n:
        raise pytest.UsageError(f"JAX_PCCL_TEST_SHARD={shard}: need 0 <= K < N")
    config.hook.pytest_deselected(items=[it for i, it in enumerate(items) if i % n != k])
    items[:] = items[k::n]


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
def _build_targets(name: str) -> tuple[str, list[str]]:
    from test_engine_cpp import SUITES, TSAN_SUITES
    if name == "address_build":
        # What the suites, the simulator, the fuzzer and the sanitized Python
        # runs use: not the benchmarks (scale_bench, ring_solver_bench).
        return "address", ["_pccl", *SUITES, "sim_master", "fuzz_parsers"]
    return "thread", ["_pccl", *TSAN_SUITES]


class EarlyBuilds:
    """The sanitized builds a session will need, started in one background
    thread as soon as the tests are collected, at nice 10: they take about
    100 s of both cores, and the tests before the first one that needs them
    leave much of the CPU idle (peers waiting for timeouts, processes
    starting), which the build takes instead of adding its time to the run.
    A niced build gives way to the tests whenever they want the CPU; once a
    test waits for it, nothing else runs meanwhile that it should give way
    to, and it is hurried back to nice 0 (on a machine kept busy by other
    processes, a niced build starved past its timeout)."""

    NICE = 10
    HURRY_EVERY_S = 5  # renices again what the build started since

    def __init__(self, factory, names: list[str]):
        self.running: list = []
        self.futures = {}
        self.cancelled = False
        self.nice = self.NICE
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="early-build")
        for name in names:  # one after the other: both at once would only compete
            sanitizer, targets = _build_targets(name)
            dest = factory.mktemp(f"{sanitizer}-build")
            self.futures[name] = self.pool.submit(self._build, dest, sanitizer, targets)

    def _build(self, dest, sanitizer, targets):
        if self.cancelled:
            raise RuntimeError("the session ended before this build started")
        return native_builds.build(dest, sanitizer, targets, nice=lambda: self.nice,
                                   running=self.running)

    def hurry(self) -> None:
        """From now on every build command runs at nice 0, and those running
        are reniced to it, with everything they started."""
        self.nice = 0
        for proc in list(self.running):
            native_builds.renice_tree(proc.pid, 0)

    def wait(self, name: str, timeout: float):
        """The build's result, hurried while a test waits for it."""
        future = self.futures[name]
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            self.hurry()
            concurrent.futures.wait([future], timeout=self.HURRY_EVERY_S)
        return future.result(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Ends a build still running (a session cut short) and joins the thread."""
        self.cancelled = True
        for proc in list(self.running):
            proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)


_early_builds: EarlyBuilds | None = None


def pytest_collection_finish(session):
    global _early_builds
    wanted = set().union(*(_builds_of(item) for item in session.items))
    if wanted and not session.config.option.collectonly:
        _early_builds = EarlyBuilds(session.config._tmp_path_factory, sorted(wanted))


def pytest_sessionfinish(session):
    if _early_builds is not None:
        _early_builds.close()


def _sanitized_build(name: str, tmp_path_factory):
    if _early_builds is not None and name in _early_builds.futures:
        return _early_builds.wait(name, timeout=BUILD_WATCHDOG_S - 60)
    sanitizer, targets = _build_targets(name)
    return native_builds.build(tmp_path_factory.mktemp(f"{sanitizer}-build"), sanitizer, targets)


@pytest.fixture(scope="session")
def address_build(tmp_path_factory):
    return _sanitized_build("address_build", tmp_path_factory)


@pytest.fixture(scope="session")
def thread_build(tmp_path_factory):
    return _sanitized_build("thread_build", tmp_path_factory)
