"""Lossy re-encoding of a clip, as audio passed through a streaming service or a messaging app sounds.

libsndfile's Vorbis writer, in memory: no temporary files, same length out as in (the Ogg
granule positions trim the codec's padding, and the output is not delayed).
"""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from common.audio import fit_peak
from training.audio_io import SAMPLE_RATE, write_ogg


def ogg_roundtrip(x: np.ndarray, quality: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` encoded to Ogg Vorbis at ``quality`` (0 = lowest, about 30 kb/s for 24 kHz mono; 1 = highest) and decoded.

    Returns float32 of the input's length; a decoded peak above full scale scales the clip down.
    """
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty 1-D waveform, got shape {x.shape}")
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"quality must be in [0, 1], got {quality}")
    buffer = io.BytesIO()
    write_ogg(buffer, x, sr, compression_level=1.0 - quality)
    buffer.seek(0)
    y, _ = sf.read(buffer, dtype="float32")
    # libsndfile 1.2 returns exactly the frames written (checked for 1 to 77,777 samples); the trim/pad
    # keeps the length contract with a libsndfile that does not.
    y = np.pad(y[: x.size], (0, max(x.size - y.size, 0)))
    return fit_peak(y).astype(np.float32)
