"""MossCodec: the MOSS encoder and quantizer plus the mirrored decoder, trainable end to end as a codec.

It is a ``MossEncoder`` (same modules, same ``encode``, same codes) with ``decoder.*`` added, so
its checkpoints load into a plain encoder too (the encoder reads ``encoder.*`` / ``quantizer.*`` only).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from training.moss.config import MossConfig
from training.moss.decoder import decoder_stages, run_decoder
from training.moss.model import MossEncoder


@dataclass
class CodecOutput:
    reconstruction: Tensor  # [B, 1, S] (S a whole number of hops)
    codes: Tensor  # [B, levels, T]
    commitment: Tensor
    codebook: Tensor


class MossCodec(MossEncoder):
    def __init__(self, config: MossConfig) -> None:
        super().__init__(config)
        self.decoder = decoder_stages(config)

    def decoder_parameter_count(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters())

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, Q, T]`` (the first Q levels, any Q) -> waveform ``[B, 1, T * hop]``."""
        return run_decoder(self.decoder, self.quantizer.dequantize(codes))

    def train_forward(self, waveform: Tensor, levels: Tensor) -> CodecOutput:
        """Reconstruct ``[B, 1, S]`` through ``levels[b]`` quantizer levels per item (see ``ResidualLFQ.train_forward``)."""
        out = self.quantizer.train_forward(self.latent(waveform), levels)
        return CodecOutput(
            reconstruction=run_decoder(self.decoder, out.quantized),
            codes=out.codes,
            commitment=out.commitment,
            codebook=out.codebook,
        )


def sample_levels(batch: int, max_levels: int, dropout: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """Quantizer dropout: with probability ``dropout`` an item uses 1..max_levels levels (uniform), else all."""
    drop = torch.rand(batch, generator=generator) < dropout
    some = torch.randint(1, max_levels + 1, (batch,), generator=generator)
    return torch.where(drop, some, torch.full_like(some, max_levels)).to(device)
