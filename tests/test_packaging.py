"""The dependency list is declared once (pyproject.toml); the conda file mirrors it; every
package the code and the tests import is declared there."""
import importlib.metadata
import os
import re
import sys

import yaml

from conftest import REPO
from source_imports import imported_modules, python_files

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra brings tomli
    import tomli as tomllib


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_conda_env_mirrors_pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["dependencies"]
    with open(os.path.join(REPO, "conda_env_torch_zoo.yml")) as f:
        env = yaml.safe_load(f)
    pip_reqs = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip_reqs) == sorted(declared)
    assert {_name(r) for r in declared} == {"torch", "torchvision", "hydra-core", "omegaconf",
                                            "av", "numpy", "tqdm", "h5py"}


def test_layout_and_license():
    for path in ("main.py", "configs", "models", "utils", "sample", "tests", "README.md",
                 "LICENSE", "conda_env_torch_zoo.yml", "sample/make_sample.py",
                 "sample/sample.mp4", "sample/sample_video_paths.txt",
                 "models/s3d/kinetics400_labels.txt"):
        assert os.path.exists(os.path.join(REPO, path)), path
    with open(os.path.join(REPO, "LICENSE")) as f:
        assert f.readline().strip() == "MIT License"
    with open(os.path.join(REPO, "models/s3d/kinetics400_labels.txt")) as f:
        labels = [line.strip() for line in f if line.strip()]
    assert len(labels) == 400 and labels[0] == "abseiling" and labels == sorted(labels)


# What a user runs needs the runtime dependencies only; the tests, the benchmark and the
# sample's maker may also use the test extra.
RUNTIME_CODE = ["main.py", "utils", "models"]
TEST_CODE = ["tests", "benchmarks", "sample"]
# Import names that differ from their distribution's name (others: the same, "_" as "-").
DISTRIBUTION = {"yaml": "pyyaml", "hydra": "hydra-core", "imageio_ffmpeg": "imageio-ffmpeg",
                "_pytest": "pytest"}
# tomllib is in the standard library from Python 3.11; on 3.10 the tests import tomli instead.
STDLIB = set(sys.stdlib_module_names) | {"tomllib"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(module: str) -> str:
    return _normalise(DISTRIBUTION.get(module, module))


def _local_modules():
    """The checkout's own top-level modules (pytest's pythonpath: the root and tests/; a
    benchmark script's own folder, benchmarks/)."""
    local = set()
    for folder in (REPO, os.path.join(REPO, "tests"), os.path.join(REPO, "benchmarks")):
        for name in os.listdir(folder):
            if name.endswith(".py"):
                local.add(name[:-3])
            elif os.path.isdir(os.path.join(folder, name)) and not name.startswith("."):
                local.add(name)
    return local


# Not packages: the HowTo100M port's own module, which only the golden-making script imports,
# from a snapshot whose path it is given (tests/golden/make_s3d_howto100m_golden.py).
NOT_PACKAGES = {"s3dg"}


def _third_party(paths):
    """{top-level module: files importing it} for the imports that are not the standard
    library's nor the checkout's own."""
    local, found = _local_modules(), {}
    for path in python_files(*paths):
        for module in {name.split('.')[0] for _, name in imported_modules(path)}:
            if module not in STDLIB and module not in local and module not in NOT_PACKAGES:
                found.setdefault(module, set()).add(os.path.relpath(path, REPO))
    return found


def _declared():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    runtime = {_normalise(_name(r)) for r in project["dependencies"]}
    test = {_normalise(_name(r)) for r in project["optional-dependencies"]["test"]}
    return runtime, test, project["optional-dependencies"]["test"]


def test_every_imported_package_is_declared():
    runtime, test, _ = _declared()
    code, tests = _third_party(RUNTIME_CODE), _third_party(TEST_CODE)
    assert {"torch", "av", "hydra", "numpy"} <= set(code)  # the walk sees the imports
    assert {"pytest", "yaml", "imageio_ffmpeg", "torchvision"} <= set(tests)
    missing = {m: sorted(files) for m, files in code.items() if _distribution(m) not in runtime}
    assert not missing, f"imported by the code but not in [project] dependencies: {missing}"
    missing = {m: sorted(files) for m, files in tests.items()
               if _distribution(m) not in runtime | test}
    assert not missing, f"imported by tests or tools but declared nowhere: {missing}"
    # the mapping from import names agrees with the installed packages' own metadata
    installed = importlib.metadata.packages_distributions()
    for module in set(code) | set(tests):
        if module in installed:
            assert _distribution(module) in {_normalise(d) for d in installed[module]}, module


def test_tomli_only_where_tomllib_is_missing():
    _, test, requirements = _declared()
    assert "tomli" in test
    tomli = next(r for r in requirements if _normalise(_name(r)) == "tomli")
    marker = re.sub(r"\s+", "", tomli).replace("'", '"')
    assert marker.endswith(';python_version<"3.11"'), tomli
