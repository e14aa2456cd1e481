"""The layout rules of tests/ (tests/README.md) that pytest does not enforce itself: test modules
live in the subdirectories that mirror the package, never import each other (what several share
lives in a support module), and no two share a file name (pytest imports each by its name alone)."""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path


def _imported(tree: ast.AST) -> set[str]:
    """Top-level names of the modules a file imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def layout_errors(tests: Path) -> list[str]:
    """One line per test module at the top of ``tests``, per file that imports a test module, and
    per file name held twice."""
    modules = sorted(p for p in tests.rglob("*.py") if "__pycache__" not in p.parts)
    counts = Counter(p.name for p in modules if p.name.startswith("test_"))
    errors = [f"{name}: {counts[name]} test modules of this name" for name in sorted(counts) if counts[name] > 1]
    errors += [f"{p.name}: a test module outside the subdirectories (unit/<package>, cli, gpu, native, ...)"
               for p in modules if p.parent == tests and p.name.startswith("test_")]
    for path in modules:
        bad = sorted(n for n in _imported(ast.parse(path.read_bytes(), str(path))) if n.startswith("test_"))
        errors += [f"{path.relative_to(tests)} imports test module {name}" for name in bad]
    return errors
