"""The one walker of the checkout's imports, shared by the structure and packaging tests: every
module a file imports (absolute names), at any depth (inside functions too)."""
import ast
import os
from typing import Iterator, Tuple

from conftest import REPO


def python_files(*paths: str) -> Iterator[str]:
    """Every ``.py`` file under ``paths`` (files or folders, relative to the checkout)."""
    for path in paths:
        full = os.path.join(REPO, path)
        if os.path.isfile(full):
            yield full
        for folder, dirs, names in os.walk(full):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            yield from (os.path.join(folder, n) for n in sorted(names) if n.endswith(".py"))


def imported_modules(path: str) -> Iterator[Tuple[int, str]]:
    """(line, module) for every absolute import in ``path``; ``from a import b`` yields both
    ``a`` and ``a.b`` (b may be a module)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
