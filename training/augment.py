"""Audio-level degradations that model how a query is really heard: noise, rooms, phones, levels.

Used twice: ``random_view`` makes the augmented views that are tokenised for contrastive
training, and ``degrade`` applies the fixed evaluation conditions. Every function takes its
randomness from the caller's ``np.random.Generator`` (reproducible views), returns float32 of
the input's length, finite and within [-1, 1]. Where a result would exceed full scale the
whole clip is scaled down, never clipped, so an SNR that was set stays exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from training.audio_io import SAMPLE_RATE
from training.dsp import band_pass, bump, db_to_gain, fft_convolve, fit_peak, power_law, rms, spectral_gain
from training.noise import NOISE_KINDS, make_noise

CONDITIONS = ("clean", "snr20", "snr10", "snr5", "snr0", "reverb", "eq")


@dataclass
class AugmentConfig:
    """Probabilities and ranges of one random view; the defaults span quiet rooms to loud bars."""

    noise_prob: float = 0.8
    snr_db: tuple[float, float] = (0.0, 30.0)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    reverb_prob: float = 0.4
    rt60_s: tuple[float, float] = (0.2, 1.0)
    eq_prob: float = 0.3
    gain_db: tuple[float, float] = (-12.0, 3.0)
    offset_prob: float = 0.5
    max_offset_s: float = 0.25

    def __post_init__(self) -> None:
        unknown = sorted(set(self.noise_kinds) - set(NOISE_KINDS))
        if unknown or not self.noise_kinds:
            raise ValueError(f"noise_kinds must be a non-empty subset of {NOISE_KINDS}, got {self.noise_kinds}")
        for name in ("snr_db", "rt60_s", "gain_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: range ({low}, {high}) has low > high")


def add_noise(x: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mix in ``kind`` noise at exactly ``snr_db`` relative to the clip's mean power.

    A silent clip has no defined SNR and is returned unchanged.
    """
    x = _signal(x)
    power = float(np.mean(np.square(x)))
    if power == 0.0:
        return x.astype(np.float32)
    noise = make_noise(kind, x.size, rng, sr) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return _finish(x + noise)


def apply_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    """Change the level; a boost that would pass full scale is limited to a peak of 1."""
    return _finish(_signal(x) * db_to_gain(gain_db))


def synthetic_rir(rng: np.random.Generator, rt60_s: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A room impulse response of unit energy: direct path, sparse early reflections, diffuse tail.

    The tail is noise decaying by 60 dB over ``rt60_s`` and is darkened, since air and walls
    absorb highs faster than lows.
    """
    n = max(int(rt60_s * sr), int(0.05 * sr))
    t = np.arange(n) / sr
    rir = np.zeros(n)
    rir[0] = 1.0
    count = int(rng.integers(4, 11))
    delays = (rng.uniform(0.002, 0.05, count) * sr).astype(np.int64)
    np.add.at(rir, delays, rng.uniform(0.2, 0.7, count) * rng.choice((-1.0, 1.0), count))
    fade_in = np.clip((t - rng.uniform(0.005, 0.02)) / 0.01, 0.0, 1.0)
    tail = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / rt60_s) * fade_in
    tail = spectral_gain(tail, partial(band_pass, low_hz=0.0, high_hz=rng.uniform(3000, 8000), order=1), sr)
    # Direct-to-reverberant ratio of a listener a few metres from the source.
    drr_db = rng.uniform(-3.0, 6.0)
    rir += tail * np.sqrt(np.sum(np.square(rir)) / np.sum(np.square(tail)) / 10.0 ** (drr_db / 10.0))
    return rir / np.sqrt(np.sum(np.square(rir)))


def apply_reverb(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir`` (FFT), keep the input length and match the input's RMS level."""
    x = _signal(x)
    wet = fft_convolve(x.astype(np.float64), np.asarray(rir, dtype=np.float64))
    level = rms(wet)
    return _finish(wet * (rms(x) / level) if level > 0 else wet)


def phone_eq(x: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A small loudspeaker or phone line: band-limited to ~300-3400 Hz with a random spectral tilt
    and one resonance (in-band gain within a few dB of unity), then soft-clipped as an overdriven small speaker.
    """
    low, high = rng.uniform(250.0, 400.0), rng.uniform(3000.0, 3600.0)
    tilt, centre, boost = rng.uniform(-0.3, 0.3), rng.uniform(800.0, 2500.0), rng.uniform(2.0, 8.0)

    def curve(freqs: np.ndarray) -> np.ndarray:
        return band_pass(freqs, low, high, order=4) * power_law(freqs, tilt) * bump(freqs, centre, 0.3, boost)

    y = spectral_gain(_signal(x).astype(np.float64), curve, sr)
    peak = float(np.max(np.abs(y)))
    if peak > 0:
        # Peak-relative drive: every clip gets some distortion whatever its level, and the peak stays put.
        drive = rng.uniform(0.5, 2.0)
        y = peak * np.tanh(drive * y / peak) / np.tanh(drive)
    return _finish(y)


def time_offset(x: np.ndarray, rng: np.random.Generator, max_seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Shift the content by up to +-``max_seconds`` (delay or advance), zero-filling the gap."""
    x = _signal(x)
    shift = int(rng.integers(-int(max_seconds * sr), int(max_seconds * sr) + 1)) if max_seconds > 0 else 0
    shift = int(np.clip(shift, -x.size, x.size))
    out = np.zeros_like(x)
    if shift >= 0:
        out[shift:] = x[: x.size - shift]
    else:
        out[: x.size + shift] = x[-shift:]
    return out.astype(np.float32)


def random_view(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """One augmented view, in the order sound travels: shifted query, room, ambient noise, device, level."""
    cfg = cfg or AugmentConfig()
    y = _signal(x)
    if rng.uniform() < cfg.offset_prob:
        y = time_offset(y, rng, cfg.max_offset_s)
    if rng.uniform() < cfg.reverb_prob:
        y = apply_reverb(y, synthetic_rir(rng, rng.uniform(*cfg.rt60_s)))
    if rng.uniform() < cfg.noise_prob:
        y = add_noise(y, rng.uniform(*cfg.snr_db), str(rng.choice(cfg.noise_kinds)), rng)
    if rng.uniform() < cfg.eq_prob:
        y = phone_eq(y, rng)
    return apply_gain(y, rng.uniform(*cfg.gain_db))


def degrade(x: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """Evaluation condition ``condition`` (one of ``CONDITIONS``).

    ``snrN`` draws one noise kind per clip from all of ``NOISE_KINDS`` (babble included), so a
    test set is scored over a mix of noises, each at exactly N dB.
    """
    if condition == "clean":
        return _signal(x).astype(np.float32, copy=True)
    if condition.startswith("snr") and condition in CONDITIONS:
        return add_noise(x, float(condition[3:]), str(rng.choice(NOISE_KINDS)), rng)
    if condition == "reverb":
        return apply_reverb(x, synthetic_rir(rng, rng.uniform(0.4, 0.8)))
    if condition == "eq":
        return phone_eq(x, rng)
    raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def _signal(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    return x


def _finish(y: np.ndarray) -> np.ndarray:
    return fit_peak(np.asarray(y, dtype=np.float64)).astype(np.float32)
