"""The realistic query mix shared by perf_analyzer input data, locust users and the soak test.

A query is an excerpt of a generated catalog track (``training.music.synthesize_track``, the same
audio the served catalog was built from) of 1-30 s, log-uniformly distributed: most people hold
their phone up for a few seconds, a few for half a minute. An excerpt longer than the catalog's
tracks comes from a longer rendering of the same track (same music; only the room reverb of the
mastering is drawn anew, correlation 0.99 with the catalog audio). Each excerpt is heard under one
of the evaluation's listening conditions (clean, noise at 20..0 dB SNR, reverb, phone EQ). Mixes
are deterministic for a spec and cached as .npz, since rendering tracks takes about a second each.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.audio_io import SAMPLE_RATE
from training.augment import CONDITIONS, degrade
from training.music import synthesize_track
from training.synth import track_id

# Rendered audio and derived tensors: regenerable, so with the other generated artifacts (git-ignored).
DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "artifacts" / "benchmark_cache"


@dataclass(frozen=True)
class MixSpec:
    queries: int = 24
    seed: int = 0
    # The served catalog: `python -m training synth --tracks N --seconds S --seed SEED` (as `make demo`).
    catalog_tracks: int = 200
    catalog_seconds: float = 20.0
    catalog_seed: int = 42
    min_seconds: float = 1.0
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 < min_seconds <= max_seconds")
        if self.queries < 1 or self.catalog_tracks < 1:
            raise ValueError("queries and catalog_tracks must be >= 1")

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Query:
    track_id: str
    start_s: float
    condition: str
    audio: np.ndarray  # float32 [S] at 24 kHz

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


def _plan(spec: MixSpec) -> list[tuple[int, float, float, float, str]]:
    """(track index, rendered s, start s, length s, condition) per query, from the spec's seed alone."""
    rng = np.random.default_rng([spec.seed, 7])
    plan = []
    for _ in range(spec.queries):
        seconds = float(np.exp(rng.uniform(np.log(spec.min_seconds), np.log(spec.max_seconds))))
        rendered = spec.catalog_seconds if seconds <= spec.catalog_seconds else spec.max_seconds
        start = float(rng.uniform(0.0, rendered - seconds))
        plan.append((int(rng.integers(spec.catalog_tracks)), rendered, start, seconds, str(rng.choice(CONDITIONS))))
    return plan


def build_mix(spec: MixSpec) -> list[Query]:
    tracks: dict[tuple[int, float], np.ndarray] = {}
    queries = []
    for number, (index, rendered, start, seconds, condition) in enumerate(_plan(spec)):
        if (index, rendered) not in tracks:
            tracks[index, rendered] = synthesize_track(index, rendered, spec.catalog_seed)
        first = round(start * SAMPLE_RATE)
        excerpt = tracks[index, rendered][first : first + round(seconds * SAMPLE_RATE)]
        audio = degrade(excerpt, condition, np.random.default_rng([spec.seed, number]))
        queries.append(Query(track_id(index), start, condition, audio.astype(np.float32)))
    return queries


def load_mix(spec: MixSpec, cache_dir: Path | None = DEFAULT_CACHE) -> list[Query]:
    """``build_mix`` through an on-disk cache (None: no cache)."""
    path = cache_dir / f"query_mix-{spec.key()}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            return [Query(str(t), float(s), str(c), data[f"audio_{i}"])
                    for i, (t, s, c) in enumerate(zip(data["track_ids"], data["starts"], data["conditions"]))]
    queries = build_mix(spec)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp.npz")
        np.savez(temporary, track_ids=np.array([q.track_id for q in queries]), starts=np.array([q.start_s for q in queries]),
                 conditions=np.array([q.condition for q in queries]), **{f"audio_{i}": q.audio for i, q in enumerate(queries)})
        temporary.replace(path)
    return queries
