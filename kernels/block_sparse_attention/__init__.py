"""Block-sparse attention over visual tokens, with always-kept text columns.

`block_sparse_attention` is the entry point every method calls; on CPU (and wherever no Triton kernel
is available) it runs the plain-PyTorch reference in `naive.py`.
"""

from .naive import block_sparse_attention_reference

block_sparse_attention = block_sparse_attention_reference

__all__ = ["block_sparse_attention", "block_sparse_attention_reference"]
