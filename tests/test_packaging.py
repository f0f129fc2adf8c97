"""The user's layout maps onto one import package, and nothing imports top-level `kernels`/`pipelines`."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"plugin": "swiftdit", "kernels": "swiftdit.kernels", "pipelines": "swiftdit.pipelines"}


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert config["package-dir"] == {v: k for k, v in PACKAGE_DIRS.items()}
    found = set()
    for folder, package in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found == listed, f"pyproject packages differ from the folders: missing {found - listed}, extra {listed - found}"


def test_no_top_level_kernels_or_pipelines_imports():
    pattern = re.compile(r"^\s*(from|import)\s+(kernels|pipelines)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for folder in ("plugin", "kernels", "pipelines", "tests", "benchmarks")
                 if (ROOT / folder).exists() for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
