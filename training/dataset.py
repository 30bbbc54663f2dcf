"""Contrastive pairs shaped like the retrieval task, from offline-tokenised query views.

A view is an excerpt of a track, degraded like a real recording and tokenised on its own — exactly
how a live query reaches the encoder. Its positive is the catalog window (clean, whole-track tokens)
that contains it. Excerpts are tokenised alone because the encoder's causal context changes codes:
cropping a longer token sequence would teach the model codes that queries never produce.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE, load_audio
from training.encode import HOP
from training.token_files import TokenFile, load_tracks

CATALOG_TOKENIZE = ("whole", "alone")
# Windows tokenized alone are encoded in groups of at least this many: full batches, bounded memory.
_ENCODE_GROUP = 64

# waveforms -> their codes [Q, T_i], in order (training.encode.clip_encoder)
ClipEncoder = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class CatalogConfig:
    """How a track becomes catalog rows: windows of ``window_s`` every ``hop_s`` seconds, on the frame grid.

    ``tokenize``: ``whole`` cuts the windows from the whole track's codes (each window keeps the causal
    context of the music before it); ``alone`` tokenizes each window's audio by itself, as a query is.
    The default (10-s windows, 50 % overlap) holds any query up to 5 s wholly inside one window.
    """

    tokenize: str = "whole"
    window_s: float = 10.0
    hop_s: float = 5.0

    def __post_init__(self) -> None:
        if self.tokenize not in CATALOG_TOKENIZE:
            raise ValueError(f"catalog.tokenize must be one of {CATALOG_TOKENIZE}, got {self.tokenize!r}")
        if self.window_frames < 1 or self.hop_frames < 1:
            raise ValueError(f"catalog windows need window_s and hop_s of at least one frame ({HOP / SAMPLE_RATE} s), got {self.window_s} and {self.hop_s}")

    @property
    def window_frames(self) -> int:
        return seconds_to_frames(self.window_s)

    @property
    def hop_frames(self) -> int:
        return seconds_to_frames(self.hop_s)


def seconds_to_frames(seconds: float) -> int:
    """Whole frames in ``seconds`` (floored; the epsilon keeps e.g. 2.32 s = 29 frames from flooring to 28)."""
    return int(seconds * SAMPLE_RATE / HOP + 1e-6)


WINDOW_FRAMES = CatalogConfig().window_frames
HOP_FRAMES = CatalogConfig().hop_frames


@dataclass
class CropConfig:
    window_frames: int = WINDOW_FRAMES
    min_crop_frames: int = 12  # shortest query, about 1 s
    max_crop_frames: int = 125
    # Share of pairs whose positive is a crop of the anchor's own clean tokens. Views of a random-weight
    # tokenizer share few codes with the catalog (see code-stability), and with only those positives the
    # loss collapses to uniform embeddings; identical-code pairs keep a matching signal from the start.
    token_crop_share: float = 0.5


@dataclass(frozen=True)
class TrackViews:
    """K query views of one track: their codes back to back, and each one's start and length in frames."""

    codes: np.ndarray  # [Q, sum of lengths]
    starts: np.ndarray  # [K] first frame of the excerpt in the whole track
    lengths: np.ndarray  # [K]

    def view(self, k: int) -> np.ndarray:
        begin = int(self.lengths[:k].sum())
        return self.codes[:, begin : begin + int(self.lengths[k])]


def views_path(views_root: Path, track_id: str) -> Path:
    return Path(views_root) / f"{track_id}.npz"


def save_views(path: Path, views: list[np.ndarray], starts: list[int]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, codes=np.concatenate(views, axis=1).astype(np.int16), starts=np.array(starts), lengths=np.array([v.shape[1] for v in views]))
    tmp.replace(path)


def load_views(views_root: Path, track_id: str) -> TrackViews:
    with np.load(views_path(views_root, track_id)) as data:
        return TrackViews(data["codes"].astype(np.int64), data["starts"], data["lengths"])


def window_around(n_frames: int, start: int, length: int, window: int, rng: np.random.Generator) -> int:
    """A random window start such that [start, start + length) lies inside the window (as far as it fits)."""
    window = min(window, n_frames)
    low = max(0, min(start + length - window, n_frames - window))
    high = max(low, min(start, n_frames - window))
    return int(rng.integers(low, high + 1))


