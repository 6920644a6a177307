"""The documentation site builds with `mkdocs build --strict`, without a
single warning, and its API reference has every public name."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """Builds the site once for this module; returns its directory."""
    out = str(tmp_path_factory.mktemp("site"))
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", out],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert "No module named mkdocs" not in log, "mkdocs is not installed: pip install '.[test]'"
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    warnings = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert not warnings, "mkdocs build printed warnings:\n" + "\n".join(warnings)
    return out


def test_mkdocs_build_strict_is_clean(site):
    assert os.path.isfile(os.path.join(site, "index.html"))


def test_api_reference_documents_every_public_name(site):
    import jax_pccl
    import jax_pccl.diloco

    with open(os.path.join(site, "api", "index.html"), encoding="utf-8") as f:
        page = f.read()
    missing = [f"{module.__name__}.{name}"
               for module in (jax_pccl, jax_pccl.diloco) for name in module.__all__
               if f'id="{module.__name__}.{name}"' not in page]
    assert not missing, ("not in the API reference (a public name without a docstring is "
                         f"left out): {missing}")


def test_readme_links_point_at_files():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "README.md links to no docs page"
    broken = [t for t in local if not os.path.exists(os.path.join(REPO_ROOT, t))]
    assert not broken, f"README.md links to missing files: {broken}"


def test_readme_stays_short():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail into docs/"
