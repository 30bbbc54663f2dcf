"""Training audio for the codec: whole tracks held in one device tensor, random crops drawn per step.

Every step's crops come from a generator seeded by (seed, step), so a resumed run draws exactly
the batches the uninterrupted run would have drawn. Crops are picked with probability proportional
to each track's length (every second of music equally likely) at any sample offset.
"""
from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from training.audio_io import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio
from training.dsp import db_to_gain

MANIFEST = "manifest.csv"


def list_audio(root: Path, split: str | None) -> list[Path]:
    """Audio files under ``root``; with ``split``, only tracks of that split in ``root/manifest.csv``."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if split is None:
        return files
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ValueError(f"{root}: --split {split} needs {MANIFEST} with a 'split' column")
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "split" not in rows[0]:
        raise ValueError(f"{manifest}: no 'split' column")
    keep = {row["track_id"] for row in rows if row["split"] == split}
    return [p for p in files if p.stem in keep]


def generator_for(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class CropSampler:
    """All tracks concatenated into one float16 tensor on ``device``; ``crops`` gathers a batch there."""

    def __init__(self, files: list[Path], device: torch.device, min_seconds: float, workers: int = 8) -> None:
        if not files:
            raise ValueError("no training audio found")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            tracks = list(tqdm(pool.map(load_audio, files), total=len(files), desc="loading audio", unit="track"))
        tracks = [t for t in tracks if len(t) >= min_seconds * SAMPLE_RATE]
        if not tracks:
            raise ValueError(f"no track of at least {min_seconds} s among {len(files)} files")
        self.lengths = torch.tensor([len(t) for t in tracks], dtype=torch.int64)
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths
        self.audio = torch.from_numpy(np.concatenate(tracks)).to(device=device, dtype=torch.float16)
        self.device = device

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / SAMPLE_RATE

    def crops(self, batch: int, samples: int, gain_db: tuple[float, float], generator: torch.Generator) -> Tensor:
        """``[batch, 1, samples]`` float32 crops at random tracks and sample offsets, with a random gain."""
        room = (self.lengths - samples).clamp_min(0)
        track = torch.multinomial(room.double(), batch, replacement=True, generator=generator)
        offset = (torch.rand(batch, generator=generator, dtype=torch.float64) * (room[track] + 1)).long()
        gain = torch.from_numpy(db_to_gain(torch.empty(batch).uniform_(*gain_db, generator=generator).numpy())).float()
        index = (self.starts[track] + offset)[:, None] + torch.arange(samples)[None, :]
        audio = self.audio[index.to(self.device)].float()
        return (audio * gain.to(self.device)[:, None]).unsqueeze(1)
