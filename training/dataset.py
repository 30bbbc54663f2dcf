"""Contrastive pairs from offline-tokenised augmented views, with online token-level augmentation.

A training example is (anchor, positive) of one track: the anchor is a catalog-sized window
of one view, the positive a shorter crop of another view lying inside that window, which is
exactly the retrieval task (a noisy excerpt against catalog windows).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


# Catalog segments: 10-s windows (12.5 frames/s) with 50 % overlap, so any query up to 5 s
# lies wholly inside one segment. Shared by training, evaluation and the served index.
WINDOW_FRAMES = 125
HOP_FRAMES = 62


@dataclass
class CropConfig:
    window_frames: int = WINDOW_FRAMES
    min_crop_frames: int = 12  # shortest query, about 1 s
    max_crop_frames: int = 125


def views_path(views_root: Path, track_id: str) -> Path:
    return Path(views_root) / f"{track_id}.npz"


def load_views(views_root: Path, track_id: str) -> np.ndarray:
    """[K, Q, T] codes of K views of one track (view 0 is the clean audio)."""
    with np.load(views_path(views_root, track_id)) as data:
        return data["codes"].astype(np.int64)


class ViewPairDataset(Dataset):
    def __init__(self, views_root: Path, track_ids: list[str], crop: CropConfig, seed: int, pairs_per_track: int = 1) -> None:
        self.track_ids = list(track_ids)
        self.pairs_per_track = pairs_per_track
        self.views = [load_views(views_root, t) for t in self.track_ids]
        bad = [t for t, v in zip(self.track_ids, self.views) if v.shape[0] < 2]
        if bad:
            raise ValueError(f"need at least 2 views per track, these have fewer: {bad[:5]}")
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        # Several fresh pairs per track and epoch: small catalogs still give enough optimizer steps.
        return len(self.track_ids) * self.pairs_per_track

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        views = self.views[index % len(self.track_ids)]
        rng = self.rng
        a, b = rng.choice(views.shape[0], size=2, replace=False)
        n_frames = views.shape[2]
        window = min(self.crop.window_frames, n_frames)
        start = int(rng.integers(0, n_frames - window + 1))
        crop_len = int(rng.integers(min(self.crop.min_crop_frames, window), min(self.crop.max_crop_frames, window) + 1))
        crop_start = start + int(rng.integers(0, window - crop_len + 1))
        return views[a, :, start : start + window], views[b, :, crop_start : crop_start + crop_len]


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


def catalog_windows(codes: np.ndarray, window_frames: int, hop_frames: int) -> list[np.ndarray]:
    """Overlapping windows of a track's codes [Q, T]; the last one is aligned to the end so the tail is covered."""
    n_frames = codes.shape[1]
    if n_frames <= window_frames:
        return [codes]
    starts = list(range(0, n_frames - window_frames + 1, hop_frames))
    if starts[-1] != n_frames - window_frames:
        starts.append(n_frames - window_frames)
    return [codes[:, s : s + window_frames] for s in starts]
