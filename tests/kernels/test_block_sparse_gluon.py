"""The Gluon forward for Hopper (kernels/block_sparse_attention/gluon_hopper.py): when "auto" takes it, that a
forced call it cannot take is refused by name, that it compiles for sm_90 without a GPU, and on the H100 that its
output, LSE and the gradients of the Triton backward it feeds match the reference."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from kernel_cases import assert_lse_close, finite_lse_sum, leaf_copies, qkv, random_block_mask, relative_error

from swiftdit.kernels.block_sparse_attention import (
    block_mask_to_index_table,
    block_sparse_attention,
    block_sparse_attention_reference,
)
from swiftdit.kernels.block_sparse_attention.pooled import mean_pool_blocks, pooled_columns
from swiftdit.kernels.block_sparse_attention.triton_ops import KernelPooledColumns
from swiftdit.kernels.block_sparse_attention.gluon_hopper import (
    GLUON_PAIR_BLOCKS,
    MAX_PIECES,
    gluon_forward_takes,
    launch_forward_hopper,
    plan_units,
)


def test_auto_keeps_the_triton_kernel_off_hopper_and_for_calls_outside_the_scope():
    q, k, v = qkv(1, 2, 256, 128, torch.bfloat16)
    plain = dict(text_k=None, has_element_mask=False)
    assert not gluon_forward_takes(q, k, v, 128, **plain)  # CPU tensors
    assert not gluon_forward_takes(q, k, v, 128, **dict(plain, has_element_mask=True))
    assert not gluon_forward_takes(q, k, v, 32, **plain)


def test_forcing_gluon_where_it_cannot_run_names_the_requirements():
    q, k, v = qkv(1, 1, 256, 128, torch.bfloat16)
    kv_indices, kv_counts = block_mask_to_index_table(torch.ones(1, 1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend='gluon' needs an H100-class GPU"):
        block_sparse_attention(q, k, v, kv_indices, kv_counts, 128, backend="gluon")


def test_pairs_are_refused_at_other_block_sizes():
    q, k, v = qkv(1, 1, 256, 128, torch.bfloat16)
    kv_indices, kv_counts = block_mask_to_index_table(torch.ones(1, 1, 2, 2, dtype=torch.bool))
    assert 128 not in GLUON_PAIR_BLOCKS
    with pytest.raises(ValueError, match=r"pairs=True needs block_size in \(64,\), got 128"):
        launch_forward_hopper(q, k, v, torch.empty_like(q), torch.empty(q.shape[:3]), kv_indices, kv_counts, 128,
                              1.0, pairs=True)


@pytest.mark.parametrize("head_dim, even, text, block, pairs", [
    (128, False, True, 128, False), (64, True, False, 128, False), (128, False, True, 64, False),
    (64, True, False, 64, False), (128, False, True, 64, True), (64, True, False, 64, True)])
def test_kernel_compiles_for_sm90(head_dim, even, text, block, pairs):
    """A compile for compute capability 9.0 with the installed Triton, no GPU needed, in a subprocess (this one
    runs Triton's interpreter): the kernel's layouts, partitions and barriers type-check (one lane at 128-token
    blocks, two at 64, one with pairs of 64-token blocks), the partitions get their register budgets, the
    shared memory fits the H100's 227 KB, and ptxas does not serialize the wgmma instructions."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    script = ("import json; "
              "from swiftdit.kernels.block_sparse_attention.gluon_hopper import compile_check, load_kernel;"
              f" print(json.dumps(compile_check({head_dim}, {even}, {text}, {block}, {pairs})"
              " if load_kernel() else None))")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if result is None:
        pytest.skip("this Triton has no Gluon Hopper API")
    assert result["wgmma"] > 0 and result["setmaxnreg"]
    assert result["shared_bytes"] <= 232448
    # ptxas keeps the products asynchronous: a register the next P V reads, written while one may still run in
    # a branchy loop, once made it serialize every wgmma of the pairs kernel.
    assert not result["wgmma_serialized"]


