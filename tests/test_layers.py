"""Imports run one way: the workers (handlers/) and the shared leaves (relay/) never import the edge
(receiver/), and relay/ never imports handlers/. That receiver/ imports handlers/ only from its
command line (receiver/cli/) is ruff's rule TID251, set in pyproject.toml."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT

# package -> the packages it must never import, at any depth of its code
UPSTREAM = {"handlers": ("receiver",), "relay": ("receiver", "handlers")}


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports, with its line: at the top, or lazily inside a function."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def test_imports_of_sees_lazy_and_dotted_imports(tmp_path: Path) -> None:
    """A lazy `from a.b import c` and a top-level `import d.e` are both seen, with their lines."""
    source = tmp_path / "example.py"
    source.write_text("import d.e\n\n\ndef f():\n    from a.b import c\n    return c\n")
    assert sorted(imports_of(source)) == [(1, "d.e"), (5, "a.b")]


@pytest.mark.parametrize("package", sorted(UPSTREAM))
def test_a_package_imports_nothing_upstream_of_it(package: str) -> None:
    """handlers/ imports nothing of receiver/; relay/ nothing of receiver/ or handlers/."""
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in imports_of(path)
        if name.split(".")[0] in UPSTREAM[package]
    ]
    assert found == []
