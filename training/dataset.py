"""The catalog layout, and contrastive pairs shaped like the retrieval task from offline-tokenised query views.

A view is an excerpt of a track at any sample offset, degraded like a real recording and tokenised on
its own, exactly how a live query reaches the encoder (training.view_synth). Its positive is the clean
catalog window that holds its samples, cut by the same ``build_catalog`` that makes the evaluation's
and the served index's rows, so training sees the catalog the search will see.
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
from training.token_files import TokenFile

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


@dataclass(frozen=True)
class TrackViews:
    """One track's query views and its catalog windows, as ``python -m training views`` stored them.

    Views: codes back to back [Q, sum of lengths], each one's frame count, first sample in the track and
    sample count. Windows: the track's catalog rows (``build_catalog``), codes back to back, frame counts
    and first samples.
    """

    codes: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    samples: np.ndarray
    window_codes: np.ndarray
    window_lengths: np.ndarray
    window_starts: np.ndarray

    def view(self, k: int) -> np.ndarray:
        return _part(self.codes, self.lengths, k)

    def window(self, w: int) -> np.ndarray:
        return _part(self.window_codes, self.window_lengths, w)

    def windows(self) -> list[np.ndarray]:
        return [self.window(w) for w in range(len(self.window_lengths))]

    def paired_windows(self, k: int) -> np.ndarray:
        return holding_windows(self.window_starts, self.window_lengths * HOP, int(self.offsets[k]), int(self.samples[k]))


def _part(codes: np.ndarray, lengths: np.ndarray, index: int) -> np.ndarray:
    begin = int(lengths[:index].sum())
    return codes[:, begin : begin + int(lengths[index])]


def holding_windows(starts: np.ndarray, sizes: np.ndarray, offset: int, samples: int) -> np.ndarray:
    """Windows (first sample ``starts``, ``sizes`` samples) that hold all of [offset, offset + samples);
    for an excerpt no window holds, those that hold the most of it."""
    overlap = np.minimum(starts + sizes, offset + samples) - np.maximum(starts, offset)
    return np.flatnonzero(overlap == overlap.max())


def views_path(views_root: Path, track_id: str) -> Path:
    return Path(views_root) / f"{track_id}.npz"


def save_views(path: Path, views: list[np.ndarray], offsets: list[int], samples: list[int], windows: list[np.ndarray], window_starts: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        codes=np.concatenate(views, axis=1).astype(np.int16), lengths=np.array([v.shape[1] for v in views]),
        offsets=np.array(offsets, dtype=np.int64), samples=np.array(samples, dtype=np.int64),
        window_codes=np.concatenate(windows, axis=1).astype(np.int16), window_lengths=np.array([w.shape[1] for w in windows]),
        window_starts=np.asarray(window_starts, dtype=np.int64),
    )
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written file that a rerun would skip


def load_views(views_root: Path, track_id: str) -> TrackViews:
    with np.load(views_path(views_root, track_id)) as data:
        return TrackViews(**{name: data[name].astype(np.int64) for name in TrackViews.__dataclass_fields__})


class ViewPairDataset(Dataset):
    """(clean catalog window, query view, track) triples: each view with a window that holds its samples."""

    def __init__(self, views: list[TrackViews], seed: int, pairs_per_track: int = 1) -> None:
        self.views = views
        self.pairs_per_track = pairs_per_track
        self.paired = [[v.paired_windows(k) for k in range(len(v.lengths))] for v in views]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        # Several fresh pairs per track and epoch: small catalogs still give enough optimizer steps.
        return len(self.views) * self.pairs_per_track

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        track = index % len(self.views)
        k = int(self.rng.integers(len(self.views[track].lengths)))
        window = int(self.rng.choice(self.paired[track][k]))
        return self.views[track].window(window), self.views[track].view(k), track


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


def collate_pairs(batch: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[torch.Tensor, ...]:
    """-> window codes, window mask, view codes, view mask, track of each pair."""
    windows, views, tracks = zip(*batch)
    return (*pad_batch(list(windows)), *pad_batch(list(views)), torch.tensor(tracks, dtype=torch.long))


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
    progress: bool = True,
) -> SegmentCatalog:
    """The catalog rows of ``tracks`` under ``layout``; the one window cutter of evaluation, training and the index.

    ``whole``: windows cut from each token file's codes. ``alone``: the same windows' audio (from
    ``audio_paths[track]``, else the token file's ``source_path``) tokenized one by one with ``encode``,
    as a query of that length would be (a progress bar shows it when ``progress``).
    """
    layout = layout or CatalogConfig()
    if layout.tokenize == "alone" and encode is None:
        raise ValueError("catalog.tokenize 'alone' tokenizes each window's audio: it needs an encoder")
    window, hop = layout.window_frames, layout.hop_frames
    track_ids = sorted(tracks)
    segments: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    seg_track, seg_chunk, seg_start = [], [], []
    for t, track_id in enumerate(tqdm(track_ids, desc="catalog windows", unit="track", disable=not progress or layout.tokenize == "whole")):
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