def _gpu_case(b, h, n, d, dtype, layout, block, empty_rows=0, density=0.3, seed=0):
    q, k, v = qkv(b, h, n, d, dtype, device="cuda", seed=seed)
    if layout == "bnhd":  # diffusers' processors hand over (B, N, H, D) views
        q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    mask = random_block_mask(b, h, math.ceil(n / block), density, seed=seed, empty_rows=empty_rows).cuda()
    return q, k, v, mask


@pytest.mark.gpu
@pytest.mark.parametrize("block, n, d, dtype, layout, text, pooled", [
    (128, 8190, 128, torch.bfloat16, "bnhd", 0, False),
    (128, 4096, 64, torch.float16, "bhnd", 0, False),
    (128, 2000, 128, torch.float16, "bhnd", 0, False),
    (128, 3000, 128, torch.bfloat16, "bnhd", 300, False),
    (128, 8190, 128, torch.bfloat16, "bnhd", 300, True),
    (64, 8190, 128, torch.bfloat16, "bnhd", 0, False),
    (64, 4096, 64, torch.float16, "bhnd", 0, False),
    (64, 2000, 128, torch.float16, "bhnd", 0, False),
    (64, 3000, 128, torch.bfloat16, "bnhd", 300, False),
    (64, 8190, 64, torch.bfloat16, "bnhd", 300, True),
])
def test_gpu_gluon_forward_matches_reference(block, n, d, dtype, layout, text, pooled):
    """Both block sizes (one lane of work items per program at 128, two at 64), ragged ends, both layouts, both
    head dims, empty rows; with text keys (a ragged 300, some padding, a batch whose text is all padding, so its
    empty rows stay empty); with `rectified`'s pooled columns of the dropped blocks after them (a ragged tile of
    pooled columns: 64 key blocks at 128 tokens, 128 at 64)."""
    q, k, v, mask = _gpu_case(2, 3, n, d, dtype, layout, block, empty_rows=2)
    text_args, reference_args = {}, {}
    if text:
        text_k, text_v = qkv(2, 3, text, d, dtype, device="cuda", seed=5)[:2]
        key_mask = torch.rand(2, text, generator=torch.Generator().manual_seed(4)) < 0.8
        key_mask[1] = False
        text_args = dict(text_k=text_k, text_v=text_v, text_key_mask=key_mask.cuda())
        reference_args = dict(text_k=text_k.float(), text_v=text_v.float(), text_key_mask=key_mask.cuda())
    assert gluon_forward_takes(q, k, v, block, text_k=text_args.get("text_k"), has_element_mask=False)
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    out, lse = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, backend="gluon",
                                      estimate_dropped=pooled, **text_args)
    ref, ref_lse = block_sparse_attention_reference(q.float(), k.float(), v.float(), kv_indices, kv_counts, block,
                                                    estimate_dropped=pooled, **reference_args)
    assert relative_error(out, ref) < 1e-2
    assert_lse_close(lse, ref_lse)
    # The empty rows of head 0 (its first two query blocks); with text keys only those of batch 1 (whose text is
    # all padding) stay empty, and with pooled columns none (they attend every block they drop).
    if not pooled:
        assert torch.all(out[1 if text else 0, 0, :2 * block] == 0)
    assert out.stride() == q.stride()  # written in q's layout


