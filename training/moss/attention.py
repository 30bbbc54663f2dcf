"""Rotary embedding and the sliding-window causal attention of the MOSS transformers.

Every attention call of the encoder goes through one ``AttentionFn`` (see
``MossEncoder.set_attention``), so a fused GPU kernel can replace the default
without touching the layers: it gets q, k, v as ``[B, H, N, D]`` (RoPE already
applied) and the window ``context``; query ``p`` may see key ``r`` iff ``0 <= p - r < context``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

AttentionFn = Callable[[Tensor, Tensor, Tensor, int], Tensor]


def sliding_window_mask(n: int, context: int, device: torch.device) -> Tensor:
    """Boolean ``[N, N]`` mask, True where query p may attend key r (0 <= p - r < context)."""
    positions = torch.arange(n, device=device)
    delta = positions[:, None] - positions[None, :]
    return (delta >= 0) & (delta < context)


def windowed_causal_attention(q: Tensor, k: Tensor, v: Tensor, context: int) -> Tensor:
    """Default backend: SDPA with the window as an additive 0/-inf ``[N, N]`` bias (exports to plain ONNX ops
    with dynamic N). Not a boolean mask: SDPA with one exports with a NaN guard (IsNaN + Where) over every
    ``[B, H, N, N]`` score matrix, a tenth of the CPU encoder's time; every row keeps its diagonal, so the guard
    had nothing to catch and the codes are the same."""
    n = q.shape[-2]
    bias = torch.zeros(n, n, dtype=q.dtype, device=q.device).masked_fill(~sliding_window_mask(n, context, q.device), float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def blocked_windowed_causal_attention(q: Tensor, k: Tensor, v: Tensor, context: int) -> Tensor:
    """``windowed_causal_attention`` one block of ``context`` queries at a time, each against the keys its
    window can reach: the same result with memory linear in N instead of quadratic (whole tracks of many
    minutes; eager PyTorch only, the ONNX export keeps the one-mask graph)."""
    n = q.shape[-2]
    if n <= context:
        return windowed_causal_attention(q, k, v, context)
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    for start in range(0, n, context):
        end, first = min(n, start + context), max(0, start - context + 1)
        delta = torch.arange(start, end, device=q.device)[:, None] - torch.arange(first, end, device=q.device)[None, :]
        mask = (delta >= 0) & (delta < context)
        out[..., start:end, :] = F.scaled_dot_product_attention(q[..., start:end, :], k[..., first:end, :], v[..., first:end, :], attn_mask=mask)
    return out


def causal_attention_within_context(q: Tensor, k: Tensor, v: Tensor, context: int) -> Tensor:
    """Training backend: clips no longer than the window need only the causal mask, which SDPA's fused
    (flash) kernels take without materialising it; longer clips fall back to the explicit window."""
    if q.shape[-2] <= context:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return windowed_causal_attention(q, k, v, context)


def apply_rope(x: Tensor, max_period: float) -> Tensor:
    """Interleaved rotary embedding on ``[B, H, N, D]``: dims (2i, 2i+1) rotate by t * max_period^(-2i/D).

    Angles and the rotation are computed in float32 whatever the input dtype, as in the
    reference, because position * frequency loses precision in half precision.
    """
    n, d = x.shape[-2], x.shape[-1]
    freqs = torch.exp(torch.arange(d // 2, device=x.device, dtype=torch.float32) * (-2.0 * math.log(max_period) / d))
    angles = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * freqs[None, :]
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.float().reshape(*x.shape[:-1], d // 2, 2)
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.reshape(x.shape).to(x.dtype)
