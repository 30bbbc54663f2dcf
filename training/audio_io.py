"""Checking and writing audio in the one format the rest of the system uses (decoding: common/audio.py).

``write_wav`` writes 16-bit PCM: half the size of float WAV for the generated catalog, and
its ~96 dB dynamic range is far below anything the encoder can resolve.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

# Decoding lives below training: the client and the search API share it without importing this package.
from common.audio import SAMPLE_RATE, AudioError, load_audio

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


def validate_waveform(
    x: np.ndarray, max_seconds: float | None = None, min_seconds: float = 0.0, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Check a decoded clip against the input contract and return it as contiguous float32."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise AudioError(f"expected a 1-D mono waveform, got shape {x.shape}")
    if x.size == 0:
        raise AudioError("empty waveform")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"expected float samples, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise AudioError("waveform contains NaN or infinite samples")
    seconds = x.size / sample_rate
    if seconds < min_seconds:
        raise AudioError(f"waveform is {seconds:.3f} s long, shorter than the minimum {min_seconds:g} s")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"waveform is {seconds:.3f} s long, longer than the maximum {max_seconds:g} s")
    return np.ascontiguousarray(x, dtype=np.float32)


def write_wav(path: str | Path, x: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically: a crash never leaves a truncated file that reruns would skip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_excerpt(path: str | Path, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``samples`` samples (float64) from a random offset of ``path``, zero-padded if the track is shorter.

    24 kHz mono files are read in part (a babble of several long tracks per query stays cheap); others are
    decoded whole and converted by ``load_audio`` first.
    """
    info = sf.info(str(path))
    if info.samplerate == SAMPLE_RATE and info.channels == 1:
        start = int(rng.integers(0, max(info.frames - samples, 0) + 1))
        audio, _ = sf.read(str(path), start=start, frames=samples, dtype="float64")
    else:
        whole = load_audio(path)
        start = int(rng.integers(0, max(whole.size - samples, 0) + 1))
        audio = whole[start : start + samples].astype(np.float64)
    return np.pad(audio, (0, samples - audio.size))


def list_audio_files(root: str | Path) -> list[Path]:
    """``root`` itself if it is an audio file, else every audio file below it (recursive, sorted)."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in AUDIO_EXTENSIONS:
            raise AudioError(f"{root}: not a known audio extension {AUDIO_EXTENSIONS}")
        return [root]
    if not root.is_dir():
        raise AudioError(f"{root}: no such file or folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


# libsndfile 1.2's Vorbis encoder crashes the process (SIGSEGV) on one long write (seen with 3 min of
# 24 kHz mono in a single sf.write); writing in blocks of this many samples encodes the same stream.
OGG_WRITE_BLOCK = 10 * SAMPLE_RATE
OGG_CODECS = ("vorbis", "opus")


def write_ogg(target, x: np.ndarray, sr: int = SAMPLE_RATE, compression_level: float = 0.7, codec: str = "vorbis") -> None:
    """Mono Ogg Vorbis or Opus to a path or a binary file object. libsndfile maps ``compression_level``
    (0..1) to Vorbis quality 1 - level, and to Opus bitrate falling with the level (0.94: about 22 kbit/s
    for 24 kHz mono music); Opus takes 8, 12, 16, 24 or 48 kHz only."""
    if codec not in OGG_CODECS:
        raise ValueError(f"codec {codec!r}: expected one of {OGG_CODECS}")
    x = np.asarray(x, dtype=np.float32)
    with sf.SoundFile(target, "w", sr, 1, format="OGG", subtype=codec.upper(), compression_level=compression_level) as handle:
        for start in range(0, x.size, OGG_WRITE_BLOCK):
            handle.write(x[start : start + OGG_WRITE_BLOCK])
