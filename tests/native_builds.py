"""Sanitized builds of the native code, for the test suite.

One build per sanitizer holds the whole extension (engine, XLA FFI handlers,
bindings: the layers we ship) and the engine's own C++ suites:

- "address": AddressSanitizer + UndefinedBehaviorSanitizer, every report fatal;
- "thread": ThreadSanitizer.

The C++ suites run straight from the build (tests/test_engine_cpp.py). The
Python tests run against the sanitized extension through an overlay package
(a copy of jax_pccl/ with the sanitized _pccl) put first on PYTHONPATH, with
the sanitizer's runtime preloaded into the interpreter, which is not
instrumented itself (tests/test_sanitized_python.py). The engine target has
no Python include path or library in any build, so an engine file that
needed Python would not compile in either.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A sanitizer report ends the process with a non-zero status; these catch one
# that somehow did not.
REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
           "WARNING: ThreadSanitizer", "SUMMARY: AddressSanitizer", "SUMMARY: ThreadSanitizer",
           "SUMMARY: UndefinedBehaviorSanitizer")

# Options for the C++ suites (their own processes, so leaks are checked too).
SUITE_ENV = {
    "address": {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:strict_string_checks=1",
                "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
    "thread": {"TSAN_OPTIONS": "halt_on_error=1 second_deadlock_stack=1"},
}

# Options inside Python. No leak check: CPython and jaxlib keep memory to the
# end by design. ThreadSanitizer ignores memory accesses made by libraries
# that are not instrumented (CPython, jaxlib); what XLA orders between our
# handlers is told to it by ffi/xla/xla_order.h.
PYTHON_ENV = {
    "address": {"ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",
                "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
    "thread": {"TSAN_OPTIONS": "halt_on_error=1 second_deadlock_stack=1 "
                               "ignore_noninstrumented_modules=1"},
}

RUNTIME = {"address": "libasan.so", "thread": "libtsan.so"}


def tool(name: str) -> str:
    # Prefer the tool installed next to this interpreter (the test extras).
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        import pytest  # peers import this module too: keep pytest out of them
        pytest.fail(f"{name} not found: install the test extras (pip install '.[test]')")
    return found


def project_version() -> str:
    """pyproject.toml's version (what pip's builds compile into the module)."""
    import tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def renice_tree(pid: int, niceness: int) -> None:
    """Sets `niceness` on pid and every process under it, best effort: one
    may end meanwhile, and lowering it needs CAP_SYS_NICE (root, as here and
    in CI); without that they keep theirs. Children started after this
    inherit it from their (reniced) parent."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            os.setpriority(os.PRIO_PROCESS, p, niceness)
        except OSError:
            pass
        todo.extend(children.get(p, []))


def _run(command: list[str], timeout: float, nice, running: list | None):
    """subprocess.run's (returncode, stdout, stderr), at `nice`; the process
    is put in `running` while it runs, so that another thread can kill it.
    The niceness comes from coreutils' nice, not a preexec_fn: that would
    make Python fork the (multithreaded, JAX-loaded) test process and run
    Python code in the child, which JAX warns may deadlock. `nice` may be a
    function: it is asked when the command starts."""
    if callable(nice):
        nice = nice()
    if nice and shutil.which("nice"):
        command = ["nice", "-n", str(nice), *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if running is not None:
        running.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{command[0]}: no end within {timeout} s\n{out[-4000:]}{err[-4000:]}")
    finally:
        if running is not None:
            running.remove(proc)
    return proc.returncode, out, err


# A build's bound: the ASan build takes about 80 s of both cores idle and
# 145 s beside two busy loops; a loaded run (#22) with more work beside it
# took past 900 s. Generous: it only stops a build that hangs.
BUILD_TIMEOUT_S = 1800


def build(dest: Path, sanitizer: str, targets: list[str] | None = None, nice=0,
          running: list | None = None) -> Path:
    """Configures and builds into dest (only `targets` if given); returns dest.
    `nice` and `running`: see _run (the suite builds in the background,
    tests/conftest.py)."""
    configure = [
        tool("cmake"), "-S", str(ROOT), "-B", str(dest), "-G", "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}", f"-DPython_EXECUTABLE={sys.executable}",
        "-DJAX_PCCL_BUILD_PYTHON=ON", "-DJAX_PCCL_BUILD_TESTS=ON",
        f"-DJAX_PCCL_SANITIZE={sanitizer}", f"-DJAX_PCCL_VERSION={project_version()}",
    ]
    rc, out, err = _run(configure, BUILD_TIMEOUT_S // 3, nice, running)
    assert rc == 0, out[-4000:] + err[-4000:]
    command = [tool("cmake"), "--build", str(dest)]
    if targets:
        command += ["--target", *targets]
    rc, out, err = _run(command, BUILD_TIMEOUT_S, nice, running)
    assert rc == 0, out[-4000:] + err[-4000:]
    return dest


def _compiler(dest: Path) -> str:
    for line in (dest / "CMakeCache.txt").read_text().splitlines():
        if line.startswith("CMAKE_CXX_COMPILER:"):
            return line.split("=", 1)[1]
    raise AssertionError(f"no CMAKE_CXX_COMPILER in {dest / 'CMakeCache.txt'}")


def _library(dest: Path, name: str) -> str:
    path = subprocess.run([_compiler(dest), f"-print-file-name={name}"], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()
    assert os.path.isabs(path) and os.path.exists(path), f"{name} not found: {path!r}"
    return path


def overlay(dest: Path, into: Path) -> Path:
    """A jax_pccl package from this source tree with the sanitized _pccl of
    `dest`, under `into`; returns the directory to put on PYTHONPATH."""
    package = into / "jax_pccl"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(ROOT / "jax_pccl", package,
                    ignore=shutil.ignore_patterns("__pycache__", "_pccl*.so"))
    modules = list(dest.glob("_pccl*.so"))
    assert len(modules) == 1, modules
    shutil.copy2(modules[0], package / modules[0].name)
    return into


def python_env(dest: Path, sanitizer: str, path: Path) -> dict:
    """The environment for a Python process (and the peers it starts, which
    inherit it) that runs jax_pccl from `path` under the sanitizer."""
    env = dict(os.environ, **PYTHON_ENV[sanitizer])
    # The runtime must come first; libstdc++ too, or the runtime cannot wrap
    # __cxa_throw (the interpreter does not link libstdc++ itself).
    env["LD_PRELOAD"] = f"{_library(dest, RUNTIME[sanitizer])} {_library(dest, 'libstdc++.so')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    env["JAX_PCCL_EXPECT_SANITIZER"] = sanitizer
    env["JAX_PCCL_LOG"] = "error"
    return env


def check_sanitizer(module) -> None:
    """Under JAX_PCCL_EXPECT_SANITIZER, fails unless `module` (jax_pccl._pccl)
    is that sanitized build: a sanitized run that loaded the release extension
    would prove nothing."""
    expected = os.environ.get("JAX_PCCL_EXPECT_SANITIZER")
    if expected and getattr(module, "SANITIZER", None) != expected:
        raise RuntimeError(f"expected the {expected}-sanitized extension, loaded "
                           f"{module.__file__} (SANITIZER={getattr(module, 'SANITIZER', None)!r})")
