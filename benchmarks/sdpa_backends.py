"""The SDPA kernels the benchmarks run dense attention on: cuDNN first, the fastest dense kernel on the H100
(584 TFLOP/s against flash's 354 at Wan 480p, shared/reference/h100-baselines.md), then the others for the
calls cuDNN cannot take."""

from __future__ import annotations

import contextlib

import torch


def sdpa_context(device: torch.device, strict_cudnn: bool):
    """cuDNN SDPA only (strict), or cuDNN first then flash / efficient / math for the calls cuDNN cannot take
    (masked text rows of the sparse methods, HunyuanVideo's refiner); the CPU keeps PyTorch's choice."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if strict_cudnn:
        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION])
    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH], set_priority=True)
