"""Patching and projected causal transformer stages of the MOSS encoder.

Activations stay time-major ``[B, N, C]`` between stages (the reference's conv layout
``[B, C, N]`` is the same math with two transposes per stage). Submodule names
follow the official state-dict keys so checkpoints map onto them directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.moss.attention import AttentionFn, apply_rope, windowed_causal_attention
from training.moss.config import TransformerConfig


class Patch(nn.Module):
    """Fold groups of ``patch_size`` steps into channels, channel-major: out[c*h + j] = in[c] at n*h + j."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: Tensor) -> Tensor:
        batch, _, channels = x.shape
        # reshape with sizes read from x.shape (not unflatten) keeps N dynamic in the traced ONNX graph
        grouped = x.reshape(batch, -1, self.patch_size, channels)  # [B, N/h, h, C]
        return grouped.transpose(2, 3).reshape(batch, -1, channels * self.patch_size)  # [B, N/h, C*h]


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.init = init  # kept: models built on the meta device are filled later (init_codec_weights)
        self.scale = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class SelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.context = config.context
        self.max_period = config.max_period
        self.in_proj = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.attention: AttentionFn = windowed_causal_attention

    def forward(self, x: Tensor) -> Tensor:
        # Fused projection laid out as [q | k | v], heads contiguous inside each third.
        batch, frames, width = x.shape
        qkv = self.in_proj(x).reshape(batch, frames, 3, self.num_heads, width // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, N, D]
        q, k, v = qkv.unbind(0)
        q, k = apply_rope(q, self.max_period), apply_rope(k, self.max_period)
        out = self.attention(q, k, v, self.context)  # [B, H, N, D]
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, width))


class TransformerLayer(nn.Module):
    """Pre-norm layer: x += s1 * Attn(LN1 x); x += s2 * W2 GELU(W1 LN2 x); no biases in the linears."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.self_attn = SelfAttention(config)
        self.layer_scale_1 = LayerScale(d, config.layer_scale)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.linear1 = nn.Linear(d, config.dim_feedforward, bias=False)
        self.linear2 = nn.Linear(config.dim_feedforward, d, bias=False)
        self.layer_scale_2 = LayerScale(d, config.layer_scale)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x)))
        return x + self.layer_scale_2(self.linear2(F.gelu(self.linear1(self.norm2(x)))))


class CausalTransformer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ProjectedTransformer(nn.Module):
    """Optional bias-free input projection, the layer stack, optional bias-free output projection."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.input_proj = (
            nn.Linear(config.input_dim, config.d_model, bias=False) if config.input_dim != config.d_model else None
        )
        self.transformer = CausalTransformer(config)
        self.output_proj = (
            nn.Linear(config.d_model, config.output_dim, bias=False) if config.output_dim != config.d_model else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.input_proj is not None:
            x = self.input_proj(x)
        x = self.transformer(x)
        if self.output_proj is not None:
            x = self.output_proj(x)
        return x
