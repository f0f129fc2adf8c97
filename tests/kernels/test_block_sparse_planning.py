"""GPU-style pattern planner (Triton pooling + on-device selection) against the per-row reference."""

import pytest
import torch
from kernel_cases import interpreter_only, qkv, relative_error

from swiftdit.kernels.block_sparse_attention import index_table_to_block_mask
from swiftdit.kernels.block_sparse_planning import (
    mean_pool_reference,
    mean_pool_torch,
    plan_block_sparse,
    plan_block_sparse_reference,
)

RULES = [
    dict(keep_ratio=0.3),  # a fixed count: the top-k path
    dict(keep_ratio=0.3, include_diagonal=True),
    dict(keep_mass=0.6),
    dict(keep_ratio=0.2, keep_mass=0.5, include_diagonal=True),
]


def assert_same_plan(plan, reference):
    n_k = plan.block_probs.shape[-1]
    assert torch.equal(plan.kv_counts, reference.kv_counts)
    assert torch.equal(index_table_to_block_mask(plan.kv_indices, plan.kv_counts, n_k),
                       index_table_to_block_mask(reference.kv_indices, reference.kv_counts, n_k))
    assert torch.equal(plan.block_mask, reference.block_mask)
    assert relative_error(plan.block_probs, reference.block_probs) < 1e-5
    assert relative_error(plan.kept_mass, reference.kept_mass) < 1e-5


@interpreter_only
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_plan_matches_reference(rule, backend):
    q, k, _ = qkv(2, 3, 150, 32, torch.float16)
    block = 32
    plan = plan_block_sparse(q, k, block, backend=backend, **rule)
    assert_same_plan(plan, plan_block_sparse_reference(q, k, block, **rule))
    # The kept mass is what rectified attention needs: between the kept fraction's share and 1.
    assert torch.all(plan.kept_mass <= 1.0 + 1e-6) and torch.all(plan.kept_mass > 0)


@interpreter_only
@pytest.mark.parametrize("include_diagonal", [False, True])
@pytest.mark.parametrize("keep_mass", [None, 0.5])  # 13 equal blocks: the mass rule needs 7, more than 30%
def test_selection_breaks_ties_like_the_reference(include_diagonal, keep_mass):
    """Zero keys give every block the same probability: the stable ranking keeps the lowest-numbered ones."""
    q, k, _ = qkv(1, 2, 200, 16, torch.float32)
    k = torch.zeros_like(k)
    rule = dict(keep_ratio=0.3, keep_mass=keep_mass, include_diagonal=include_diagonal)
    plan = plan_block_sparse(q, k, 16, backend="triton", **rule)
    assert_same_plan(plan, plan_block_sparse_reference(q, k, 16, **rule))


@interpreter_only
def test_triton_pooling_matches_reference_on_ragged_blocks():
    from swiftdit.kernels.block_sparse_planning.triton_pooling import mean_pool_triton

    x = qkv(1, 2, 200, 40, torch.float16)[0].transpose(1, 2).contiguous().transpose(1, 2)
    expected = mean_pool_reference(x, 64)
    assert relative_error(mean_pool_triton(x, 64), expected) < 1e-6
    assert relative_error(mean_pool_torch(x, 64), expected) < 1e-6


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(), "give keep_ratio"),
        (dict(keep_ratio=1.5), "keep_ratio must be in"),
        (dict(keep_mass=0.0), "keep_mass must be in"),
        (dict(keep_ratio=0.5, backend="cuda"), "backend must be one of"),
    ],
)
def test_bad_arguments_name_themselves(options, message):
    q, k, _ = qkv(1, 1, 64, 16, torch.float32)
    with pytest.raises(ValueError, match=message):
        plan_block_sparse(q, k, 32, **options)


@pytest.mark.gpu
@pytest.mark.parametrize("block", [64, 128])
@pytest.mark.parametrize("keep_mass", [None, 0.5])  # None: the one-kernel top-k selection
def test_gpu_plan_at_wan_480p(block, keep_mass):
    q, k, _ = qkv(1, 12, 32760, 128, torch.bfloat16, device="cuda")
    rule = dict(keep_ratio=0.1, keep_mass=keep_mass, include_diagonal=True)
    plan = plan_block_sparse(q, k, block, **rule)
    on_torch = plan_block_sparse(q, k, block, backend="torch", **rule)
    assert relative_error(mean_pool_reference(q[:, :2], block), mean_pool_torch(q[:, :2], block)) < 1e-6
    if keep_mass is None:
        assert_same_plan(plan, on_torch)
        return
    # The two paths sum each sorted row in float32 in different orders (a tree scan, a sequential scan). Where
    # the running mass passes the target within rounding they may keep one block more or fewer: the plans
    # must agree on every row where no rank's running mass lies within 2e-5 of the target.
    ranked = plan.block_probs.double().sort(-1, descending=True).values
    clear = ((ranked.cumsum(-1) - ranked - keep_mass).abs() > 2e-5).all(-1)
    assert clear.float().mean() > 0.9
    for name in ("block_mask", "kv_indices", "kv_counts"):
        assert torch.equal(getattr(plan, name)[clear], getattr(on_torch, name)[clear]), name
    assert (plan.kv_counts - on_torch.kv_counts).abs().max() <= 1
    assert relative_error(plan.kept_mass[clear], on_torch.kept_mass[clear]) < 1e-5
    assert relative_error(plan.block_probs, on_torch.block_probs) < 1e-5
