"""Coarse spectral fingerprints and a shift-searching similarity, to find the same music under two ids.

A fingerprint is a log-frequency power spectrum (24 bins per octave, 100 Hz - 5 kHz) at a few frames
per second (0.5-s windows every 0.25 s by default) with four things taken out: the spectral envelope
(a moving average across half an octave: tilt, brightness and filter sweeps, which unrelated pieces
share), each bin's running mean over ``detrend_seconds`` (gain, EQ, codec and sample rate, and where a
track was cut: a loop cut from a longer piece has, away from its ends, the frames of the piece), each
frame's mean, and near-silent frames (zeroed: fades and gaps match any other fade). Frames are scaled
to unit length; what is left is which partials sound when: notes and chords.

Measured on the nine packages (README, "Real music corpus"): a log-mel version of this (64 bands, no
envelope removal) scored unrelated pairs up to 0.72 (two pieces whose highs come and go in the same
rhythm) against 0.80 for a remaster of one piece; removing the envelope brought unrelated pairs to
at most ~0.3 and kept the known duplicates at 0.73 and above.

``similarity(a, b)`` is the best mean frame cosine over any ``window_seconds`` stretch at any time
shift between the two: two tracks that share that much audio (one a loop, an intro-less edit, a
re-encode, a re-mix at another level, or a copy of the other) score near 1; unrelated music scores
low, since its frame-to-frame changes are unrelated. It does not look for the same piece played at
another tempo or pitch, or re-arranged.

The threshold (configs/corpus.yaml) and how it was set from the nine packages' pairs: see the README's
"Real music corpus"; ``OUT/summary.json`` keeps the closest pairs that were kept, ``OUT/similarity.png``
the distribution of all pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE
from training.dsp import fast_fft_length

_SUBFRAMES = 5  # sub-frames per fingerprint hop; a frame pools two hops of them (50 % overlap)
_N_FFT = 4096  # 5.9 Hz bins: a semitone apart at 100 Hz
_CHUNK = 1024  # sub-frames transformed at once: bounds memory on long tracks
_SILENCE = 1e-4  # frames 40 dB below the track's median loudness count as silence
_PROJECTED = 32  # dimensions of the random projection that ranks time shifts


@dataclass(frozen=True)
class FingerprintConfig:
    frames_per_second: float = 4.0
    bins_per_octave: int = 24
    f_min_hz: float = 100.0
    f_max_hz: float = 5000.0
    envelope_octaves: float = 0.5
    detrend_seconds: float = 8.0

    def tag(self) -> str:
        """Identifies the parameters in caches: fingerprints made with other ones are recomputed."""
        return "fp-v3:" + ":".join(str(value) for value in (
            self.frames_per_second, self.bins_per_octave, self.f_min_hz, self.f_max_hz, self.envelope_octaves, self.detrend_seconds))


def log_frequency_filterbank(bins_per_octave: int, f_min_hz: float, f_max_hz: float, n_fft: int, sr: int) -> np.ndarray:
    """Triangular filters centred ``1 / bins_per_octave`` octave apart, each summing to 1: ``[n_fft // 2 + 1, bins]``."""
    count = int(np.floor(np.log2(f_max_hz / f_min_hz) * bins_per_octave)) + 1
    centres = f_min_hz * 2.0 ** (np.arange(count) / bins_per_octave)
    lower, upper = centres * 2.0 ** (-1 / bins_per_octave), centres * 2.0 ** (1 / bins_per_octave)
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)[None, :]
    rising = (freqs - lower[:, None]) / (centres - lower)[:, None]
    falling = (upper[:, None] - freqs) / (upper - centres)[:, None]
    bank = np.maximum(0.0, np.minimum(rising, falling))
    return (bank / np.maximum(bank.sum(axis=1, keepdims=True), 1e-12)).T.astype(np.float32)


