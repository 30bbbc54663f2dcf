"""Residual LFQ quantizer of MOSS: codes for the encode path, dequantisation and the training pass for the codec."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.moss.config import QuantizerConfig


class WeightNorm(nn.Module):
    """``g * v / |v|`` with the norm per output channel; g and v keep the checkpoint's names and shapes.

    Written out rather than through ``torch.nn.utils.parametrize``: the result is the same
    weight, but this builds on the meta device without torch's slow first-use decompositions
    and deep-copies safely. The ONNX exporter constant-folds it into one plain weight.
    """

    def __init__(self, out_channels: int, in_channels: int) -> None:
        super().__init__()
        self.original0 = nn.Parameter(torch.empty(out_channels, 1, 1))  # g
        self.original1 = nn.Parameter(torch.empty(out_channels, in_channels, 1))  # v

    def forward(self) -> Tensor:
        v = self.original1
        return v * (self.original0 / v.norm(dim=(1, 2), keepdim=True))  # the order torch's weight_norm uses


class PointwiseConv(nn.Module):
    """A weight-normalised 1x1 conv (with bias) applied to time-major ``[B, T, C]`` activations.

    Keys: ``parametrizations.weight.original0`` (g), ``.original1`` (v), ``bias``, as in the checkpoint.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.parametrizations = nn.ModuleDict({"weight": WeightNorm(out_channels, in_channels)})
        self.bias = nn.Parameter(torch.empty(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.parametrizations["weight"]().squeeze(-1), self.bias)


def nearest_code(u: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest L2-normalised codebook row to each L2-normalised ``u`` row (float32).

    Squared distances |u|^2 - 2 u.c + |c|^2 as in the reference; ``argmax`` of the
    negated distance returns the lowest index on ties.
    """
    u = F.normalize(u.float(), dim=-1)
    c = F.normalize(codebook.float(), dim=-1)
    distance = u.pow(2).sum(-1, keepdim=True) - 2.0 * (u @ c.t()) + c.pow(2).sum(-1)
    return (-distance).argmax(-1)


class LFQLevel(nn.Module):
    def __init__(self, rvq_dim: int, codebook_dim: int, codebook_size: int) -> None:
        super().__init__()
        self.in_proj = PointwiseConv(rvq_dim, codebook_dim)
        self.out_proj = PointwiseConv(codebook_dim, rvq_dim)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def forward(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        """Codes ``[B, T]`` and the quantised update ``[B, T, rvq_dim]`` (the raw codebook row, projected)."""
        codes = nearest_code(self.in_proj(residual), self.codebook.weight)
        return codes, self.out_proj(self.codebook(codes))

    def train_forward(self, residual: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Codes, the straight-through update, and the per-frame commitment and codebook errors ``[B, T]``.

        The update is ``out_proj(u + (row - u))`` with the difference detached: the forward value is the
        codebook row (what inference adds), the gradient reaches the encoder through ``u``. The codebook
        learns from its own error term, on raw (un-normalised) vectors, since raw rows are what the
        decoder receives; the lookup itself stays on normalised vectors, as at inference.
        """
        u = self.in_proj(residual)
        codes = nearest_code(u, self.codebook.weight)
        row = self.codebook(codes)
        commitment = (u.float() - row.detach().float()).pow(2).mean(-1)
        codebook = (row.float() - u.detach().float()).pow(2).mean(-1)
        return codes, self.out_proj(u + (row - u).detach()), commitment, codebook


class ResidualLFQ(nn.Module):
    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__()
        self.input_proj = PointwiseConv(config.input_dim, config.rvq_dim)
        self.quantizers = nn.ModuleList(
            LFQLevel(config.rvq_dim, config.codebook_dim, config.codebook_size) for _ in range(config.num_quantizers)
        )
        # Maps the quantised latent back for the decoder; part of the checkpoint, never used for codes.
        self.output_proj = PointwiseConv(config.rvq_dim, config.output_dim)

    def forward(self, latent: Tensor, frame_counts: Tensor, n_quantizers: int) -> Tensor:
        """``latent [B, T, input_dim]``, valid frames per clip ``[B]`` -> codes ``[B, n_quantizers, T]`` int64."""
        residual = self.input_proj(latent)
        frames = torch.arange(residual.shape[1], device=residual.device)
        mask = (frames[None, :] < frame_counts[:, None]).unsqueeze(-1).to(residual.dtype)
        codes = []
        for level in self.quantizers[:n_quantizers]:
            level_codes, update = level(residual * mask)
            residual = residual - update * mask
            codes.append(level_codes)
        return torch.stack(codes, dim=1)

    def dequantize(self, codes: Tensor) -> Tensor:
        """Codes ``[B, Q, T]`` (any first Q levels) -> the decoder's input ``[B, T, output_dim]``."""
        if codes.shape[1] > len(self.quantizers):
            raise ValueError(f"codes have {codes.shape[1]} levels, the quantizer {len(self.quantizers)}")
        summed = sum(level.out_proj(level.codebook(codes[:, i])) for i, level in enumerate(self.quantizers[: codes.shape[1]]))
        return self.output_proj(summed)

    def train_forward(self, latent: Tensor, levels: Tensor) -> QuantizerTrainOutput:
        """Quantise with ``levels[b]`` levels for item ``b`` (quantizer dropout: variable bitrate).

        Levels past an item's count add nothing to its latent nor to its losses, so each item is
        trained as the codec it would be at that bitrate; every frame is valid (training crops are whole).
        """
        residual = self.input_proj(latent)
        quantized = torch.zeros_like(residual)
        codes, commitment, codebook = [], residual.new_zeros(()), residual.new_zeros(())
        weights = levels.new_zeros(())
        for index, level in enumerate(self.quantizers[: int(levels.max())]):
            active = (levels > index).to(residual.dtype)[:, None]  # [B, 1]
            level_codes, update, commit, book = level.train_forward(residual)
            update = update * active[..., None]
            quantized = quantized + update
            residual = residual - update
            commitment = commitment + (commit * active).sum()
            codebook = codebook + (book * active).sum()
            weights = weights + active.sum() * commit.shape[1]
            codes.append(level_codes)
        return QuantizerTrainOutput(
            quantized=self.output_proj(quantized),
            codes=torch.stack(codes, dim=1),
            commitment=commitment / weights,
            codebook=codebook / weights,
        )


@dataclass
class QuantizerTrainOutput:
    quantized: Tensor  # [B, T, output_dim], the decoder's input
    codes: Tensor  # [B, max levels, T]; levels past an item's count are computed but unused
    commitment: Tensor  # mean squared (u - row) over active levels and frames, gradient to the encoder
    codebook: Tensor  # the same error, gradient to the codebook rows
