"""Attention kernels. Each op lives in its own folder: `naive.py` is the plain-PyTorch reference of the
maths, the Triton version sits beside it, and the folder's `__init__` picks Triton on CUDA and the
reference elsewhere."""
