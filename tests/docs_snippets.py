"""The ```python blocks of README.md and docs/**/*.md, with the marker that
says how tests/test_docs_snippets.py checks each one.

A marker is an HTML comment on the last non-blank line before the block:

    <!-- snippet: peers=3 -->        run as 3 peer processes (JAX_PCCL_MASTER set)
    <!-- snippet: file=PATH -->      the block's text must equal the file PATH
    <!-- snippet: excerpt -->        a fragment: compiled, never run
    (no marker)                      run once, alone

Anything else in a marker is an error, and so is a marker that no python
block follows: a typo must not turn a check off.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*snippet:(.*?)-->\s*$")
KNOWN = {"peers", "file", "excerpt", "timeout"}


@dataclass
class Snippet:
    path: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    code: str
    options: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)  # malformed markers

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def mode(self) -> str:
        if "file" in self.options:
            return "file"
        if "excerpt" in self.options:
            return "excerpt"
        return "peers" if "peers" in self.options else "run"


def doc_files() -> list[str]:
    docs = sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "**", "*.md"), recursive=True))
    return [os.path.join(REPO_ROOT, "README.md"), *docs]


def _parse_marker(text: str, where: str) -> tuple[dict, list]:
    options, problems = {}, []
    for word in text.split():
        key, _, value = word.partition("=")
        if key not in KNOWN:
            problems.append(f"{where}: unknown snippet option {word!r} (known: {sorted(KNOWN)})")
        elif key == "excerpt":
            options[key] = True
        elif not value:
            problems.append(f"{where}: snippet option {key!r} needs a value")
        else:
            options[key] = value
    if "peers" in options and not options["peers"].isdigit():
        problems.append(f"{where}: peers={options['peers']!r} is not a number")
    if len({"peers", "file", "excerpt"} & options.keys()) > 1:
        problems.append(f"{where}: peers, file and excerpt exclude each other")
    return options, problems


def extract(path: str) -> list[Snippet]:
    """Every ```python block of one markdown file, with its marker."""
    rel = os.path.relpath(path, REPO_ROOT)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    snippets: list[Snippet] = []
    pending = None  # (options, problems, line) of a marker not yet used
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        if marker:
            if pending is not None:
                snippets.append(_orphan(rel, pending))
            pending = (*_parse_marker(marker.group(1), f"{rel}:{i + 1}"), i + 1)
            i += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            if line.strip() and pending is not None:  # text between marker and block
                snippets.append(_orphan(rel, pending))
                pending = None
            i += 1
            continue
        indent, ticks, lang = fence.groups()
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(ticks)
                                      and lines[j].strip().strip(ticks[0]) == ""):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if lang == "python":
            options, problems = ({}, []) if pending is None else pending[:2]
            snippets.append(Snippet(rel, i + 1, "\n".join(body) + "\n", options, list(problems)))
        elif pending is not None:
            snippets.append(_orphan(rel, pending, f"is followed by a {lang or 'plain'} block"))
        pending = None
        i = j + 1
    if pending is not None:
        snippets.append(_orphan(rel, pending))
    return snippets


def _orphan(rel: str, pending: tuple, why: str = "is not followed by a python block") -> Snippet:
    options, problems, line = pending
    return Snippet(rel, line, "", options, [*problems, f"{rel}:{line}: snippet marker {why}"])


def all_snippets() -> list[Snippet]:
    return [s for path in doc_files() for s in extract(path)]
