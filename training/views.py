"""`python -m training views`: K query views per track, tokenized once, offline.

A view is an excerpt of 1-10 s at a random frame of the track, degraded like a real recording
(noise, room, phone EQ, gain) and tokenized on its own, as a live query is. Tokenizing is the
expensive step, so the trainer reads these codes and pairs each view with the clean catalog window
that contains it (training.dataset). File per track: codes of the K views back to back, with each
view's first frame and length.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.audio_io import list_audio_files, load_audio
from training.augment import AugmentConfig, random_view
from training.dataset import CropConfig, save_views, views_path
from training.encode import HOP, encode_clips
from training.moss.weights import build_encoder
from training.splits import read_split
from training.tokenize import add_moss_arguments, moss_spec
from training.train import resolve_device

# Views start on the catalog's frame grid (no sub-frame offset): a random-weight tokenizer's codes are
# a hash of the exact waveform phase (`python -m training code-stability`: a 15-sample shift leaves
# level-0 codes near chance), so shifted views would be noise. `--alignment sample` adds the shifts.
TRAINING_AUGMENT = AugmentConfig(noise_prob=0.7, reverb_prob=0.25, rt60_s=(0.3, 0.8), eq_prob=0.25, gain_db=(-3.0, 3.0), offset_prob=0.0)
ALIGNMENTS = ("frame", "sample")


def excerpt_views(waveform: np.ndarray, n_views: int, rng: np.random.Generator, cfg: AugmentConfig, crop: CropConfig, alignment: str) -> tuple[list[np.ndarray], list[int]]:
    """``n_views`` degraded excerpts and the track frame each starts at."""
    n_frames = len(waveform) // HOP
    clips, starts = [], []
    for _ in range(n_views):
        length = int(rng.integers(min(crop.min_crop_frames, n_frames), min(crop.max_crop_frames, n_frames) + 1))
        start = int(rng.integers(0, n_frames - length + 1))
        delay = int(rng.integers(0, HOP)) if alignment == "sample" and start > 0 else 0
        excerpt = waveform[start * HOP - delay : (start + length) * HOP - delay]
        clips.append(random_view(excerpt, rng, cfg))
        starts.append(start)
    return clips, starts


def track_seed(seed: int, track_id: str) -> np.random.Generator:
    # Seeded per track (not per run order) so a resumed or partial run makes the same views.
    return np.random.default_rng([seed, *track_id.encode("utf-8")])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audio-root", type=Path, required=True, help="the catalog audio (file stem = track id)")
    parser.add_argument("--splits-root", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="which split files to make views for")
    parser.add_argument("--output-root", type=Path, required=True)
    parser.add_argument("--views-per-track", type=int, default=6)
    parser.add_argument("--alignment", choices=ALIGNMENTS, default="frame", help="frame: excerpts start on the 1,920-sample grid; sample: anywhere")
    parser.add_argument("--seed", type=int, default=42)
    add_moss_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.views_per_track < 1:
        raise SystemExit("--views-per-track must be at least 1")
    audio_by_track = {p.stem: p for p in list_audio_files(args.audio_root)}
    track_ids = sorted({t for split in args.splits for t in read_split(args.splits_root / f"{split}.txt")})
    missing = [t for t in track_ids if t not in audio_by_track]
    if missing:
        raise SystemExit(f"{len(missing)} tracks of the splits have no audio under {args.audio_root}, e.g. {missing[:5]}")
    todo = [t for t in track_ids if not views_path(args.output_root, t).exists()]
    device = resolve_device(args.device)
    encoder = build_encoder(moss_spec(args), device=device)
    crop = CropConfig()
    args.output_root.mkdir(parents=True, exist_ok=True)
    for track_id in tqdm(todo, desc="views", unit="track"):
        clips, starts = excerpt_views(load_audio(audio_by_track[track_id]), args.views_per_track, track_seed(args.seed, track_id), TRAINING_AUGMENT, crop, args.alignment)
        save_views(views_path(args.output_root, track_id), encode_clips(encoder, clips, args.n_quantizers, args.batch_size, device), starts)
    print(json.dumps({"tracks": len(track_ids), "written": len(todo), "views_per_track": args.views_per_track, "alignment": args.alignment, "moss": moss_spec(args)}))
    return 0
