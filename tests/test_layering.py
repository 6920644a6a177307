"""The engine's layers (#20): one static library per ffi/<layer>/, linked
along the arrows that CMakeLists.txt names (PCCL_USES_*), and a configure-time
check that every #include follows them. Here: the tree as it is configures,
and a deliberately added back edge (state/ including peer/, the edge the
shared-state sync had until it moved to peer/) stops the configuration with a
message naming the file and the line."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def configure(src: Path, build: Path) -> subprocess.CompletedProcess:
    cmake = shutil.which("cmake", path=os.path.dirname(sys.executable)) or "cmake"
    return subprocess.run([cmake, "-S", str(src), "-B", str(build), "-DJAX_PCCL_BUILD_PYTHON=OFF"],
                          capture_output=True, text=True, timeout=300)


def copy_of_the_sources(dest: Path) -> Path:
    for name in ("ffi", "cmake"):
        shutil.copytree(REPO / name, dest / name)
    shutil.copy(REPO / "CMakeLists.txt", dest)
    return dest


def test_the_tree_follows_its_arrows(tmp_path):
    r = configure(copy_of_the_sources(tmp_path / "src"), tmp_path / "build")
    assert r.returncode == 0, r.stderr[-3000:]


def test_a_back_edge_stops_the_configuration(tmp_path):
    src = copy_of_the_sources(tmp_path / "src")
    header = src / "ffi" / "state" / "state_server.h"
    text = header.read_text()
    anchor = '#include "common/canceller.h"\n'
    assert anchor in text
    header.write_text(text.replace(anchor, anchor + '#include "peer/communicator.h"\n'))
    r = configure(src, tmp_path / "build")
    assert r.returncode != 0
    assert "Layering: an include against the arrows" in r.stderr, r.stderr[-3000:]
    assert ('ffi/state/state_server.h: #include "peer/communicator.h" '
            "(state may use: common protocol transport)") in " ".join(r.stderr.split()), r.stderr[-3000:]
