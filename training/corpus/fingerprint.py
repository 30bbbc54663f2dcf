"""Coarse spectral fingerprints and a shift-searching similarity, to find the same music under two ids.

A fingerprint is a log-mel sequence at a few frames per second (0.5-s windows every 0.25 s by
default), with each band's running mean over ``detrend_seconds`` removed and every frame scaled to
unit length. Removing the running mean makes it blind to gain, EQ, codec and sample-rate changes,
and to where a track was cut: a loop cut from a longer piece has, away from its ends, the same
frames as the piece. What is left is how the spectrum moves: notes, chords, hits.

``similarity(a, b)`` is the best mean frame cosine over any ``window_seconds`` stretch at any time
shift between the two: two tracks that share that much audio (one a loop, an intro-less edit, a
re-encode, a re-mix at another level, or a copy of the other) score near 1; unrelated music scores
near 0, since its frame-to-frame changes are uncorrelated.

Threshold (configs/corpus.yaml), measured on the nine packages (``OUT/summary.json`` keeps the
closest pairs kept, ``OUT/similarity.png`` the distribution): see the README's "Real music corpus".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE
from training.dsp import fast_fft_length

_SUBFRAMES = 5  # sub-frames per fingerprint hop; a frame pools two hops of them (50 % overlap)
_N_FFT = 2048
_CHUNK = 2048  # sub-frames transformed at once: bounds memory on long tracks
_SILENCE = 1e-4  # frames 40 dB below the track's median loudness count as silence


@dataclass(frozen=True)
class FingerprintConfig:
    frames_per_second: float = 4.0
    n_mels: int = 64
    f_min_hz: float = 60.0
    f_max_hz: float = 8000.0
    detrend_seconds: float = 8.0

    def tag(self) -> str:
        """Identifies the parameters in caches: fingerprints made with other ones are recomputed."""
        return f"fp-v2:{self.frames_per_second}:{self.n_mels}:{self.f_min_hz}:{self.f_max_hz}:{self.detrend_seconds}"


def mel_filterbank(n_mels: int, f_min_hz: float, f_max_hz: float, n_fft: int, sr: int) -> np.ndarray:
    """Triangular filters evenly spaced on the HTK mel scale, ``[n_fft // 2 + 1, n_mels]``."""
    def to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    edges_mel = np.linspace(to_mel(np.array(f_min_hz)), to_mel(np.array(f_max_hz)), n_mels + 2)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


def fingerprint(x: np.ndarray, cfg: FingerprintConfig, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``[T, n_mels]`` float32 unit rows (zero rows where nothing changes, e.g. digital silence)."""
    hop = int(round(sr / (cfg.frames_per_second * _SUBFRAMES)))
    x = np.asarray(x, dtype=np.float32)
    n_sub = max(1, 1 + (x.size - _N_FFT) // hop) if x.size >= _N_FFT else 1
    padded = np.pad(x, (0, max(0, (n_sub - 1) * hop + _N_FFT - x.size)))
    window = np.hanning(_N_FFT).astype(np.float32)
    bank = mel_filterbank(cfg.n_mels, cfg.f_min_hz, cfg.f_max_hz, _N_FFT, sr)
    mel = np.empty((n_sub, cfg.n_mels), dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::hop]
    for start in range(0, n_sub, _CHUNK):
        spectrum = np.fft.rfft(frames[start : start + _CHUNK] * window, axis=1)
        mel[start : start + _CHUNK] = (spectrum.real**2 + spectrum.imag**2) @ bank
    # Pool sub-frames into overlapping frames: a copy offset by half a hop still lands on similar frames.
    cumulative = np.concatenate((np.zeros((1, cfg.n_mels)), np.cumsum(mel, axis=0)))
    starts = np.arange(0, max(n_sub - _SUBFRAMES, 0) + 1, _SUBFRAMES)
    ends = np.minimum(starts + 2 * _SUBFRAMES, n_sub)
    pooled = (cumulative[ends] - cumulative[starts]) / (ends - starts)[:, None]
    # A floor relative to the track's own level keeps gain changes from altering the quiet passages.
    loudness = pooled.mean(axis=1)
    reference = max(float(np.median(loudness)), 1e-20)
    log_mel = np.log(pooled + 1e-6 * reference)
    features = log_mel - _running_mean(log_mel, int(round(cfg.detrend_seconds * cfg.frames_per_second)))
    # Without each frame's mean over bands, frames compare by spectral shape: the loudness pulse of a
    # beat, which any two rhythmic pieces share, drops out.
    features -= features.mean(axis=1, keepdims=True)
    # Near-silence (fades, gaps) carries no content but would turn into the negative of the running
    # mean, a shape every track shares: such frames are zero, matching nothing.
    features[loudness < _SILENCE * reference] = 0.0
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return np.where(norms > 1e-6, features / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def _running_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` frames along axis 0, over fewer frames at the ends."""
    half = max(width // 2, 1)
    cumulative = np.concatenate((np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)))
    index = np.arange(x.shape[0])
    lo, hi = np.maximum(index - half, 0), np.minimum(index + half + 1, x.shape[0])
    return (cumulative[hi] - cumulative[lo]) / (hi - lo)[:, None]


def similarity(a: np.ndarray, b: np.ndarray, window_frames: int, candidate_shifts: int = 16) -> tuple[float, int]:
    """Best mean frame cosine over ``window_frames`` consecutive aligned frames, over time shifts.

    Returns (similarity, shift): frame ``a[i]`` lines up with ``b[i + shift]``. The window shrinks
    to the shorter sequence when that is shorter; frames outside the overlap count as 0. Only the
    ``candidate_shifts`` shifts with the largest whole-overlap correlation (all of them, found at
    once with an FFT) are searched for their best window: shared audio of a window's length lifts
    its shift's total far above the others, and checking every window at every shift costs ~20x more.
    """
    size = fast_fft_length(a.shape[0] + b.shape[0] - 1)
    return _best_window(a, b, _spectrum(a, size), _spectrum(b, size), size, window_frames, candidate_shifts)


def similarity_matrix(
    fingerprints: list[np.ndarray], window_frames: int, candidate_shifts: int = 16, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``similarity`` of every pair: symmetric ``[N, N]`` scores (1 on the diagonal) and shifts
    (``shifts[i, j]``: ``fingerprints[i][k]`` lines up with ``fingerprints[j][k + shift]``)."""
    count = len(fingerprints)
    scores, shifts = np.eye(count), np.zeros((count, count), dtype=np.int64)
    if count < 2:
        return scores, shifts
    longest = sorted(fp.shape[0] for fp in fingerprints)[-2:]
    size = fast_fft_length(sum(longest) - 1)  # one size fits every pair: each spectrum computed once
    spectra = [_spectrum(fp, size) for fp in fingerprints]
    pairs = [(i, j) for i in range(count) for j in range(i + 1, count)]
    for i, j in tqdm(pairs, desc="compare", unit="pair", disable=not progress, mininterval=1.0):
        score, shift = _best_window(fingerprints[i], fingerprints[j], spectra[i], spectra[j], size, window_frames, candidate_shifts)
        scores[i, j] = scores[j, i] = score
        shifts[i, j], shifts[j, i] = shift, -shift
    return scores, shifts


def _spectrum(fp: np.ndarray, size: int) -> np.ndarray:
    return np.fft.rfft(fp, size, axis=0).astype(np.complex64)


def _best_window(
    a: np.ndarray, b: np.ndarray, spectrum_a: np.ndarray, spectrum_b: np.ndarray, size: int, window_frames: int, candidates: int
) -> tuple[float, int]:
    n, m = a.shape[0], b.shape[0]
    window = max(1, min(window_frames, n, m))
    totals = np.fft.irfft(np.einsum("fk,fk->f", np.conj(spectrum_a), spectrum_b), size)  # index d or size + d for d < 0
    shifts = np.arange(-(n - 1), m)
    count = min(candidates, shifts.size)
    chosen = shifts[np.argpartition(-totals[shifts % size], count - 1)[:count]]
    # The chosen diagonals, indexed by a's frame: [count, n], 0 where b has no frame to line up.
    partner = np.arange(n)[None, :] + chosen[:, None]
    inside = (partner >= 0) & (partner < m)
    diagonals = np.einsum("ik,sik->si", a, b[np.clip(partner, 0, m - 1)]) * inside
    cumulative = np.concatenate((np.zeros((count, 1)), np.cumsum(diagonals, axis=1, dtype=np.float64)), axis=1)
    windows = cumulative[:, window:] - cumulative[:, :-window]
    per_shift = windows.max(axis=1) / window
    # Ties (a track against itself, silence) go to the smallest shift, so results do not depend on order.
    order = np.lexsort((np.abs(chosen), -per_shift))
    return float(per_shift[order[0]]), int(chosen[order[0]])
