"""Token permutation: the Triton row gather against index_select, in both memory layouts, with gradients."""

import pytest
import torch
from kernel_cases import interpreter_only

from swiftdit.kernels.token_permutation import inverse_permutation, permute_tokens


def layouts(b, h, n, d, device="cpu"):
    generator = torch.Generator().manual_seed(0)
    processor = torch.randn(b, n, h, d, generator=generator).to(device, torch.float16).transpose(1, 2)
    longer = torch.randn(b, h, n + 5, d, generator=generator).to(device, torch.float16)
    return {"(B, N, H, D) storage": processor, "contiguous": processor.contiguous(),
            "other strides": torch.randn(b, h, d, n, generator=generator).to(device, torch.float16).transpose(2, 3),
            "slice of a longer sequence": longer[:, :, :n]}


KEEPS_LAYOUT = ("(B, N, H, D) storage", "contiguous")


def check_against_reference(b, h, n, d, device="cpu"):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1)).to(device)
    for name, x in layouts(b, h, n, d, device).items():
        x = x.detach().requires_grad_(True)
        out = permute_tokens(x, order, backend="triton")
        assert torch.equal(out, x.detach().index_select(2, order)), name
        if name in KEEPS_LAYOUT:
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


def check_fused_scale_and_addend(b, h, n, d, device="cpu"):
    """The gather with a per-(token, head) scale and an addend, in float32 rounded once, for every layout of x
    and of the addend, against the reference arithmetic."""
    generator = torch.Generator().manual_seed(3)
    order = torch.randperm(n, generator=generator).to(device)
    scale = torch.rand(b, h, n, generator=generator).to(device)
    for name, x in layouts(b, h, n, d, device).items():
        for addend_name, addend in layouts(b, h, n, d, device).items():
            out = permute_tokens(x, order, backend="triton", row_scale=scale, addend=addend)
            expected = (scale[..., None] * x.index_select(2, order).float() + addend.float()).to(x.dtype)
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-3, msg=f"{name} + {addend_name}")
        only_scale = permute_tokens(x, order, backend="triton", row_scale=scale)
        torch.testing.assert_close(only_scale, (scale[..., None] * x.index_select(2, order).float()).to(x.dtype),
                                   rtol=0, atol=1e-3, msg=name)
        only_addend = permute_tokens(x, order, backend="triton", addend=addend)
        torch.testing.assert_close(only_addend, (x.index_select(2, order).float() + addend.float()).to(x.dtype),
                                   rtol=0, atol=1e-3, msg=name)
        assert only_addend.stride() == x.stride() or name not in KEEPS_LAYOUT, f"{name}: the layout is kept"


@interpreter_only
@pytest.mark.parametrize("b,h,n,d", [(2, 3, 37, 16), (1, 2, 130, 40)])
def test_fused_scale_and_addend(b, h, n, d):
    check_fused_scale_and_addend(b, h, n, d)


def test_fused_reference_gradients_and_bad_arguments():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 5, 4, generator=generator, requires_grad=True)
    scale, addend = torch.rand(1, 2, 5, generator=generator), torch.randn(1, 2, 5, 4, generator=generator)
    order = torch.tensor([4, 0, 3, 1, 2])
    out = permute_tokens(x, order, row_scale=scale, addend=addend)
    assert torch.allclose(out, scale[..., None] * x[:, :, order] + addend)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(grad, permute_tokens(scale[..., None].expand(1, 2, 5, 4), inverse_permutation(order)))
    with pytest.raises(ValueError, match=r"row_scale must have shape \(1, 2, 5\)"):
        permute_tokens(x, order, row_scale=scale[:, :, :3])
    with pytest.raises(ValueError, match=r"addend must have x's shape \(1, 2, 5, 4\)"):
        permute_tokens(x, order, addend=addend[..., :2])


@pytest.mark.gpu
def test_gpu_fused_scale_and_addend_at_wan_shape():
    check_fused_scale_and_addend(1, 12, 4096, 128, device="cuda")
