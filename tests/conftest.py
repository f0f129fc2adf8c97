import os
import sys

import pytest
import torch

# Without CUDA the Triton kernels are tested in Triton's CPU interpreter, which must be selected before
# anything in the process imports triton; conftest is imported before every test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Shared builders (tiny_models, tiny_pipelines, recording) are importable from every test folder.
sys.path.insert(0, os.path.dirname(__file__))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
