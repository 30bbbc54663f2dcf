"""Generated background noises: coloured noises and a babble of synthetic voices.

Every generator returns float64 noise of unit RMS, so callers set the level in one place
(``augment.add_noise``). Nothing is downloaded: babble is built from harmonic "voices" with
pitch contours, vowel-like formants and syllable-rate gating, which gives the speech-shaped,
fluctuating masker that real crowd noise is, without any speech corpus.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import soxr

from training.audio_io import SAMPLE_RATE
from training.dsp import band_pass, bump, fast_fft_length, oscillator, power_law, rms, spectral_gain, wavetable

# Amplitude-spectrum exponent per colour: power ~ f^(2 * exponent).
COLOUR_EXPONENTS = {"white": 0.0, "pink": -0.5, "brown": -1.0, "blue": 0.5}
NOISE_KINDS = (*COLOUR_EXPONENTS, "babble")

# Voices carry nothing above 4 kHz, so they are rendered at 12 kHz (half the work) and resampled.
_VOICE_SR = 12_000
# A glottal-pulse-like source: falling harmonics, 15 of them stay below 6 kHz for pitches up to ~380 Hz.
_GLOTTAL = wavetable(1.0 / np.arange(1, 16) ** 1.2)


def make_noise(kind: str, n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``n`` samples of unit-RMS noise of ``kind`` (one of ``NOISE_KINDS``)."""
    if kind == "babble":
        noise = babble(n, rng, sr)
    elif kind in COLOUR_EXPONENTS:
        noise = coloured_noise(n, COLOUR_EXPONENTS[kind], rng, sr)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    return _unit_rms(noise)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Gaussian noise whose amplitude spectrum follows ``f^exponent`` (flat below 20 Hz)."""
    white = rng.standard_normal(n)
    if exponent == 0.0:
        return white
    return spectral_gain(white, partial(power_law, exponent=exponent), sr)


def babble(n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE, voices: tuple[int, int] = (4, 8)) -> np.ndarray:
    """A crowd of ``voices`` (inclusive range) overlapping synthetic talkers."""
    # A 2-3-5-smooth length keeps the per-voice FFTs fast; the excess is cut after resampling.
    t = np.arange(fast_fft_length(int(np.ceil(n * _VOICE_SR / sr)) + 1)) / _VOICE_SR
    total = np.zeros(t.size)
    for _ in range(int(rng.integers(voices[0], voices[1] + 1))):
        total += _voice(t, rng, _VOICE_SR) * rng.uniform(0.5, 2.0)  # talkers at different distances
    out = soxr.resample(total, _VOICE_SR, sr, quality="HQ")
    return np.pad(out, (0, max(n - out.size, 0)))[:n]


def _voice(t: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    source = oscillator(_GLOTTAL, _pitch_phase(t, rng, sr) + rng.uniform())
    # Two vowel colourings cross-faded at about the syllable rate: formants move like speech.
    syllable_hz = rng.uniform(3.0, 6.0)
    vowel_a = spectral_gain(source, _vowel_curve(rng), sr)
    vowel_b = spectral_gain(source, _vowel_curve(rng), sr)
    mix = 0.5 + 0.5 * np.sin(2 * np.pi * (syllable_hz / 2) * t + rng.uniform(0, 2 * np.pi))
    return _unit_rms(vowel_a * mix + vowel_b * (1.0 - mix)) * _syllable_envelope(t, syllable_hz, rng)


def _pitch_phase(t: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Phase (cycles) of an intonation contour: random targets every ~0.3 s, +-4 semitones."""
    base_hz = rng.uniform(90.0, 250.0)
    knots = np.arange(0.0, t[-1] + 0.6, rng.uniform(0.2, 0.4)) if t.size else np.zeros(1)
    semitones = rng.uniform(-4.0, 4.0, knots.size)
    f0 = base_hz * 2.0 ** (np.interp(t, knots, semitones) / 12.0)
    return np.cumsum(f0) / sr


def _vowel_curve(rng: np.random.Generator):
    f1, f2, f3 = rng.uniform(300, 900), rng.uniform(900, 2500), rng.uniform(2500, 3500)

    def curve(freqs: np.ndarray) -> np.ndarray:
        shape = band_pass(freqs, 150.0, 4000.0, order=3)
        for centre, gain in ((f1, 12.0), (f2, 9.0), (f3, 6.0)):
            shape = shape * bump(freqs, centre, 0.15, gain)
        return shape

    return curve


def _syllable_envelope(t: np.ndarray, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Half-sine bumps of jittered length and loudness, with ~20% silent gaps (pauses between words)."""
    mean_s = 1.0 / rate_hz
    count = int(t[-1] / (0.5 * mean_s)) + 2 if t.size else 1
    durations = mean_s * rng.uniform(0.5, 1.5, count)
    starts = np.concatenate(([0.0], np.cumsum(durations)[:-1])) - rng.uniform(0, mean_s)
    loudness = rng.uniform(0.4, 1.0, count) * (rng.uniform(size=count) > 0.2)
    which = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, count - 1)
    position = np.clip((t - starts[which]) / durations[which], 0.0, 1.0)
    return loudness[which] * np.sin(np.pi * position)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    level = rms(x)
    return x / level if level > 0 else x
