"""Audio-level degradations that model how a query is really heard: noise, rooms, microphones, codecs, dropouts.

Used twice: ``random_view`` makes the degraded views that are tokenised for contrastive training,
and ``degrade`` applies the fixed evaluation conditions. Every function takes its randomness from
the caller's ``np.random.Generator`` (reproducible views), returns float32 of the input's length,
finite and within [-1, 1]. Where a result would exceed full scale the whole clip is scaled down,
never clipped, so an SNR that was set stays exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from common.audio import fit_peak
from training.audio_io import SAMPLE_RATE
from training.dsp import GainCurve, band_pass, bump, db_to_gain, fft_convolve, power_law, rms, spectral_gain
from training.noise import NOISE_KINDS, make_noise
from training.reencode import ogg_roundtrip

CONDITIONS = ("clean", "snr20", "snr10", "snr5", "snr0", "reverb", "eq")
# A noise kind of training views that no generator makes: other tracks' audio, from the caller's source.
TRACK_BABBLE = "tracks"
EQ_KINDS = ("phone", "laptop")

# (samples, rng) -> unit-RMS noise: how a view gets a babble of other tracks (training.view_synth)
NoiseSource = Callable[[int, np.random.Generator], np.ndarray]


@dataclass
class AugmentConfig:
    """Probabilities and ranges of one random view's degradations, each drawn independently per view.

    Applied in the order sound travels: room, ambient noise (coloured, synthetic voices, or a babble of
    other tracks), microphone, input level, lossy re-encoding, transmission dropouts.
    """

    reverb_prob: float = 0.4
    rt60_s: tuple[float, float] = (0.2, 1.0)
    noise_prob: float = 0.8
    snr_db: tuple[float, float] = (-5.0, 20.0)
    noise_kinds: tuple[str, ...] = (*NOISE_KINDS, TRACK_BABBLE)
    eq_prob: float = 0.4
    eq_kinds: tuple[str, ...] = EQ_KINDS
    gain_db: tuple[float, float] = (-12.0, 3.0)
    ogg_prob: float = 0.3
    ogg_quality: tuple[float, float] = (0.0, 0.3)  # Vorbis quality: 0 is about 30 kb/s for 24 kHz mono
    dropout_prob: float = 0.25
    dropouts: tuple[int, int] = (1, 4)  # gaps per view, inclusive
    dropout_ms: tuple[float, float] = (20.0, 200.0)

    def __post_init__(self) -> None:
        known = (*NOISE_KINDS, TRACK_BABBLE)
        if not self.noise_kinds or set(self.noise_kinds) - set(known):
            raise ValueError(f"noise_kinds must be a non-empty subset of {known}, got {self.noise_kinds}")
        if not self.eq_kinds or set(self.eq_kinds) - set(EQ_KINDS):
            raise ValueError(f"eq_kinds must be a non-empty subset of {EQ_KINDS}, got {self.eq_kinds}")
        for name in ("rt60_s", "snr_db", "gain_db", "ogg_quality", "dropouts", "dropout_ms"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: range ({low}, {high}) has low > high")
        for name in ("reverb_prob", "noise_prob", "eq_prob", "ogg_prob", "dropout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled to exactly ``snr_db`` below the clip's mean power.

    A silent clip (or silent noise) has no defined SNR and is returned unchanged.
    """
    x = _signal(x)
    power, noise_power = float(np.mean(np.square(x, dtype=np.float64))), float(np.mean(np.square(noise, dtype=np.float64)))
    if power == 0.0 or noise_power == 0.0:
        return x.astype(np.float32)
    return _finish(x + np.asarray(noise, dtype=np.float64) * np.sqrt(power / noise_power / 10.0 ** (snr_db / 10.0)))


