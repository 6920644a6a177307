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

# Watchdog for the pytest process itself (e.g. a Master that never closes):
# dump every thread's stack and exit rather than hang. Peers have their own
# hard timeouts in harness.run_peers, well below this.
TEST_WATCHDOG_S = 360


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    faulthandler.dump_traceback_later(TEST_WATCHDOG_S, exit=True)
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