def fingerprint(x: np.ndarray, cfg: FingerprintConfig, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``[T, bins]`` float32 unit rows (zero rows where nothing changes, e.g. digital silence)."""
    hop = int(round(sr / (cfg.frames_per_second * _SUBFRAMES)))
    x = np.asarray(x, dtype=np.float32)
    n_sub = 1 + (x.size - _N_FFT) // hop if x.size >= _N_FFT else 1
    padded = np.pad(x, (0, max(0, (n_sub - 1) * hop + _N_FFT - x.size)))
    window = np.hanning(_N_FFT).astype(np.float32)
    bank = log_frequency_filterbank(cfg.bins_per_octave, cfg.f_min_hz, cfg.f_max_hz, _N_FFT, sr)
    power = np.empty((n_sub, bank.shape[1]), dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::hop]
    for start in range(0, n_sub, _CHUNK):
        spectrum = np.fft.rfft(frames[start : start + _CHUNK] * window, axis=1)
        power[start : start + _CHUNK] = (spectrum.real**2 + spectrum.imag**2) @ bank
    # Pool sub-frames into overlapping frames: a copy offset by half a hop still lands on similar frames.
    cumulative = np.concatenate((np.zeros((1, power.shape[1])), np.cumsum(power, axis=0)))
    starts = np.arange(0, max(n_sub - _SUBFRAMES, 0) + 1, _SUBFRAMES)
    ends = np.minimum(starts + 2 * _SUBFRAMES, n_sub)
    pooled = (cumulative[ends] - cumulative[starts]) / (ends - starts)[:, None]
    # A floor relative to the track's own level keeps gain changes from altering the quiet passages.
    loudness = pooled.mean(axis=1)
    reference = max(float(np.median(loudness)), 1e-20)
    log_power = np.log(pooled + 1e-6 * reference)
    # The spectral envelope (a moving average across frequency) goes: filter sweeps, brightness and
    # tilt, which unrelated pieces share, drop out; partials, that is notes and chords, stay.
    width = max(1, int(round(cfg.envelope_octaves * cfg.bins_per_octave / 2)))
    features = log_power - _running_mean(log_power.T, 2 * width).T
    features -= _running_mean(features, int(round(cfg.detrend_seconds * cfg.frames_per_second)))
    features -= features.mean(axis=1, keepdims=True)
    # Near-silence (fades, gaps) carries no content but would match any other near-silence.
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
    projection = _projection(a.shape[1])
    return _best_window(a, b, _spectrum(a, size, projection), _spectrum(b, size, projection), size, window_frames, candidate_shifts)


def similarity_matrix(
    fingerprints: list[np.ndarray],
    window_frames: int,
    candidate_shifts: int = 16,
    progress: bool = True,
    known: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``similarity`` of every pair: symmetric ``[N, N]`` scores (1 on the diagonal) and shifts
    (``shifts[i, j]``: ``fingerprints[i][k]`` lines up with ``fingerprints[j][k + shift]``).

    ``known``: (scores, shifts) from an earlier run, NaN where a pair still has to be compared.
    """
    count = len(fingerprints)
    scores, shifts = np.eye(count), np.zeros((count, count), dtype=np.int64)
    if known is not None:
        done = np.isfinite(known[0])
        scores[done], shifts[done] = known[0][done], known[1][done]
    else:
        done = np.zeros((count, count), dtype=bool)
    pairs = [(i, j) for i in range(count) for j in range(i + 1, count) if not done[i, j]]
    if not pairs:
        return scores, shifts
    longest = sorted(fp.shape[0] for fp in fingerprints)[-2:]
    size = fast_fft_length(sum(longest) - 1)  # one size fits every pair: each spectrum computed once
    projection = _projection(fingerprints[0].shape[1])
    needed = sorted({index for pair in pairs for index in pair})
    spectra = {index: _spectrum(fingerprints[index], size, projection) for index in needed}
    for i, j in tqdm(pairs, desc="compare", unit="pair", disable=not progress, mininterval=1.0):
        score, shift = _best_window(fingerprints[i], fingerprints[j], spectra[i], spectra[j], size, window_frames, candidate_shifts)
        scores[i, j] = scores[j, i] = score
        shifts[i, j], shifts[j, i] = shift, -shift
    return scores, shifts


def _projection(dims: int) -> np.ndarray:
    """A fixed random projection: whole-overlap correlations only rank shifts, and in 32 dimensions
    they are nearly the same (Johnson-Lindenstrauss) at a fraction of the memory for every spectrum."""
    if dims <= _PROJECTED:
        return np.eye(dims, dtype=np.float32)
    return (np.random.default_rng(0).standard_normal((dims, _PROJECTED)) / np.sqrt(_PROJECTED)).astype(np.float32)


def _spectrum(fp: np.ndarray, size: int, projection: np.ndarray) -> np.ndarray:
    return np.fft.rfft(fp @ projection, size, axis=0).astype(np.complex64)


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
