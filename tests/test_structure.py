"""The one-way rules of docs/architecture.md, checked on the source.

- ``utils/`` never imports ``models/``; neither the code nor the benchmarks import the tests.
- Inside ``utils/`` the subpackages form layers, each importing only those below it (and the
  top-level modules: config, errors, files, console, device, networks)::

      inputs, video  <  records  <  outputs  <  run

  so decoding knows nothing of outputs, the records nothing of the stores, and only ``run``
  sees everything.
- No file outside tests/ is over 500 lines.
"""
import os

import pytest

from conftest import REPO
from source_imports import imported_modules, python_files

# each subpackage of utils/ -> the subpackages it may import
LAYERS = {
    "inputs": set(),
    "video": set(),
    "records": {"inputs"},
    "outputs": {"inputs", "records"},
    "run": {"inputs", "video", "records", "outputs"},
}
TOP_LEVEL = {"config", "errors", "files", "console", "device", "networks"}
# kept so that `python -m utils.features` / `utils.manifests` still work: each imports its target
ALIASES = {"features.py": "outputs", "manifests.py": "records"}


def _violations(folders, forbidden):
    found = []
    for path in python_files(*folders):
        for line, name in imported_modules(path):
            if name.split(".")[0] in forbidden:
                found.append(f"{os.path.relpath(path, REPO)}:{line} imports {name}")
    return found


def test_utils_never_imports_models():
    assert _violations(["utils"], {"models"}) == []


def test_code_and_benchmarks_never_import_the_tests():
    test_modules = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(REPO, "tests"))
                    if n.endswith(".py")} | {"tests"}
    assert _violations(["utils", "models", "benchmarks", "main.py"], test_modules) == []


def layer_violations(utils_folder: str):
    """Imports between utils' subpackages that go against LAYERS, and modules outside them."""
    found = []
    for path in python_files(utils_folder):
        rel = os.path.relpath(path, utils_folder).split(os.sep)
        if len(rel) == 1:
            if rel[0] not in ALIASES and rel[0] != "__init__.py" and rel[0][:-3] not in TOP_LEVEL:
                found.append(f"utils/{rel[0]} is not in a subpackage")
            package = None
        else:
            package = rel[0]
            if package not in LAYERS:
                found.append(f"utils/{package}/ is not a known layer")
                continue
        for line, name in imported_modules(path):
            parts = name.split(".")
            if parts[0] != "utils" or len(parts) < 2 or parts[1] not in LAYERS:
                continue
            if package is None:
                if ALIASES.get(rel[0]) != parts[1]:
                    found.append(f"utils/{'/'.join(rel)}:{line} (top level) imports {name}")
            elif parts[1] != package and parts[1] not in LAYERS[package]:
                found.append(f"utils/{'/'.join(rel)}:{line} imports {name}")
    return found


def test_utils_subpackages_import_only_the_layers_below():
    assert layer_violations(os.path.join(REPO, "utils")) == []


def test_the_layer_check_sees_a_break(tmp_path):
    # video importing outputs, and a stray module, are both caught
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "decode.py").write_text(
        "def f():\n    from utils.outputs.naming import output_names\n")
    (tmp_path / "helpers.py").write_text("import os\n")
    assert layer_violations(str(tmp_path)) == [
        "utils/helpers.py is not in a subpackage",
        "utils/video/decode.py:2 imports utils.outputs.naming",
        "utils/video/decode.py:2 imports utils.outputs.naming.output_names"]


def test_no_file_outside_the_tests_is_over_500_lines():
    long = []
    for path in python_files("main.py", "utils", "models", "benchmarks", "sample"):
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > 500:
            long.append(f"{os.path.relpath(path, REPO)}: {n} lines")
    assert long == []


@pytest.mark.parametrize("source,expected", [
    ("from models.s3d import ExtractS3D\n", ["models.s3d", "models.s3d.ExtractS3D"]),
    ("def f():\n    import models.s3d.network as n\n", ["models.s3d.network"]),
    ("from models import build_extractor\n", ["models", "models.build_extractor"]),
    ("from . import x\n", []),
])
def test_the_import_walker_sees_every_form(tmp_path, source, expected):
    # the checks above are only as good as this walker: top-level, nested and from-imports
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [name for _, name in imported_modules(str(path))] == expected
