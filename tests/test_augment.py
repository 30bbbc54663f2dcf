from __future__ import annotations

import numpy as np
import pytest

from training.audio_io import SAMPLE_RATE
from training.augment import (
    CONDITIONS,
    AugmentConfig,
    add_noise,
    apply_gain,
    apply_reverb,
    degrade,
    phone_eq,
    random_view,
    synthetic_rir,
)
from training.noise import NOISE_KINDS, make_noise

N = 2 * SAMPLE_RATE


def _music(seed: int = 0, level: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 330, 440, 660))
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def _tone(hz: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(N) / SAMPLE_RATE)).astype(np.float32)


def _check(y: np.ndarray, like: np.ndarray) -> None:
    assert y.dtype == np.float32 and y.shape == like.shape
    assert np.isfinite(y).all() and np.max(np.abs(y)) <= 1.0


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("snr_db", [0.0, 10.0])
@pytest.mark.parametrize("level", [0.05, 0.9])
def test_add_noise_hits_snr(kind: str, snr_db: float, level: float) -> None:
    x = _music(level=level)
    y = add_noise(x, snr_db, kind, np.random.default_rng(1))
    _check(y, x)
    # Same seed -> same noise; solve y = a*x + b*noise, which also covers the rescale of loud mixes.
    noise = make_noise(kind, N, np.random.default_rng(1))
    (a, b), *_ = np.linalg.lstsq(np.stack([x, noise], axis=1).astype(np.float64), y.astype(np.float64), rcond=None)
    measured = 10 * np.log10(np.mean(np.square(a * x.astype(np.float64))) / np.mean(np.square(b * noise)))
    assert abs(measured - snr_db) < 0.1


def _spectral_slope(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    band = (freqs > 100) & (freqs < 10_000)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0])


def test_noise_colours_have_expected_slope() -> None:
    slopes = {k: _spectral_slope(make_noise(k, N, np.random.default_rng(2))) for k in ("white", "pink", "brown", "blue")}
    assert abs(slopes["white"]) < 0.2
    assert slopes["brown"] < slopes["pink"] < -0.5
    assert slopes["blue"] > 0.5


def test_reverb_keeps_length_and_level() -> None:
    rng = np.random.default_rng(3)
    rir = synthetic_rir(rng, 0.6)
    assert rir.ndim == 1 and np.isclose(np.sum(rir**2), 1.0)
    x = _music(level=0.3)
    y = apply_reverb(x, rir)
    _check(y, x)
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) == pytest.approx(np.sqrt(np.mean(x.astype(np.float64) ** 2)), rel=0.01)


def test_phone_eq_is_band_limited() -> None:
    def level(hz: float) -> float:
        y = phone_eq(_tone(hz), np.random.default_rng(4))
        _check(y, _tone(hz))
        return float(np.sqrt(np.mean(np.square(y[4800:-4800], dtype=np.float64))))

    mid = level(1000)
    assert level(100) < 0.1 * mid
    assert level(8000) < 0.1 * mid


def test_gain() -> None:
    x = _music(level=0.4)
    np.testing.assert_allclose(apply_gain(x, -6.0), x * 10 ** (-6 / 20), rtol=1e-5)
    assert np.max(np.abs(apply_gain(x, 12.0))) == pytest.approx(1.0)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_degrade_covers_every_condition(condition: str) -> None:
    x = _music()
    y = degrade(x, condition, np.random.default_rng(6))
    _check(y, x)
    assert np.array_equal(x, y) == (condition == "clean")


def test_degrade_rejects_unknown_condition() -> None:
    with pytest.raises(ValueError, match="snr3"):
        degrade(_music(), "snr3", np.random.default_rng(0))


def test_random_view_is_deterministic_per_seed() -> None:
    x = _music()
    cfg = AugmentConfig(noise_prob=1.0, reverb_prob=1.0, eq_prob=1.0, ogg_prob=1.0, dropout_prob=1.0)
    a, applied = random_view(x, np.random.default_rng(7), cfg)
    _check(a, x)
    assert {"rt60_s", "noise", "snr_db", "eq", "gain_db", "ogg_quality", "dropouts"} <= set(applied)
    assert applied["noise"] != "tracks"  # no babble source given: that kind is never drawn
    b, again = random_view(x, np.random.default_rng(7), cfg)
    np.testing.assert_array_equal(a, b)
    assert applied == again
    assert not np.array_equal(a, random_view(x, np.random.default_rng(8), cfg)[0])
    _check(random_view(x, np.random.default_rng(9))[0], x)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="noise_kinds"):
        AugmentConfig(noise_kinds=("traffic",))
    with pytest.raises(ValueError, match="eq_kinds"):
        AugmentConfig(eq_kinds=("radio",))
    with pytest.raises(ValueError, match="ogg_prob"):
        AugmentConfig(ogg_prob=1.5)
    with pytest.raises(ValueError, match="dropout_ms"):
        AugmentConfig(dropout_ms=(200.0, 20.0))