@pytest.mark.gpu
@pytest.mark.parametrize("block, estimate_dropped", [(128, False), (128, True), (64, False)])
def test_gpu_gluon_forward_feeds_the_triton_backward(block, estimate_dropped):
    """Gradients through the Triton backward from the Gluon forward's output and LSE; with `rectified`'s pooled
    columns of the dropped blocks (walked last in the Gluon forward) too."""
    q, k, v, mask = _gpu_case(1, 2, 3000, 128, torch.bfloat16, "bhnd", block)
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    weights = torch.randn(q.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    grads = []
    for backend, dtype in (("gluon", torch.bfloat16), ("reference", torch.float32)):
        inputs = leaf_copies([q, k, v], dtype)
        out, lse = block_sparse_attention(*inputs, kv_indices, kv_counts, block, backend=backend,
                                          estimate_dropped=estimate_dropped)
        loss = (out.float() * weights).sum() + finite_lse_sum(lse)
        grads.append(torch.autograd.grad(loss, inputs))
    for name, grad, expected in zip("qkv", *grads):
        assert relative_error(grad, expected) < 2e-2, f"gradient of {name}"


@pytest.mark.gpu
@pytest.mark.parametrize("block", [128, 64])
def test_gpu_gluon_cuts_a_part_filled_last_wave_and_merges_the_pieces(block):
    """3,000 tokens, 2 x 3 heads: a last wave of 12 items at 128-token blocks (on 132 SMs) and 18 at 64, each cut
    into pieces (empty pieces included: the empty rows). With and without cutting, against the reference."""
    q, k, v, mask = _gpu_case(2, 3, 3000, 128, torch.bfloat16, "bnhd", block, empty_rows=2)
    items = 2 * 3 * math.ceil(3000 / block)
    assert plan_units(items, torch.cuda.get_device_properties(0).multi_processor_count * 128 // block).split > 1
    kv_indices, kv_counts = (x.to(torch.int32).contiguous() for x in block_mask_to_index_table(mask))
    ref, ref_lse = block_sparse_attention_reference(q.float(), k.float(), v.float(), kv_indices, kv_counts, block)
    results = []
    for max_pieces in (1, MAX_PIECES):
        out, lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=torch.float32, device="cuda")
        launch_forward_hopper(q, k, v, out, lse, kv_indices, kv_counts, block, 1 / math.sqrt(128),
                              max_pieces=max_pieces)
        assert relative_error(out, ref) < 1e-2
        assert_lse_close(lse, ref_lse)
        assert torch.all(out[:, 0, :2 * block] == 0) and torch.all(lse[:, 0, :2 * block] == float("-inf"))
        results.append(out)
    assert (results[0].float() - results[1].float()).abs().max() < 2e-2  # bf16 roundings of the same sums


@pytest.mark.gpu
@pytest.mark.parametrize("block, pairs", [(128, False), (64, False), (64, True)])
def test_gpu_gluon_programs_claim_work_units_as_they_free_up(block, pairs):
    """Programs take their first work unit by id and claim the rest from a counter. With several times more units
    than programs and rows from empty to every block (so the programs claim different numbers of units), every
    unit is computed exactly once: on two launches in a row, and on two replays of one CUDA graph (the counter
    starts from zero on each)."""
    b, h, n = 1, 8, 8192
    n_blocks = n // block
    q, k, v = qkv(b, h, n, 128, torch.bfloat16, device="cuda", seed=3)
    generator = torch.Generator().manual_seed(3)
    row_density = torch.rand(b, h, n_blocks, 1, generator=generator) ** 3  # most rows short, a few long
    mask = torch.rand(b, h, n_blocks, n_blocks, generator=generator) < row_density
    mask[0, 1, ::5] = False  # some empty rows
    assert mask.sum(-1).max() > 3 * mask.sum(-1).float().mean()
    kv_indices, kv_counts = (x.to(torch.int32).contiguous().cuda() for x in block_mask_to_index_table(mask.cuda()))
    ref, ref_lse = block_sparse_attention_reference(q.float(), k.float(), v.float(), kv_indices, kv_counts, block)
    out, lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=torch.float32, device="cuda")

    def launch():
        launch_forward_hopper(q, k, v, out, lse, kv_indices, kv_counts, block, 1 / math.sqrt(128), pairs=pairs)

    launch()
    first = out.clone()
    out.zero_()
    launch()
    assert torch.equal(out, first)
    assert relative_error(out, ref) < 1e-2
    assert_lse_close(lse, ref_lse)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        launch()
    for _ in range(2):
        out.zero_()
        lse.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, first)
        assert_lse_close(lse, ref_lse)


