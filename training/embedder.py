"""TokenEmbedder: MOSS RVQ codes [B, Q, T] + frame mask [B, T] -> L2-normalised embedding [B, D].

Padding is carried only by the mask (code 0 is a real MOSS code), and every layer is
written so that padded frames cannot leak into valid ones: they are zeroed before the
convolution, masked out of attention and out of the pooling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# How the frames become one vector: mean and attention pooling concatenated, either alone, or the max.
POOLINGS = ("mean_attn", "mean", "attn", "max")


@dataclass
class EmbedderConfig:
    n_levels: int = 8  # RVQ levels used; the finest levels are the least stable under noise
    codebook_size: int = 1024
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 4
    conv_kernel: int = 5
    embedding_dim: int = 256
    dropout: float = 0.1
    pooling: str = "mean_attn"
    # Start each level's code vectors from the tokenizer's own (training.codebook_init) instead of at random.
    init_from_codebook: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {self.pooling!r}")


class _SelfAttentionBlock(nn.Module):
    def __init__(self, cfg: EmbedderConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model),
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias)
        x = x + self.dropout(self.proj(attended.transpose(1, 2).reshape(b, t, d)))
        return x + self.dropout(self.ff(self.norm2(x)))


class TokenEmbedder(nn.Module):
    def __init__(self, cfg: EmbedderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # One table for all levels, offset per level: a single gather instead of Q lookups.
        self.code_embedding = nn.Embedding(cfg.n_levels * cfg.codebook_size, cfg.d_model)
        self.register_buffer("level_offsets", torch.arange(cfg.n_levels) * cfg.codebook_size, persistent=False)
        self.conv = nn.Conv1d(cfg.d_model, cfg.d_model, cfg.conv_kernel, padding=cfg.conv_kernel // 2)
        self.blocks = nn.ModuleList(_SelfAttentionBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.pool_score = nn.Linear(cfg.d_model, 1) if "attn" in cfg.pooling else None
        self.head = nn.Linear((2 if cfg.pooling == "mean_attn" else 1) * cfg.d_model, cfg.embedding_dim)
        nn.init.normal_(self.code_embedding.weight, std=1.0 / math.sqrt(cfg.n_levels))

    def forward(self, codes: torch.Tensor, mask: torch.Tensor, code_dropout: float = 0.0) -> torch.Tensor:
        """codes int [B, Q>=n_levels, T]; mask bool [B, T] (True = valid frame); every row needs one valid frame."""
        if not torch.jit.is_tracing():  # shape checks would be baked into an exported graph as constants
            self._check_shapes(codes, mask)
        levels = codes[:, : self.cfg.n_levels].clamp(0, self.cfg.codebook_size - 1)
        ids = levels.transpose(1, 2) + self.level_offsets  # [B, T, L]
        per_level = self.code_embedding(ids)
        if code_dropout > 0 and self.training:
            keep = torch.rand(per_level.shape[:3], device=codes.device) >= code_dropout
            per_level = per_level * keep.unsqueeze(-1)
        valid = mask.unsqueeze(-1).to(per_level.dtype)
        x = per_level.sum(dim=2) * valid
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2) * valid
        # Additive bias rather than a bool mask: exports to ONNX cleanly and keeps fully-masked rows finite.
        key_bias = ((~mask).to(x.dtype) * -1e4)[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_bias)
        return F.normalize(self.head(self._pool(self.norm(x), mask, valid)), dim=-1)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.cfg.pooling == "max":
            return x.masked_fill(~mask.unsqueeze(-1), -1e4).max(dim=1).values
        pooled = []
        if self.cfg.pooling in ("mean_attn", "mean"):
            pooled.append((x * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0))
        if self.pool_score is not None:
            scores = self.pool_score(x).squeeze(-1).masked_fill(~mask, -1e4)
            pooled.append((torch.softmax(scores, dim=1).unsqueeze(-1) * x).sum(dim=1))
        return torch.cat(pooled, dim=-1)

    def _check_shapes(self, codes: torch.Tensor, mask: torch.Tensor) -> None:
        if codes.dim() != 3 or mask.dim() != 2 or codes.shape[0] != mask.shape[0] or codes.shape[2] != mask.shape[1]:
            raise ValueError(f"expected codes [B, Q, T] and mask [B, T], got {tuple(codes.shape)} and {tuple(mask.shape)}")
        if codes.shape[1] < self.cfg.n_levels:
            raise ValueError(f"embedder uses {self.cfg.n_levels} RVQ levels, codes have only {codes.shape[1]}")


def frame_mask(frame_counts: torch.Tensor, n_frames: int) -> torch.Tensor:
    return torch.arange(n_frames, device=frame_counts.device)[None, :] < frame_counts[:, None]


class EmbedderFromCounts(nn.Module):
    """The serving signature (docs/contracts.md): CODES [B, Q, T] + FRAME_COUNTS [B] -> EMBEDDING [B, D]."""

    def __init__(self, embedder: TokenEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def forward(self, codes: torch.Tensor, frame_counts: torch.Tensor) -> torch.Tensor:
        return self.embedder(codes.long(), frame_mask(frame_counts, codes.shape[2]))
