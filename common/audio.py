"""Decoding audio into the one format the rest of the system uses: 24 kHz mono float32 in [-1, 1].

Everything downstream (MOSS encoder, augmentation, Triton ``AUDIO`` input) expects that format. The
conversions applied to get there:

- multichannel -> mono by the mean over channels (keeps the level of correlated content and
  cannot overflow, unlike a sum);
- any other sample rate -> resampled to 24 kHz with soxr 'HQ';
- clipping-safe: decoded float files may hold values beyond +-1 and resampling can overshoot
  near full-scale transients, so a clip whose peak exceeds 1 is scaled down as a whole rather
  than hard-clipped (scaling leaves the waveform shape, and so the codes, intact).

Below training, the client and the search API: each decodes the same way without importing the others.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 24_000


class AudioError(ValueError):
    """Audio that cannot be decoded or does not meet the input contract; the message says why."""


def fit_peak(x: np.ndarray, limit: float = 1.0) -> np.ndarray:
    """Scale the whole clip down if its peak exceeds ``limit`` (never up, never clip)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (limit / peak) if peak > limit else x


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``target_sr`` (see the module doc for the conversions)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    try:
        return to_mono_24k(samples, sample_rate, target_sr=target_sr)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from exc


def to_mono_24k(samples: np.ndarray, sample_rate: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """In-memory counterpart of ``load_audio``: ``[S]`` or soundfile's ``[S, C]`` -> float32 ``[S']``.

    Integer input is read as PCM full scale (int16 32767 -> ~1.0).
    """
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise AudioError(f"expected samples shaped [S] or [S, C], got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    if x.size == 0:
        raise AudioError("contains no samples")
    if sample_rate <= 0:
        raise AudioError(f"invalid sample rate {sample_rate}")
    if not np.isfinite(x).all():
        raise AudioError("contains NaN or infinite samples")
    if sample_rate != target_sr:
        x = soxr.resample(x, sample_rate, target_sr, quality="HQ").astype(np.float32, copy=False)
    return fit_peak(x).astype(np.float32, copy=False)