def _neighbour_sharing_mask(b, h, n_blocks, density, shared, seed):
    """A block mask whose odd query blocks keep a `shared` fraction of the blocks of the even block before them
    and fill up with random others: the overlap the pairs walk is for (the methods' patterns have it)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, n_blocks, n_blocks, generator=generator) < density
    keep_even = torch.rand(b, h, n_blocks // 2, n_blocks, generator=generator) < shared
    odd = slice(1, 2 * (n_blocks // 2), 2)
    mask[:, :, odd] = (mask[:, :, 0:2 * (n_blocks // 2):2] & keep_even) | (mask[:, :, odd] & ~keep_even)
    return mask


@pytest.mark.gpu
@pytest.mark.parametrize("n, d, layout, text, pooled", [(8192, 128, "bnhd", 0, False), (3000, 128, "bhnd", 300, False),
                                                        (8190, 64, "bnhd", 300, True)])
def test_gpu_gluon_pairs_share_key_blocks_between_neighbouring_query_blocks(n, d, layout, text, pooled):
    """Pairs of 64-token query blocks over the merge of their ascending key lists (launch_forward_hopper's
    `pairs`): lists that share most blocks, lists that share none (head 1), one of a pair empty and both empty,
    an odd number of query blocks (3000 tokens: the last pair has one), text keys with padding, `rectified`'s
    pooled columns: against the reference, and within bf16 rounding of the two-lane walk."""
    block, b, h = 64, 2, 3
    n_blocks = math.ceil(n / block)
    scale = 1 / math.sqrt(d)
    q, k, v = qkv(b, h, n, d, torch.bfloat16, device="cuda", seed=7)
    if layout == "bnhd":
        q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    mask = _neighbour_sharing_mask(b, h, n_blocks, 0.2, 0.8, seed=7)
    mask[:, 1] = torch.rand(b, n_blocks, n_blocks, generator=torch.Generator().manual_seed(8)) < 0.1  # unshared
    mask[0, 0, 4] = False  # the first block of a pair empty
    mask[0, 0, 7] = False  # the second
    mask[1, 2, 10:12] = False  # both
    mask[:, :, n_blocks - 1] = True  # the last block (alone in its pair where n_blocks is odd) keeps all
    kv_indices, kv_counts = (x.to(torch.int32).contiguous().cuda() for x in block_mask_to_index_table(mask))
    text_args, reference_args = {}, {}
    if text:
        text_k, text_v = qkv(b, h, text, d, torch.bfloat16, device="cuda", seed=9)[:2]
        key_mask = (torch.rand(b, text, generator=torch.Generator().manual_seed(9)) < 0.8).cuda()
        text_args = dict(text_k=text_k, text_v=text_v, text_key_mask=key_mask.to(torch.uint8))
        reference_args = dict(text_k=text_k.float(), text_v=text_v.float(), text_key_mask=key_mask)
    if pooled:
        columns = pooled_columns(k, v, mask.cuda(), block, pool=mean_pool_blocks)
        text_args["pooled"] = KernelPooledColumns.from_columns(columns, q.dtype, scale)
    ref, ref_lse = block_sparse_attention_reference(q.float(), k.float(), v.float(), kv_indices, kv_counts, block,
                                                    estimate_dropped=pooled, **reference_args)
    outs = []
    for pairs in (False, True):
        out, lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=torch.float32, device="cuda")
        launch_forward_hopper(q, k, v, out, lse, kv_indices, kv_counts, block, scale, pairs=pairs, **text_args)
        assert relative_error(out, ref) < 1e-2
        assert_lse_close(lse, ref_lse)
        outs.append(out)
    assert (outs[0].float() - outs[1].float()).abs().max() < 2e-2  # bf16 roundings of the same sums
    if not text and not pooled:
        for batch, head, q_block in ((0, 0, 4), (0, 0, 7), (1, 2, 10), (1, 2, 11)):
            assert torch.all(outs[1][batch, head, q_block * block:(q_block + 1) * block] == 0)
