"""tests/provision.py against a stand-in apt-get on PATH: what CI installs
for a missing program, in an environment without a sanitizer's preload, and
nothing of a hung install left behind."""
from __future__ import annotations

import os
import stat
import time

import pytest

import provision


def fake_apt(bin_dir, body: str) -> None:
    apt = bin_dir / "apt-get"
    apt.write_text("#!/bin/sh\n" + body)
    apt.chmod(apt.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def ci_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("CI", "true")
    if os.geteuid() != 0:
        pytest.skip("provision installs as root only (CI runs as root)")
    return bin_dir


def test_ci_installs_a_missing_program_without_the_sanitizer_environment(ci_path, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent/libasan.so")
    monkeypatch.setenv("ASAN_OPTIONS", "halt_on_error=1")
    log = ci_path / "log"
    # The first install fails (stale lists), update, then it works: the program appears.
    fake_apt(ci_path, f"""echo "$@ LD_PRELOAD=${{LD_PRELOAD:-none}} ASAN=${{ASAN_OPTIONS:-none}}" >> {log}
case "$1" in
  update) touch {ci_path}/updated ;;
  install) [ -e {ci_path}/updated ] || exit 100
           printf '#!/bin/sh\\n' > {ci_path}/pccl-test-tool; chmod +x {ci_path}/pccl-test-tool ;;
esac
""")
    assert provision.program("pccl-test-tool", "pccl-test-package") == str(ci_path / "pccl-test-tool")
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["install", "update", "install"]
    assert all("pccl-test-package" in line for line in lines if line.startswith("install"))
    assert all("LD_PRELOAD=none ASAN=none" in line for line in lines), lines


def test_outside_ci_nothing_is_installed(ci_path, monkeypatch):
    monkeypatch.delenv("CI")
    fake_apt(ci_path, f"touch {ci_path}/called\n")
    assert provision.program("pccl-test-tool", "pccl-test-package") is None
    assert not (ci_path / "called").exists()


def test_a_hung_install_is_killed_whole_and_fails_clearly(ci_path, monkeypatch):
    monkeypatch.setattr(provision, "APT_TIMEOUT_S", 1)
    pids = ci_path / "pids"
    # apt-get starts a child (as dpkg runs a maintainer script) and both hang.
    fake_apt(ci_path, f"sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait\n")
    with pytest.raises(AssertionError, match="(?s)could not install pccl-test-package.*no end within 1 s"):
        provision.program("pccl-test-tool", "pccl-test-package")
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 6  # install, update, install: each killed, its child with it
    time.sleep(0.2)
    alive = [p for p in started if os.path.exists(f"/proc/{p}") and
             open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert alive == [], alive
