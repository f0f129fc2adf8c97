"""Token permutation: the Triton row gather against index_select, in both memory layouts, with gradients."""

import pytest
import torch
from kernel_cases import interpreter_only

from swiftdit.kernels.token_permutation import inverse_permutation, permute_tokens


def layouts(b, h, n, d, device="cpu"):
    generator = torch.Generator().manual_seed(0)
    processor = torch.randn(b, n, h, d, generator=generator).to(device, torch.float16).transpose(1, 2)
    return {"(B, N, H, D) storage": processor, "contiguous": processor.contiguous(),
            "other strides": torch.randn(b, h, d, n, generator=generator).to(device, torch.float16).transpose(2, 3)}


def check_against_reference(b, h, n, d, device="cpu"):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1)).to(device)
    for name, x in layouts(b, h, n, d, device).items():
        x = x.detach().requires_grad_(True)
        out = permute_tokens(x, order, backend="triton")
        assert torch.equal(out, x.detach().index_select(2, order)), name
        if name != "other strides":
            assert out.stride() == x.stride(), f"{name}: the layout is kept"
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(device, out.dtype)
        (grad,) = torch.autograd.grad((out * weight).sum(), x)
        assert torch.equal(grad, permute_tokens(weight, inverse_permutation(order), backend="reference")), name


@interpreter_only
@pytest.mark.parametrize("b,h,n,d", [(2, 3, 37, 16), (1, 2, 130, 40)])
def test_row_gather_matches_index_select(b, h, n, d):
    check_against_reference(b, h, n, d)


def test_reference_path_and_bad_arguments():
    x = torch.randn(1, 2, 5, 4)
    order = torch.tensor([4, 0, 3, 1, 2])
    assert torch.equal(permute_tokens(x, order), x[:, :, order])
    assert torch.equal(permute_tokens(permute_tokens(x, order), inverse_permutation(order)), x)
    with pytest.raises(ValueError, match="backend must be one of"):
        permute_tokens(x, order, backend="cuda")
    with pytest.raises(ValueError, match="order must be a permutation of the 5 tokens"):
        permute_tokens(x, order[:3])


@pytest.mark.gpu
def test_gpu_row_gather_at_wan_shape():
    check_against_reference(1, 12, 75600, 128, device="cuda")