def add_noise(x: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mix in generated ``kind`` noise (one of ``NOISE_KINDS``) at exactly ``snr_db`` (``mix_at_snr``)."""
    return mix_at_snr(x, make_noise(kind, _signal(x).size, rng, sr), snr_db)


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


def draw_phone_curve(rng: np.random.Generator) -> GainCurve:
    """A small loudspeaker or phone line's response: band-limited to ~300-3400 Hz with a random spectral
    tilt and one resonance (in-band gain within a few dB of unity)."""
    low, high = rng.uniform(250.0, 400.0), rng.uniform(3000.0, 3600.0)
    tilt, centre, boost = rng.uniform(-0.3, 0.3), rng.uniform(800.0, 2500.0), rng.uniform(2.0, 8.0)

    def curve(freqs: np.ndarray) -> np.ndarray:
        return band_pass(freqs, low, high, order=4) * power_law(freqs, tilt) * bump(freqs, centre, 0.3, boost)

    return curve


def draw_laptop_curve(rng: np.random.Generator) -> GainCurve:
    """A laptop's built-in microphone: thin bass (high-pass at 100-250 Hz), dull top (low-pass at 7-11 kHz),
    a resonance of the casing and a notch from the mic port's comb filtering."""
    low, high = rng.uniform(100.0, 250.0), rng.uniform(7000.0, 11000.0)
    resonance, boost = rng.uniform(1500.0, 5000.0), rng.uniform(3.0, 8.0)
    notch, depth = rng.uniform(2000.0, 6000.0), rng.uniform(-12.0, -4.0)

    def curve(freqs: np.ndarray) -> np.ndarray:
        return band_pass(freqs, low, high, order=2) * bump(freqs, resonance, 0.4, boost) * bump(freqs, notch, 0.1, depth)

    return curve


def draw_speaker_drive(rng: np.random.Generator) -> float:
    """How hard a phone's small speaker is overdriven (``soft_clip``)."""
    return float(rng.uniform(0.5, 2.0))


def soft_clip(y: np.ndarray, drive: float) -> np.ndarray:
    """Peak-relative tanh drive: every clip gets some distortion whatever its level, and the peak stays put."""
    peak = float(np.max(np.abs(y)))
    return peak * np.tanh(drive * y / peak) / np.tanh(drive) if peak > 0 else y


def phone_eq(x: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``draw_phone_curve``, then soft-clipped as an overdriven small speaker."""
    y = spectral_gain(_signal(x).astype(np.float64), draw_phone_curve(rng), sr)
    return _finish(soft_clip(y, draw_speaker_drive(rng)) if np.any(y) else y)


def laptop_eq(x: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``draw_laptop_curve`` applied."""
    return _finish(spectral_gain(_signal(x).astype(np.float64), draw_laptop_curve(rng), sr))


def apply_dropouts(x: np.ndarray, rng: np.random.Generator, count: int, ms: tuple[float, float], sr: int = SAMPLE_RATE) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Silence ``count`` gaps of ``ms`` milliseconds (a network or Bluetooth dropout); returns the clip and each (start, length)."""
    y = _signal(x).astype(np.float32, copy=True)
    gaps = []
    for _ in range(count):
        length = min(int(rng.uniform(*ms) * sr / 1000.0), y.size)
        start = int(rng.integers(0, y.size - length + 1))
        y[start : start + length] = 0.0
        gaps.append((start, length))
    return y, gaps


def random_view(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None, track_babble: NoiseSource | None = None) -> tuple[np.ndarray, dict]:
    """One degraded view (see ``AugmentConfig`` for the order) and what was applied, as JSON-ready values.

    ``track_babble`` supplies the ``tracks`` noise kind; without it that kind is never drawn.
    """
    cfg = cfg or AugmentConfig()
    y = _signal(x)
    applied: dict = {}
    if rng.uniform() < cfg.reverb_prob:
        applied["rt60_s"] = float(rng.uniform(*cfg.rt60_s))
        y = apply_reverb(y, synthetic_rir(rng, applied["rt60_s"]))
    kinds = [k for k in cfg.noise_kinds if k != TRACK_BABBLE or track_babble is not None]
    if kinds and rng.uniform() < cfg.noise_prob:
        applied["noise"], applied["snr_db"] = str(rng.choice(kinds)), float(rng.uniform(*cfg.snr_db))
        noise = track_babble(y.size, rng) if applied["noise"] == TRACK_BABBLE else make_noise(applied["noise"], y.size, rng)
        y = mix_at_snr(y, noise, applied["snr_db"])
    if rng.uniform() < cfg.eq_prob:
        applied["eq"] = str(rng.choice(cfg.eq_kinds))
        y = phone_eq(y, rng) if applied["eq"] == "phone" else laptop_eq(y, rng)
    applied["gain_db"] = float(rng.uniform(*cfg.gain_db))
    y = apply_gain(y, applied["gain_db"])
    if rng.uniform() < cfg.ogg_prob:
        applied["ogg_quality"] = float(rng.uniform(*cfg.ogg_quality))
        y = ogg_roundtrip(y, applied["ogg_quality"])
    if rng.uniform() < cfg.dropout_prob:
        y, applied["dropouts"] = apply_dropouts(y, rng, int(rng.integers(cfg.dropouts[0], cfg.dropouts[1] + 1)), cfg.dropout_ms)
    return y.astype(np.float32, copy=False), applied


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
