"""A noisy query as a listener records it: an excerpt of a catalog track from any sample offset, degraded.

Used where a served catalog is queried with real audio (the demo, the pipeline's smoke step).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training.audio_io import SAMPLE_RATE, load_audio
from training.augment import degrade


def noisy_excerpt(audio_root: Path, track_ids: list[str], seconds: float, condition: str, seed: int) -> tuple[str, np.ndarray]:
    """``seconds`` from a random sample offset of a random track of ``track_ids``, degraded by ``condition``.

    Any offset, as a user records a track wherever it is playing: no alignment to the tokenizer's frame grid
    or to where the catalog's windows start.
    """
    rng = np.random.default_rng(seed)
    track_id = track_ids[int(rng.integers(len(track_ids)))]
    audio = load_audio(audio_root / f"{track_id}.wav")
    size = int(seconds * SAMPLE_RATE)
    offset = int(rng.integers(0, max(audio.size - size, 0) + 1))
    return track_id, degrade(audio[offset : offset + size], condition, rng)
