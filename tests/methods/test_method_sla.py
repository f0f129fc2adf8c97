"""SLA: untrained (zero projection) it is exactly `sparse` with SLA's selection; trained projections add
the linear branch over the blocks not computed exactly, per layer, and survive the per-call reset."""

import torch

from method_cases import make_call, random_inputs
from swiftdit.methods import build_method
from swiftdit.kernels.sparse_linear_attention import sparse_linear_attention

GRID = (2, 8, 16)


def test_zero_initialised_projection_equals_sparse():
    inputs = random_inputs(GRID, text_len=4)
    call = make_call(GRID, text_len=4)
    sla = build_method("sla", dict(density=0.25, reorder="hilbert"))
    pattern = sla.plan(inputs.q, inputs.k, call)
    sparse = build_method("sparse", dict(density=0.25, reorder="hilbert", neighbours=False, first_frame_sink=False))
    assert torch.equal(sparse.plan(inputs.q, inputs.k, call).block_mask, pattern.block_mask)
    torch.testing.assert_close(sla.attend(inputs, pattern, call), sparse.attend(inputs, pattern, call))


def test_loaded_projection_adds_the_linear_branch_of_its_layer_only():
    inputs = random_inputs(GRID, batch=1, head_dim=8)
    layer0, layer1 = make_call(GRID, layer=0), make_call(GRID, layer=1)
    sla = build_method("sla", dict(density=0.25))
    pattern = sla.plan(inputs.q, inputs.k, layer0)
    untrained = sla.attend(inputs, pattern, layer1)
    weight = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    sla.load_projections({sla.projection_key(layer0): {"weight": weight, "bias": torch.zeros(8)}})
    sla.reset()  # a new pipeline call keeps learned weights
    kv_indices, kv_counts = pattern.to_index_table()
    out_sparse, out_linear, _ = sparse_linear_attention(inputs.q, inputs.k, inputs.v, kv_indices, kv_counts,
                                                        pattern.block_size, scale=inputs.scale)
    with torch.no_grad():
        trained = sla.attend(inputs, pattern, layer0)
        torch.testing.assert_close(trained, out_sparse + out_linear @ weight.T, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sla.attend(inputs, pattern, layer1), untrained)
