"""The MOSS decoder: quantised latent ``[B, T, output_dim]`` back to a 24 kHz waveform.

It mirrors the encoder: projected causal transformer stages, each followed by an unpatching
step (the exact inverse of the encoder's patching: channel ``c*h + j`` at step ``n`` becomes
channel ``c`` at time ``n*h + j``), ending with 240 samples per 100-Hz frame unfolded into time.
Module indices are the state-dict prefixes ``decoder.<i>``, as in the official checkpoint.
"""
from __future__ import annotations

from torch import Tensor, nn

from training.moss.config import MossConfig, PatchConfig
from training.moss.transformer import ProjectedTransformer


class Unpatch(nn.Module):
    """``[B, N, C*h]`` -> ``[B, N*h, C]``: the inverse of ``Patch`` (channel-major groups back into time)."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: Tensor) -> Tensor:
        batch, frames, width = x.shape
        grouped = x.reshape(batch, frames, width // self.patch_size, self.patch_size)  # [B, N, C, h]
        return grouped.transpose(2, 3).reshape(batch, frames * self.patch_size, width // self.patch_size)


def decoder_stages(config: MossConfig) -> nn.ModuleList:
    if not config.has_decoder:
        raise ValueError("this MOSS config has no decoder (decoder_kwargs): it can tokenize but not reconstruct")
    return nn.ModuleList(
        Unpatch(stage.patch_size) if isinstance(stage, PatchConfig) else ProjectedTransformer(stage)
        for stage in config.decoder_stages
    )


def run_decoder(stages: nn.ModuleList, latent: Tensor) -> Tensor:
    """Quantised latent ``[B, T, output_dim]`` -> waveform ``[B, 1, T * hop]``."""
    x = latent
    for stage in stages:
        x = stage(x)
    return x.transpose(1, 2)
