"""Turn what a caller hands the client into the service's AUDIO tensor (24 kHz mono float32).

A file is decoded and resampled client-side with the project's audio decoding (common/audio.py:
soundfile + soxr; neither torch nor the training package). A 24 kHz mono float32 array is sent untouched:
the server validates it and its message (empty, NaN, too long, ...) reaches the caller as InvalidInput.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from client.errors import InvalidInput
from common.audio import SAMPLE_RATE, AudioError, load_audio, to_mono_24k

AudioLike = np.ndarray | str | Path


def prepare_audio(audio: AudioLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A path, or samples shaped [S] / [S, C] at ``sample_rate`` -> float32 [S'] at 24 kHz."""
    try:
        if isinstance(audio, (str, Path)):
            return load_audio(audio)
        array = np.asarray(audio)
        if array.ndim == 1 and array.dtype == np.float32 and sample_rate == SAMPLE_RATE:
            return array
        return to_mono_24k(array, sample_rate)
    except AudioError as error:
        raise InvalidInput(str(error)) from error
