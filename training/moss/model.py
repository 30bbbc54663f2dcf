"""MossEncoder: waveform -> residual-LFQ codes, the encode path of MOSS-Audio-Tokenizer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.moss.attention import AttentionFn
from training.moss.config import MossConfig, PatchConfig
from training.moss.quantizer import ResidualLFQ
from training.moss.transformer import Patch, ProjectedTransformer, SelfAttention


@dataclass(frozen=True)
class ParameterCounts:
    encoder: int
    quantizer: int
    quantizer_output_proj: int  # decoder-side projection, loaded but unused for codes

    @property
    def total(self) -> int:
        return self.encoder + self.quantizer


def validate_inputs(waveform: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """Check and normalise ``waveform`` to float32 ``[B, 1, S]`` and ``lengths`` to int64 ``[B]``."""
    if not isinstance(waveform, Tensor):
        raise ValueError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
    if waveform.dim() == 2:
        waveform = waveform.unsqueeze(1)
    if waveform.dim() != 3:
        raise ValueError(f"waveform must be [B, 1, S] or [B, S], got shape {tuple(waveform.shape)}")
    batch, channels, samples = waveform.shape
    if channels != 1:
        raise ValueError(f"waveform must be mono (C == 1), got {channels} channels in shape {tuple(waveform.shape)}")
    if batch == 0 or samples == 0:
        raise ValueError(f"empty waveform: shape {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be floating point, got {waveform.dtype}")
    if not bool(torch.isfinite(waveform).all()):
        raise ValueError("waveform contains NaN or inf")
    if lengths is None:
        return waveform.float(), torch.full((batch,), samples, dtype=torch.int64, device=waveform.device)
    if not isinstance(lengths, Tensor) or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError("lengths must be an integer torch.Tensor")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths must have shape [{batch}], got {tuple(lengths.shape)}")
    if bool((lengths <= 0).any()) or bool((lengths > samples).any()):
        raise ValueError(f"lengths must be in 1..{samples} (S), got {lengths.tolist()}")
    return waveform.float(), lengths.to(waveform.device, torch.int64)


class MossEncoder(nn.Module):
    def __init__(self, config: MossConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.ModuleList(
            Patch(stage.patch_size) if isinstance(stage, PatchConfig) else ProjectedTransformer(stage)
            for stage in config.stages
        )
        self.quantizer = ResidualLFQ(config.quantizer)

    def set_attention(self, attention: AttentionFn) -> None:
        """Swap the attention backend of every layer (e.g. a fused sliding-window kernel on GPU)."""
        for module in self.modules():
            if isinstance(module, SelfAttention):
                module.attention = attention

    def parameter_counts(self) -> ParameterCounts:
        return ParameterCounts(
            encoder=sum(p.numel() for p in self.encoder.parameters()),
            quantizer=sum(p.numel() for p in self.quantizer.parameters()),
            quantizer_output_proj=sum(p.numel() for p in self.quantizer.output_proj.parameters()),
        )

    def check_n_quantizers(self, n_quantizers: int | None) -> int:
        available = self.config.quantizer.num_quantizers
        if n_quantizers is None:
            return available
        if isinstance(n_quantizers, bool) or not isinstance(n_quantizers, int) or not 1 <= n_quantizers <= available:
            raise ValueError(f"n_quantizers must be an int in 1..{available}, got {n_quantizers!r}")
        return n_quantizers

    def encode(self, waveform: Tensor, lengths: Tensor, n_quantizers: int) -> tuple[Tensor, Tensor]:
        """Unchecked, traceable core: float32 ``[B, 1, S]`` + int64 ``[B]`` -> codes ``[B, Q, T]``, frame counts.

        S may be any length: the waveform is right-padded with zeros to a whole number of hops.
        """
        frame_counts = torch.div(lengths, self.config.hop, rounding_mode="floor")
        return self.quantizer(self.latent(waveform), frame_counts, n_quantizers), frame_counts

    def latent(self, waveform: Tensor) -> Tensor:
        """Encoder output ``[B, T, input_dim]`` of float ``[B, 1, S]``, right-padded with zeros to whole hops."""
        hop = self.config.hop
        x = waveform[:, 0]
        x = F.pad(x, (0, (hop - x.shape[-1] % hop) % hop))
        latent = x.unsqueeze(-1)  # [B, S, 1]: time-major with one channel
        for module in self.encoder:
            latent = module(latent)
        return latent

    def forward(
        self, waveform: Tensor, lengths: Tensor | None = None, n_quantizers: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Codes int64 ``[B, Q, T]`` (T = ceil(S / hop)) and valid frames int64 ``[B]`` (= lengths // hop).

        ``n_quantizers`` defaults to every level (32 for the official model); codes at
        frames >= frame_counts are junk.
        """
        n_quantizers = self.check_n_quantizers(n_quantizers)
        waveform, lengths = validate_inputs(waveform, lengths)
        return self.encode(waveform, lengths, n_quantizers)
