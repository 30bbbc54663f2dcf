"""``python -m training synth``: write a generated music catalog as 24 kHz WAV files plus a manifest.

Each track depends only on (seed, track index) (see ``training.music``), so catalogs of
different sizes share their first tracks, any worker count gives the same files, and a rerun
only renders the tracks whose files are missing (files are written atomically, so an
interrupted run leaves no half-written track behind).
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE, write_wav
from training.music import synthesize_track

MANIFEST = "manifest.csv"

__all__ = ["add_arguments", "main", "synthesize_track", "track_id", "write_catalog"]


def track_id(index: int) -> str:
    return f"track_{index:05d}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="catalog folder (created if missing)")
    parser.add_argument("--tracks", type=int, required=True, help="number of tracks")
    parser.add_argument("--seconds", type=float, required=True, help="duration of every track")
    parser.add_argument("--seed", type=int, default=0, help="catalog seed; track i is seeded by (seed, i)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: one per core)")


def main(args: argparse.Namespace) -> int:
    if args.tracks < 1 or args.seconds <= 0 or args.seed < 0 or args.workers < 1:
        raise SystemExit("--tracks and --workers must be >= 1, --seconds > 0, --seed >= 0")
    rendered = write_catalog(args.out, args.tracks, args.seconds, args.seed, args.workers)
    print(f"{args.out}: {rendered} tracks rendered, {args.tracks - rendered} already present; manifest {MANIFEST}")
    return 0


def write_catalog(out: Path, tracks: int, seconds: float, seed: int, workers: int = 2) -> int:
    """Render the missing tracks of the catalog and (re)write its manifest; returns how many were rendered."""
    out.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(tracks) if not _track_path(out, i).exists()]
    jobs = [(out, i, seconds, seed) for i in missing]
    with tqdm(total=tracks, initial=tracks - len(missing), unit="track", desc="synth") as progress:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                _render(job)
                progress.update()
        else:
            with multiprocessing.Pool(min(workers, len(jobs))) as pool:
                for _ in pool.imap_unordered(_render, jobs):
                    progress.update()
    _write_manifest(out, tracks)
    return len(missing)


def _track_path(out: Path, index: int) -> Path:
    return out / f"{track_id(index)}.wav"


def _render(job: tuple[Path, int, float, int]) -> None:
    out, index, seconds, seed = job
    write_wav(_track_path(out, index), synthesize_track(index, seconds, seed), SAMPLE_RATE)


def _write_manifest(out: Path, tracks: int) -> None:
    # Durations are read back from the files: tracks kept from an earlier run may differ in length.
    with open(out / MANIFEST, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("track_id", "path", "duration_s"))
        for index in range(tracks):
            path = _track_path(out, index)
            writer.writerow((track_id(index), path.name, f"{sf.info(str(path)).duration:.6f}"))
