"""Shared builders for the kernel tests: random inputs, random per-head patterns, error measures.

Importing this module selects Triton's CPU interpreter when there is no CUDA. That only works before the
process first imports triton (triton.language builds its own helpers then), so the kernel test modules
import this first; a run where something imported triton earlier skips the interpreter tests and says why.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

# CPU tensors reach the Triton kernels only through the interpreter; with CUDA the gpu tests cover them.
interpreter_only = pytest.mark.skipif(
    not isinstance(tl.sum, InterpretedFunction),
    reason="needs Triton's interpreter: no CUDA, and TRITON_INTERPRET=1 set before triton was first imported "
    "(run tests/kernels first, or export TRITON_INTERPRET=1)",
)


def qkv(b, h, n, d, dtype, device="cpu", seed=0, grad=False):
    generator = torch.Generator(device="cpu").manual_seed(seed)
    tensors = [torch.randn(b, h, n, d, generator=generator).to(device=device, dtype=dtype) for _ in range(3)]
    return [t.requires_grad_(grad) for t in tensors]


def random_block_mask(b, h, n_blocks, density, seed=0, empty_rows=0):
    """Per (batch, head, query block) random kept blocks; the first `empty_rows` query blocks of head 0 keep none."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, n_blocks, n_blocks, generator=generator) < density
    mask[:, :, torch.arange(n_blocks), torch.arange(n_blocks)] |= torch.rand(b, h, n_blocks, generator=generator) < 0.5
    mask[:, 0, :empty_rows] = False
    return mask


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert not torch.isnan(actual).any(), "NaN in the kernel result"
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-12)).item()


def assert_lse_close(actual: torch.Tensor, expected: torch.Tensor, atol=2e-3):
    assert torch.equal(torch.isinf(actual), torch.isinf(expected)), "empty rows differ"
    finite = torch.isfinite(expected)
    assert (actual[finite] - expected[finite]).abs().max().item() < atol


def finite_lse_sum(lse: torch.Tensor) -> torch.Tensor:
    """A loss term through the LSE that ignores empty rows (-inf)."""
    return torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)).sum()


def leaf_copies(tensors, dtype):
    return [t.detach().to(dtype).requires_grad_(True) for t in tensors]
