"""Import a script of benchmarks/ (not a package) as a module, for the tests of the benchmark harnesses."""

import importlib
import pathlib
import sys

BENCHMARKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as module `name`. Its folder goes on sys.path, as when the script runs, so that
    the scripts can import each other."""
    if str(BENCHMARKS_DIR) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS_DIR))
    return importlib.import_module(name)
