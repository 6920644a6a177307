"""The reference tables of the docs match the code: the keys of
comm.stats() and master.status() (docs/logging.md) and the subcommands and
options of `jax-pccl` (docs/cli.md)."""
from __future__ import annotations

import os
import re

from docs_snippets import REPO_ROOT


def _section(page: str, heading: str) -> str:
    """The text of a page from `heading` to the next heading of its level or above."""
    with open(os.path.join(REPO_ROOT, "docs", page), encoding="utf-8") as f:
        text = f.read()
    start = text.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    rest = text[start + len(heading):]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[:end.start()] if end else rest


def _table_keys(section: str) -> set:
    return set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))


def test_stats_and_status_keys_are_documented(pccl, master):
    with pccl.Communicator(master.address) as comm:
        comm.connect(timeout=30)
        stats = comm.stats()
    assert _table_keys(_section("logging.md", "## Peer counters")) == set(stats)
    assert _table_keys(_section("logging.md", "## Master status")) == set(master.status())


def test_every_cli_subcommand_and_option_is_documented():
    import argparse

    from jax_pccl.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in subparsers.choices.items():
        try:
            section = _section("cli.md", f"## `jax-pccl {name}`")
        except ValueError:
            missing.append(f"a section '## `jax-pccl {name}`'")
            continue
        for action in sub._actions:
            longest = max(action.option_strings, key=len, default=None)
            if longest and longest != "--help" and f"`{longest}" not in section:
                missing.append(f"{name} {longest}")
    assert not missing, f"docs/cli.md does not document: {missing}"
