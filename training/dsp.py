"""Small numpy DSP building blocks shared by the music generator, the noises and the augmentations.

All filtering is done in the FFT domain on the whole clip: clips are at most tens of seconds,
one FFT is cheaper than any per-sample recursion in Python, and it needs no scipy.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

GainCurve = Callable[[np.ndarray], np.ndarray]
WAVETABLE_SIZE = 4096  # power of two: phase wrap-around is a bit mask
_CURVE_POINTS = 8193


def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 20.0)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def audible_seconds(x: np.ndarray, sr: int, range_db: float = 50.0, floor_dbfs: float = -70.0, block_s: float = 0.1) -> float:
    """From the first to the last ``block_s`` block within ``range_db`` of the loudest one and above
    ``floor_dbfs``: a jingle padded with silence to a round length counts by its sound, not its file,
    and a file of near-silence (dither at -100 dBFS) by nothing."""
    block = max(1, int(round(block_s * sr)))
    usable = x.size // block * block
    if usable == 0:
        return 0.0
    power = np.mean(np.square(x[:usable].reshape(-1, block), dtype=np.float64), axis=1)
    threshold = max(power.max() * 10.0 ** (-range_db / 10.0), 10.0 ** (floor_dbfs / 10.0))
    audible = np.flatnonzero(power >= threshold)
    if audible.size == 0:
        return 0.0
    return float((audible[-1] - audible[0] + 1) * block / sr)


def spectral_gain(x: np.ndarray, curve: GainCurve, sr: int) -> np.ndarray:
    """Filter ``x`` by the real magnitude response ``curve(frequencies_hz)`` (zero phase, circular)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, d=1.0 / sr)
    if freqs.size > _CURVE_POINTS:
        # Responses are smooth: sampling them every ~1.5 Hz and interpolating is exact enough and,
        # for long clips, several times cheaper than evaluating them at every FFT bin.
        grid = np.linspace(0.0, sr / 2.0, _CURVE_POINTS)
        response = np.interp(freqs, grid, curve(grid))
    else:
        response = curve(freqs)
    return np.fft.irfft(spectrum * response, n=x.size)


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution of ``x`` with ``h``, truncated to ``len(x)`` (the causal part that overlaps x)."""
    size = fast_fft_length(x.size + h.size - 1)
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)
    return y[: x.size]


def fast_fft_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: as fast as a power of two, but up to ~2x shorter to transform."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            quotient = -(-n // power35)
            best = min(best, power35 << max(quotient - 1, 0).bit_length())
            power35 *= 3
        power5 *= 5
    return best


def power_law(freqs: np.ndarray, exponent: float, floor_hz: float = 20.0, ref_hz: float = 1000.0) -> np.ndarray:
    """Amplitude ``(f / ref)^exponent``, flat below ``floor_hz`` so coloured noise keeps its energy audible."""
    return (np.maximum(freqs, floor_hz) / ref_hz) ** exponent


def band_pass(freqs: np.ndarray, low_hz: float, high_hz: float, order: int = 4) -> np.ndarray:
    """Butterworth-shaped magnitude: high-pass at ``low_hz`` times low-pass at ``high_hz``."""
    f = np.maximum(freqs, 1e-3)
    high = 1.0 / np.sqrt(1.0 + (low_hz / f) ** (2 * order)) if low_hz > 0 else 1.0
    low = 1.0 / np.sqrt(1.0 + (f / high_hz) ** (2 * order)) if np.isfinite(high_hz) else 1.0
    return high * low


def bump(freqs: np.ndarray, center_hz: float, width_octaves: float, gain_db: float) -> np.ndarray:
    """A resonance: Gaussian in log-frequency, ``gain_db`` at ``center_hz``, 1.0 far away."""
    octaves = np.log2(np.maximum(freqs, 1.0) / center_hz)
    return db_to_gain(gain_db * np.exp(-0.5 * (octaves / width_octaves) ** 2))


def wavetable(harmonic_amps: np.ndarray, size: int = WAVETABLE_SIZE) -> np.ndarray:
    """One cycle of sum_k amps[k-1] * sin(2 pi k t), peak-normalised; the timbre of an oscillator."""
    spectrum = np.zeros(size // 2 + 1, dtype=np.complex128)
    spectrum[1 : harmonic_amps.size + 1] = -1j * np.asarray(harmonic_amps) * (size / 2)
    cycle = np.fft.irfft(spectrum, size)
    return cycle / np.max(np.abs(cycle))


def oscillator(table: np.ndarray, phase_cycles: np.ndarray) -> np.ndarray:
    """Read ``table`` at ``phase_cycles`` (in cycles, any range): nearest sample of a 4096-point table."""
    index = (phase_cycles * table.size).astype(np.int64) & (table.size - 1)
    return table[index]
