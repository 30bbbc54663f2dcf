"""Reconstruction losses of the codec: multi-resolution STFT and multi-scale log-mel distances.

Both are computed in float32 (outside autocast): ``torch.stft`` has no bfloat16 path, and log
spectra of quiet passages need the range. The mel filterbank is built here (HTK mel scale,
triangular filters) so training needs nothing beyond torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from training.audio_io import SAMPLE_RATE


@dataclass(frozen=True)
class LossWeights:
    mel: float = 15.0
    stft: float = 1.0
    commitment: float = 0.25
    codebook: float = 1.0


def hz_to_mel(hz: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE, f_min: float = 0.0) -> Tensor:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters evenly spaced on the mel scale."""
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_mel = torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(sample_rate / 2))), n_mels + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def magnitude(x: Tensor, n_fft: int) -> Tensor:
    """|STFT| ``[B, F, frames]`` of ``[B, S]`` with a Hann window and hop n_fft / 4."""
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
    # The floor bounds d(log|X|)/d|X| where the reconstruction is near silent (at the start of training).
    return spec.abs().clamp_min(1e-5)


class ReconstructionLoss(torch.nn.Module):
    """``stft``: mean over resolutions of spectral convergence + log-magnitude L1;
    ``mel``: mean over scales of the L1 distance between log10 mel spectrograms."""

    def __init__(self, stft_sizes: tuple[int, ...] = (256, 512, 1024, 2048),
                 mel_scales: tuple[tuple[int, int], ...] = ((512, 40), (1024, 80), (2048, 160))) -> None:
        super().__init__()
        self.stft_sizes = stft_sizes
        self.mel_scales = mel_scales
        for n_fft, n_mels in mel_scales:
            self.register_buffer(f"mel_{n_fft}", mel_filterbank(n_fft, n_mels), persistent=False)

    def forward(self, reconstruction: Tensor, target: Tensor) -> dict[str, Tensor]:
        y, x = reconstruction.float().flatten(1), target.float().flatten(1)
        stft = reconstruction.new_zeros((), dtype=torch.float32)
        for n_fft in self.stft_sizes:
            my, mx = magnitude(y, n_fft), magnitude(x, n_fft)
            convergence = torch.linalg.vector_norm(mx - my, dim=(1, 2)) / torch.linalg.vector_norm(mx, dim=(1, 2)).clamp_min(1e-5)
            stft = stft + convergence.mean() + F.l1_loss(my.log(), mx.log())
        mel = reconstruction.new_zeros((), dtype=torch.float32)
        for n_fft, _ in self.mel_scales:
            bank = getattr(self, f"mel_{n_fft}")
            mel = mel + F.l1_loss(
                torch.log10((bank @ magnitude(y, n_fft)).clamp_min(1e-5)),
                torch.log10((bank @ magnitude(x, n_fft)).clamp_min(1e-5)),
            )
        return {"stft": stft / len(self.stft_sizes), "mel": mel / len(self.mel_scales)}


def log_mel_distance(reconstruction: Tensor, target: Tensor, n_fft: int = 1024, n_mels: int = 80) -> float:
    """One log10-mel L1 number for reports (the middle scale of the training loss)."""
    bank = mel_filterbank(n_fft, n_mels).to(target.device)
    y, x = reconstruction.float().flatten(1), target.float().flatten(1)
    return float(F.l1_loss(torch.log10((bank @ magnitude(y, n_fft)).clamp_min(1e-5)),
                           torch.log10((bank @ magnitude(x, n_fft)).clamp_min(1e-5))))


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB per item of ``[B, S]`` tensors (Le Roux et al., 2019)."""
    estimate = estimate.float() - estimate.float().mean(-1, keepdim=True)
    reference = reference.float() - reference.float().mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * reference
    return 10 * torch.log10(target.pow(2).sum(-1) / ((estimate - target).pow(2).sum(-1) + eps) + eps)


__all__ = ["LossWeights", "ReconstructionLoss", "log_mel_distance", "mel_filterbank", "si_sdr"]
