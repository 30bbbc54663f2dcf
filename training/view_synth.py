"""Training views that look like real queries: an excerpt anywhere in a track, degraded like a recording.

An excerpt starts at any sample (not on the tokenizer's 1,920-sample frame grid) and lasts
``min_s``..``max_s`` seconds; ``training.augment.random_view`` degrades it, with other tracks' audio
as one kind of background (a bar playing other music). Seeded per track, so a resumed or parallel run
makes the same views. NumPy only: this runs in the worker processes of ``python -m training views``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.audio_io import SAMPLE_RATE, load_audio, read_excerpt
from training.augment import AugmentConfig, NoiseSource, random_view
from training.dsp import db_to_gain, rms

# One tokenizer frame (1,920 samples, training.encode.HOP, not imported: that module loads torch).
_MIN_VIEW_S = 0.08


@dataclass
class ViewConfig:
    per_track: int = 6
    min_s: float = 1.0
    max_s: float = 10.0
    babble_tracks: tuple[int, int] = (2, 6)  # other tracks mixed into a ``tracks`` babble, inclusive
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.per_track < 1:
            raise ValueError(f"views.per_track must be at least 1, got {self.per_track}")
        if not _MIN_VIEW_S <= self.min_s <= self.max_s:
            raise ValueError(f"views need {_MIN_VIEW_S} s <= min_s <= max_s, got {self.min_s} and {self.max_s}")
        if not 1 <= self.babble_tracks[0] <= self.babble_tracks[1]:
            raise ValueError(f"views.babble_tracks must be a range of at least one track, got {self.babble_tracks}")


@dataclass(frozen=True)
class QueryView:
    offset: int  # first sample of the excerpt in the track
    waveform: np.ndarray  # the degraded excerpt (its length is the excerpt's)
    applied: dict  # what random_view did


def track_rng(seed: int, track_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, *track_id.encode("utf-8")])


def draw_excerpt(n_samples: int, cfg: ViewConfig, rng: np.random.Generator) -> tuple[int, int]:
    """(offset, length) in samples: a uniform length in [min_s, max_s] (at most the track) at a uniform sample offset."""
    length = min(int(rng.uniform(cfg.min_s, cfg.max_s) * SAMPLE_RATE), n_samples)
    return int(rng.integers(0, n_samples - length + 1)), length


def track_babble(paths: list[Path], count: tuple[int, int]) -> NoiseSource:
    """Babble of ``count`` (inclusive range) distinct tracks of ``paths``, each at a random offset and a level
    within 6 dB of the others, summed to unit RMS."""

    def source(samples: int, rng: np.random.Generator) -> np.ndarray:
        picks = rng.choice(len(paths), size=min(int(rng.integers(count[0], count[1] + 1)), len(paths)), replace=False)
        total = np.zeros(samples)
        for index in picks:
            excerpt = read_excerpt(paths[int(index)], samples, rng)
            level = rms(excerpt)
            if level > 0:
                total += excerpt / level * db_to_gain(rng.uniform(-6.0, 0.0))
        level = rms(total)
        return total / level if level > 0 else total

    return source


def make_views(audio: np.ndarray, cfg: ViewConfig, rng: np.random.Generator, babble: NoiseSource | None) -> list[QueryView]:
    views = []
    for _ in range(cfg.per_track):
        offset, length = draw_excerpt(audio.size, cfg, rng)
        waveform, applied = random_view(audio[offset : offset + length], rng, cfg.augment, babble)
        views.append(QueryView(offset, waveform, applied))
    return views


# The process pool's state: every worker gets the babble pool once, not with each task.
_BABBLE_PATHS: dict[str, Path] = {}


def init_worker(babble_paths: dict[str, Path]) -> None:
    _BABBLE_PATHS.clear()
    _BABBLE_PATHS.update(babble_paths)


def track_views(task: tuple[str, Path, ViewConfig, int]) -> tuple[str, list[QueryView]]:
    """Views of one track (a pool task); its babble mixes the pool's tracks other than itself."""
    track_id, path, cfg, seed = task
    others = [p for t, p in _BABBLE_PATHS.items() if t != track_id]
    return track_id, make_views(load_audio(path), cfg, track_rng(seed, track_id), track_babble(others, cfg.babble_tracks) if others else None)
