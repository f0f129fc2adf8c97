"""Import a script of benchmarks/ (not a package) as a module, for the tests of the benchmark harnesses."""

import importlib.util
import pathlib
import sys

BENCHMARKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as module `name`; registered in sys.modules, where dataclasses look it up."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
