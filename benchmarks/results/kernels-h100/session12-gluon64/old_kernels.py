"""Older versions of the Gluon kernel for this folder's A/B scripts, loaded from files that are not kept in the
repository (they are in its history). Write them first, at the repository root, so that they travel to the
device with the working tree:

    mkdir -p old_kernels && for c in 3b50c38 75698a0 a9d622f; do
      git show $c:kernels/block_sparse_attention/gluon_hopper_kernel.py > old_kernels/gluon_hopper_kernel_$c.py
    done

(In session 12 the files sat in this folder; the scripts ran on the trees their docstrings name.)
"""

import importlib.util


def kernel_file(commit: str, folder: str = "old_kernels"):
    """The kernel module of gluon_hopper_kernel.py at `commit`."""
    path = f"{folder}/gluon_hopper_kernel_{commit}.py"
    spec = importlib.util.spec_from_file_location(f"gluon_hopper_kernel_{commit}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
