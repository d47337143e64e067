"""The one-way rules of docs/architecture.md, checked on the source: ``utils/`` never imports
``models/``, and neither the code nor the benchmarks import the tests."""
import ast
import os

import pytest

from conftest import REPO


def _modules(folder: str):
    for root, _, names in os.walk(os.path.join(REPO, folder)):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def imported_modules(path: str):
    """Every module ``path`` imports (absolute names), at any depth (functions too)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # ``from models import s3d`` imports models.s3d
                yield node.lineno, f"{node.module}.{alias.name}"


def _violations(folders, forbidden):
    found = []
    for folder in folders:
        for path in _modules(folder):
            for line, name in imported_modules(path):
                if name.split(".")[0] in forbidden:
                    found.append(f"{os.path.relpath(path, REPO)}:{line} imports {name}")
    return found


def test_utils_never_imports_models():
    assert _violations(["utils"], {"models"}) == []


def test_code_and_benchmarks_never_import_the_tests():
    test_modules = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(REPO, "tests"))
                    if n.endswith(".py")} | {"tests"}
    assert _violations(["utils", "models", "benchmarks"], test_modules) == []


@pytest.mark.parametrize("source,expected", [
    ("from models.s3d import ExtractS3D\n", ["models.s3d", "models.s3d.ExtractS3D"]),
    ("def f():\n    import models.s3d.network as n\n", ["models.s3d.network"]),
    ("from models import build_extractor\n", ["models", "models.build_extractor"]),
    ("from . import x\n", []),
])
def test_the_import_walker_sees_every_form(tmp_path, source, expected):
    # the check above is only as good as this walker: top-level, nested and from-imports
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [name for _, name in imported_modules(str(path))] == expected
