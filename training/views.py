"""`python -m training views`: tokenize K audio-augmented views per track once, offline.

Tokenizing is the expensive step, so the contrastive trainer reads these codes instead of
augmenting audio online. Each track's file holds ``codes [K + 1, Q, T]``: view 0 is the clean
track (what the catalog indexes), views 1..K are random listening conditions.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE, list_audio_files, load_audio
from training.augment import AugmentConfig, random_view
from training.dataset import views_path
from training.encode import HOP, encode_clips
from training.moss.weights import build_encoder
from training.splits import read_split
from training.tokenize import add_moss_arguments, moss_spec
from training.train import resolve_device


# Views keep the audio on the catalog's frame grid (no time offset): a random-weight tokenizer's codes are
# a hash of the exact waveform phase (a 15-sample shift leaves level-0 codes at near-chance agreement),
# so sub-frame shifts would turn positives into noise. `--alignment sample` adds them for trained weights.
TRAINING_AUGMENT = AugmentConfig(noise_prob=0.7, reverb_prob=0.25, rt60_s=(0.3, 0.8), eq_prob=0.25, gain_db=(-3.0, 3.0), offset_prob=0.0)
ALIGNMENTS = ("frame", "sample")


def sub_frame_delay(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Delay by 0..HOP-1 samples, so the view no longer starts on the catalog's 1,920-sample frame grid."""
    delay = int(rng.integers(0, HOP))
    return np.concatenate([np.zeros(delay, dtype=np.float32), x[: len(x) - delay]])


def make_views(waveform: np.ndarray, n_views: int, rng: np.random.Generator, cfg: AugmentConfig, view_seconds: float | None, alignment: str) -> list[np.ndarray]:
    """The clean excerpt plus ``n_views`` augmented copies of it, all covering one region of the track."""
    if view_seconds is not None and len(waveform) > view_seconds * SAMPLE_RATE:
        frames = int(view_seconds * SAMPLE_RATE) // HOP
        start = int(rng.integers(0, len(waveform) // HOP - frames + 1)) * HOP
        waveform = waveform[start : start + frames * HOP]
    shift = sub_frame_delay if alignment == "sample" else (lambda x, _rng: x)
    return [waveform] + [random_view(shift(waveform, rng), rng, cfg) for _ in range(n_views)]


def track_seed(seed: int, track_id: str) -> np.random.Generator:
    # Seeded per track (not per run order) so a resumed or partial run makes the same views.
    return np.random.default_rng([seed, *track_id.encode("utf-8")])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audio-root", type=Path, required=True, help="the catalog audio (file stem = track id)")
    parser.add_argument("--splits-root", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="which split files to make views for")
    parser.add_argument("--output-root", type=Path, required=True)
    parser.add_argument("--views-per-track", type=int, default=4)
    parser.add_argument("--view-seconds", type=float, default=None, help="augment one random excerpt of this length per track instead of the whole track (cheaper; >= 10 s keeps a full catalog window)")
    parser.add_argument("--alignment", choices=ALIGNMENTS, default="frame", help="frame: views stay on the 1,920-sample grid; sample: random sub-frame delays too")
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
    args.output_root.mkdir(parents=True, exist_ok=True)
    for track_id in tqdm(todo, desc="views", unit="track"):
        views = make_views(load_audio(audio_by_track[track_id]), args.views_per_track, track_seed(args.seed, track_id), TRAINING_AUGMENT, args.view_seconds, args.alignment)
        codes = encode_clips(encoder, views, args.n_quantizers, args.batch_size, device)
        n_frames = min(c.shape[1] for c in codes)
        out = views_path(args.output_root, track_id)
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, codes=np.stack([c[:, :n_frames] for c in codes]).astype(np.int16))
        tmp.replace(out)
    print(json.dumps({"tracks": len(track_ids), "written": len(todo), "views_per_track": args.views_per_track, "view_seconds": args.view_seconds, "alignment": args.alignment, "moss": moss_spec(args)}))
    return 0
