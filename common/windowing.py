"""Cut one query waveform into the MOSS encoder's input windows (the logic of the `audio_windows` model).

Short queries become one zero-padded row with its valid length; long ones become overlapping windows,
the last one aligned to the end so the tail is always covered.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 24_000
# The encoder's hop: every row is padded to a whole number of frames.
FRAME_SAMPLES = 1_920


class InvalidAudio(ValueError):
    pass


@dataclass(frozen=True)
class WindowParams:
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    window_seconds: float = 10.0
    hop_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if not 0 < self.hop_seconds <= self.window_seconds:
            raise ValueError(f"need 0 < hop_seconds <= window_seconds, got {self.hop_seconds}, {self.window_seconds}")

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> WindowParams:
        """From Triton model parameters MIN_SECONDS, MAX_SECONDS, WINDOW_SECONDS, HOP_SECONDS."""
        keys = {"min_seconds": "MIN_SECONDS", "max_seconds": "MAX_SECONDS",
                "window_seconds": "WINDOW_SECONDS", "hop_seconds": "HOP_SECONDS"}
        return cls(**{field: float(parameters[key]) for field, key in keys.items() if key in parameters})

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * SAMPLE_RATE)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_seconds * SAMPLE_RATE)


def padded_length(samples: int) -> int:
    return math.ceil(samples / FRAME_SAMPLES) * FRAME_SAMPLES


def window_starts(samples: int, window: int, hop: int) -> list[int]:
    if samples <= window:
        return [0]
    return [*range(0, samples - window, hop), samples - window]


def validate_audio(audio: np.ndarray, params: WindowParams) -> None:
    if audio.ndim != 1:
        raise InvalidAudio(f"AUDIO must be 1-D (24 kHz mono samples), got shape {list(audio.shape)}")
    if audio.dtype != np.float32:
        raise InvalidAudio(f"AUDIO must be float32, got {audio.dtype}")
    if audio.size == 0:
        raise InvalidAudio("AUDIO is empty")
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise InvalidAudio(f"AUDIO contains {bad} NaN or infinite samples")
    seconds = audio.size / SAMPLE_RATE
    if seconds < params.min_seconds:
        raise InvalidAudio(f"AUDIO is {seconds:.2f} s long; queries need at least {params.min_seconds:g} s at 24 kHz")
    if seconds > params.max_seconds:
        raise InvalidAudio(f"AUDIO is {seconds:.2f} s long; queries may be at most {params.max_seconds:g} s at 24 kHz")


def make_windows(audio: np.ndarray, params: WindowParams) -> tuple[np.ndarray, np.ndarray]:
    """WAVEFORM float32 [W, 1, S] (S a multiple of FRAME_SAMPLES) and LENGTHS int64 [W] (valid samples)."""
    validate_audio(audio, params)
    window = min(audio.size, params.window_samples)
    starts = window_starts(audio.size, window, params.hop_samples)
    waveform = np.zeros((len(starts), 1, padded_length(window)), dtype=np.float32)
    for row, start in enumerate(starts):
        waveform[row, 0, :window] = audio[start : start + window]
    return waveform, np.full(len(starts), window, dtype=np.int64)
