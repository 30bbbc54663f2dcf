from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.audio import SAMPLE_RATE, AudioError, load_audio, to_mono_24k
from training.audio_io import list_audio_files, validate_waveform, write_wav


def _stereo_tone(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.stack([left, 0.5 * left], axis=1).astype(np.float32)


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_load_resamples_and_downmixes(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(str(path), _stereo_tone(1.5, 44_100), 44_100, format=fmt)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size / SAMPLE_RATE - 1.5) < 0.01
    # Mean downmix of channels at 0.5 and 0.25 amplitude.
    assert np.max(np.abs(x[2400:-2400])) == pytest.approx(0.375, abs=0.03)


def test_to_mono_24k_in_memory_layouts() -> None:
    stereo = _stereo_tone(0.5, 48_000)
    assert to_mono_24k(stereo, 48_000).shape == (12_000,)
    assert to_mono_24k(stereo[:, 0], SAMPLE_RATE).shape == (24_000,)  # already 24 kHz: untouched length
    pcm = (stereo * 32767).astype(np.int16)
    assert np.max(np.abs(to_mono_24k(pcm, 48_000))) == pytest.approx(0.375, abs=0.02)


def test_over_full_scale_is_scaled_not_clipped() -> None:
    x = to_mono_24k(np.array([0.5, -2.0, 1.0], dtype=np.float32), SAMPLE_RATE)
    np.testing.assert_allclose(x, [0.25, -1.0, 0.5])


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
        lambda p: p.write_bytes(b""),
        lambda p: None,
    ],
    ids=["random-bytes", "empty", "missing"],
)
def test_unreadable_files_raise_with_path(tmp_path: Path, make) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(path)


def test_validate_waveform_errors() -> None:
    ok = np.zeros(SAMPLE_RATE, dtype=np.float32)
    assert validate_waveform(ok, max_seconds=2.0, min_seconds=0.5) is not None
    with pytest.raises(AudioError, match="empty"):
        validate_waveform(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="NaN"):
        validate_waveform(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(AudioError, match="1-D"):
        validate_waveform(np.zeros((2, 10), dtype=np.float32))
    with pytest.raises(AudioError, match="maximum 0.5 s"):
        validate_waveform(ok, max_seconds=0.5)
    with pytest.raises(AudioError, match="minimum 2 s"):
        validate_waveform(ok, min_seconds=2.0)


def test_write_wav_roundtrip_and_listing(tmp_path: Path) -> None:
    x = np.linspace(-1.0, 1.0, SAMPLE_RATE, dtype=np.float32)
    write_wav(tmp_path / "a" / "x.wav", x)
    (tmp_path / "notes.txt").write_text("not audio")
    sf.write(str(tmp_path / "b.FLAC"), x, SAMPLE_RATE)
    np.testing.assert_allclose(load_audio(tmp_path / "a" / "x.wav"), x, atol=1e-4)
    assert list_audio_files(tmp_path) == [tmp_path / "a" / "x.wav", tmp_path / "b.FLAC"]
    assert list_audio_files(tmp_path / "b.FLAC") == [tmp_path / "b.FLAC"]
    with pytest.raises(AudioError):
        list_audio_files(tmp_path / "nowhere")
