"""The suite's own build plumbing (tests/native_builds.py, tests/conftest.py):
a niced background build is hurried back to nice 0, with everything it
started, once a test waits for it (on a machine kept busy by other processes
a build at nice 10 starved past its timeout and every C++ suite errored)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import native_builds
from conftest import EarlyBuilds


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _tree(command: list[str], children: int) -> tuple[subprocess.Popen, list[int]]:
    """A process with `children` children of its own, in a session of its own."""
    proc = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 30
    while len(_children(proc.pid)) < children and time.monotonic() < deadline:
        time.sleep(0.02)
    kids = _children(proc.pid)
    assert len(kids) == children, kids
    return proc, kids


def _end(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_renice_tree_reaches_every_child():
    # Raising niceness needs no privilege, so this holds for any user.
    proc, kids = _tree(["sh", "-c", "sleep 60 & sleep 60 & wait"], 2)
    try:
        native_builds.renice_tree(proc.pid, 7)
        assert [os.getpriority(os.PRIO_PROCESS, p) for p in [proc.pid, *kids]] == [7, 7, 7]
    finally:
        _end(proc)


def test_hurry_brings_a_running_build_back_to_nice_0():
    proc, kids = _tree(["nice", "-n", "10", "sh", "-c", "sleep 60 & wait"], 1)
    builds = EarlyBuilds.__new__(EarlyBuilds)  # no builds started: only its bookkeeping
    builds.running, builds.nice = [proc], EarlyBuilds.NICE
    try:
        builds.hurry()
        assert builds.nice == 0  # the commands still to come
        # Lowering niceness needs root (CAP_SYS_NICE); without it they keep 10.
        want = 0 if os.geteuid() == 0 else 10
        assert [os.getpriority(os.PRIO_PROCESS, p) for p in [proc.pid, *kids]] == [want, want]
    finally:
        _end(proc)
