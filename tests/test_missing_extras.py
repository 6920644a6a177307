"""Missing optional packages are named with the command that installs them
(no bare ModuleNotFoundError, no stray temp directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO_ROOT, "examples", "diloco_train.py")


def _run_without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter where importing `modules` fails as
    if they were not installed (sys.modules[name] = None)."""
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())


def test_diloco_without_optax_names_the_extra():
    result = _run_without(["optax"], "import jax_pccl.diloco")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: jax_pccl.diloco needs optax"), last
    assert "pip install 'jax_pccl[diloco]'" in last, last


def test_digits_example_without_sklearn_says_what_to_install():
    before = set(os.listdir(tempfile.gettempdir()))
    code = (f"import runpy; sys.argv = [{EXAMPLE!r}, '--task', 'digits', '--peers', '2'];"
            f"runpy.run_path({EXAMPLE!r}, run_name='__main__')")
    result = _run_without(["sklearn"], code)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        "diloco_train.py: scikit-learn not installed: pip install '.[examples]' "
        "(or pip install scikit-learn)"), result.stderr
    created = {d for d in set(os.listdir(tempfile.gettempdir())) - before if d.startswith("diloco-")}
    assert not created, created


def test_equinox_example_without_equinox_says_what_to_install():
    example = os.path.join(REPO_ROOT, "examples", "equinox_train.py")
    code = (f"import runpy; sys.argv = [{example!r}, '--master', '127.0.0.1:1'];"
            f"runpy.run_path({example!r}, run_name='__main__')")
    result = _run_without(["equinox"], code)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        "equinox_train.py: equinox not installed: pip install '.[examples]' "
        "(or pip install equinox optax)"), result.stderr


def test_data_parallel_without_optax_imports():
    """DataParallel takes any object with init/update: jax_pccl imports, and
    exports it, without optax installed."""
    result = _run_without(["optax"], "import jax_pccl; print(jax_pccl.DataParallel.__name__)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "DataParallel"
