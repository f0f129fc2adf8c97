"""`sla`: SLA, sparse-linear attention (Zhang et al., ICLR 2026; thu-ml/SLA).

Critical blocks: per query block the top `density` fraction of key blocks by mean-pooled score (the
authors' `topk`, default 0.2, 64-token blocks; they score q_bar . (k - mean k)_bar without softmax, which
ranks key blocks exactly as the softmax of `sparse` does), computed exactly by the block-sparse kernel.
The other key blocks go through linear attention with a feature map phi tied for Q and K:
    O_linear,i = phi(q_i) sum_{t dropped} phi(k_t)^T v_t / (1e-5 + phi(q_i) . sum_{t dropped} phi(k_t)),
and the output is O = O_sparse + proj(O_linear) with proj a per-layer Linear(head_dim, head_dim), float32,
shared by the heads and initialised to zero. Untrained, SLA is therefore exactly `sparse` with SLA's
selection; trained projections (a later issue fine-tunes them) are loaded with `load_projections`.

Of the two released variants this is the SLA-1 branch, the paper's fused kernel: each query block's linear
attention covers only the key blocks it did not compute exactly (swiftdit.kernels.sparse_linear_attention,
fused on CUDA). The authors' later main branch runs the linear part over every key (SLA#9: more stable to
train); that is a choice for the training issue, with a kernel flag of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from swiftdit.kernels.sparse_linear_attention import FEATURE_MAPS, sparse_linear_attention

from ..context import AttentionCall
from ..pattern import BlockPattern
from ..validation import check_choice
from .base import VisualAttentionInputs, attend_with_pattern
from .blocking import Reorder, reorder_tokens, restore_token_order
from .registry import register_method
from .sparse import SparseAttention, SparseConfig


@dataclass(frozen=True)
class SLAConfig(SparseConfig):
    """Options of `sla`: those of `sparse` with SLA's defaults, plus the linear branch's.

    block_size: default 64. density: SLA's `topk`, default 0.2 (TurboDiffusion ships 0.1, recommends 0.15).
    mass: default 0. reorder: default "none". neighbours, first_frame_sink: default False (SLA keeps
        only the top-k blocks).
    feature_map: phi, "softmax" over head_dim (default) or "elu" (elu + 1); the authors' "relu" can make
        the linear normaliser zero, and the kernels do not offer it.
    """

    block_size: int = 64
    density: float = 0.2
    reorder: Reorder = "none"
    neighbours: bool = False
    first_frame_sink: bool = False
    feature_map: str = "softmax"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("SLAConfig", "feature_map", self.feature_map, FEATURE_MAPS)


@register_method
class SparseLinearAttention(SparseAttention):
    name = "sla"
    Config = SLAConfig
    summary = "Top-k blocks exact plus linear attention for the rest through a per-layer zero-initialised projection."
    paper = ("SLA: Beyond Sparsity in Diffusion Transformers via Fine-Tunable Sparse-Linear Attention "
             "(Zhang et al., ICLR 2026)")

    def __init__(self, config: SLAConfig):
        super().__init__(config)
        # Learned weights, one projection per (denoiser, layer): not per-call state, so `reset` keeps them.
        self.projections: dict[str, torch.nn.Linear] = {}

    @staticmethod
    def projection_key(call: AttentionCall) -> str:
        return f"{call.step.model_key}.{call.layer_name}"

    def projection(self, call: AttentionCall, head_dim: int, device) -> torch.nn.Linear:
        key = self.projection_key(call)
        if key not in self.projections:
            proj = torch.nn.Linear(head_dim, head_dim, dtype=torch.float32, device=device)
            torch.nn.init.zeros_(proj.weight)
            torch.nn.init.zeros_(proj.bias)
            self.projections[key] = proj
        return self.projections[key]

    def load_projections(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Load trained projections: {"<model_key>.<layer_name>": Linear state dict}."""
        for key, weights in state.items():
            head_dim = weights["weight"].shape[-1]
            proj = torch.nn.Linear(head_dim, head_dim, dtype=torch.float32, device=weights["weight"].device)
            proj.load_state_dict(weights)
            self.projections[key] = proj

    def attend(self, inputs: VisualAttentionInputs, pattern: BlockPattern, call: AttentionCall) -> torch.Tensor:
        if inputs.visual_mask is not None:
            # The fused kernel has no element mask; a model-imposed token mask keeps the exact part only.
            return attend_with_pattern(inputs, pattern, return_lse=False)[0]
        order = pattern.token_order
        q, k, v = (reorder_tokens(x, order, inputs.token_order) for x in (inputs.q, inputs.k, inputs.v))
        kv_indices, kv_counts = pattern.to_index_table()
        out_sparse, out_linear, _ = sparse_linear_attention(
            q, k, v, kv_indices, kv_counts, pattern.block_size, feature=self.config.feature_map,
            text_k=inputs.text_k, text_v=inputs.text_v, text_key_mask=inputs.text_key_mask, scale=inputs.scale,
        )
        proj = self.projection(call, out_linear.shape[-1], out_linear.device)
        linear = restore_token_order(proj(out_linear.float()), pattern, inputs.token_order)
        # The sum in float32, rounded once, in the pass that restores the token order.
        return restore_token_order(out_sparse, pattern, inputs.token_order, addend=linear)