class ViewPairDataset(Dataset):
    """(catalog window, query view) pairs: the anchor from the clean track tokens, the positive a view."""

    def __init__(self, views_root: Path, tokens_root: Path, track_ids: list[str], crop: CropConfig, seed: int, pairs_per_track: int = 1) -> None:
        self.track_ids = list(track_ids)
        self.pairs_per_track = pairs_per_track
        tracks = load_tracks(tokens_root, self.track_ids)
        missing = [t for t in self.track_ids if t not in tracks]
        if missing:
            raise ValueError(f"{len(missing)} tracks have views but no tokens under {tokens_root}, e.g. {missing[:5]}")
        self.clean = [tracks[t][0].codes for t in self.track_ids]
        self.views = [load_views(views_root, t) for t in self.track_ids]
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        # Several fresh pairs per track and epoch: small catalogs still give enough optimizer steps.
        return len(self.track_ids) * self.pairs_per_track

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        track = index % len(self.track_ids)
        views, clean = self.views[track], self.clean[track]
        if self.rng.random() < self.crop.token_crop_share:
            return self._token_crop_pair(clean)
        k = int(self.rng.integers(len(views.lengths)))
        query = views.view(k)
        # Online token-level augmentation: a random crop of the view (at least min_crop_frames).
        length = int(self.rng.integers(min(self.crop.min_crop_frames, query.shape[1]), query.shape[1] + 1))
        offset = int(self.rng.integers(0, query.shape[1] - length + 1))
        anchor_start = window_around(clean.shape[1], int(views.starts[k]) + offset, length, self.crop.window_frames, self.rng)
        return clean[:, anchor_start : anchor_start + self.crop.window_frames], query[:, offset : offset + length]


    def _token_crop_pair(self, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        window = min(self.crop.window_frames, clean.shape[1])
        start = int(self.rng.integers(0, clean.shape[1] - window + 1))
        length = int(self.rng.integers(min(self.crop.min_crop_frames, window), min(self.crop.max_crop_frames, window) + 1))
        offset = start + int(self.rng.integers(0, window - length + 1))
        return clean[:, start : start + window], clean[:, offset : offset + length]


def pad_batch(sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """[Q, T_i] arrays -> codes [B, Q, T_max] and mask [B, T_max]; padding is zeros masked out, never a code."""
    n_levels = sequences[0].shape[0]
    t_max = max(s.shape[1] for s in sequences)
    codes = torch.zeros(len(sequences), n_levels, t_max, dtype=torch.long)
    mask = torch.zeros(len(sequences), t_max, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        codes[i, :, : seq.shape[1]] = torch.from_numpy(seq)
        mask[i, : seq.shape[1]] = True
    return codes, mask


def collate_pairs(batch: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    anchors, positives = zip(*batch)
    return (*pad_batch(list(anchors)), *pad_batch(list(positives)))


def window_starts(n_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """First frame of every catalog window of an ``n_frames`` sequence; the last one is aligned to the end so the tail is covered."""
    if n_frames <= window_frames:
        return [0]
    starts = list(range(0, n_frames - window_frames + 1, hop_frames))
    if starts[-1] != n_frames - window_frames:
        starts.append(n_frames - window_frames)
    return starts


def catalog_windows(codes: np.ndarray, window_frames: int, hop_frames: int) -> list[np.ndarray]:
    """Overlapping windows of a track's codes [Q, T] at ``window_starts``."""
    return [codes[:, s : s + window_frames] for s in window_starts(codes.shape[1], window_frames, hop_frames)]


@dataclass
class SegmentCatalog:
    """Every track's catalog windows, with the track (index into ``track_ids``), chunk and first sample of each."""

    track_ids: list[str]
    segments: list[np.ndarray]
    segment_track: np.ndarray
    segment_chunk: np.ndarray
    segment_start: np.ndarray  # first sample of the window in its whole track


def build_catalog(
    tracks: dict[str, list[TokenFile]],
    layout: CatalogConfig | None = None,
    encode: ClipEncoder | None = None,
    audio_paths: dict[str, Path] | None = None,
) -> SegmentCatalog:
    """The catalog rows of ``tracks`` under ``layout``; the one window cutter of evaluation, training and the index.

    ``whole``: windows cut from each token file's codes. ``alone``: the same windows' audio (from
    ``audio_paths[track]``, else the token file's ``source_path``) tokenized one by one with ``encode``,
    as a query of that length would be.
    """
    layout = layout or CatalogConfig()
    if layout.tokenize == "alone" and encode is None:
        raise ValueError("catalog.tokenize 'alone' tokenizes each window's audio: it needs an encoder")
    window, hop = layout.window_frames, layout.hop_frames
    track_ids = sorted(tracks)
    segments: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    seg_track, seg_chunk, seg_start = [], [], []
    for t, track_id in enumerate(tqdm(track_ids, desc="catalog windows", unit="track", disable=layout.tokenize == "whole")):
        audio = load_audio(audio_paths[track_id] if audio_paths else tracks[track_id][0].source_path) if layout.tokenize == "alone" else None
        chunk_offset = 0
        for chunk in tracks[track_id]:
            for start in window_starts(chunk.codes.shape[1], window, hop):
                seg_track.append(t)
                seg_chunk.append(chunk.chunk_index)
                seg_start.append(chunk_offset + start * HOP)
                if audio is None:
                    segments.append(chunk.codes[:, start : start + window])
                else:
                    end = min(start + window, chunk.codes.shape[1])
                    pending.append(audio[chunk_offset + start * HOP : chunk_offset + end * HOP])
            chunk_offset += int(round(chunk.duration_s * SAMPLE_RATE))
        if pending and (len(pending) >= _ENCODE_GROUP or t == len(track_ids) - 1):
            segments.extend(encode(pending))
            pending = []
    return SegmentCatalog(track_ids, segments, np.array(seg_track, dtype=np.int64), np.array(seg_chunk, dtype=np.int64), np.array(seg_start, dtype=np.int64))
