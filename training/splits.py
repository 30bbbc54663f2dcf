"""Deterministic train/val/test splits by track id, so no track (nor any chunk of it) is in two splits."""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from training.token_files import list_track_ids

SPLIT_NAMES = ("train", "val", "test")


def assign_splits(track_ids: list[str], val_ratio: float, test_ratio: float, seed: int) -> dict[str, list[str]]:
    if not 0 <= val_ratio < 1 or not 0 <= test_ratio < 1 or val_ratio + test_ratio >= 1:
        raise ValueError(f"ratios must be in [0, 1) and sum below 1, got val={val_ratio} test={test_ratio}")
    ordered = sorted(set(track_ids))
    random.Random(seed).shuffle(ordered)
    n_test = round(len(ordered) * test_ratio)
    n_val = round(len(ordered) * val_ratio)
    return {
        "test": sorted(ordered[:n_test]),
        "val": sorted(ordered[n_test : n_test + n_val]),
        "train": sorted(ordered[n_test + n_val :]),
    }


def read_split(path: str | Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_splits(splits: dict[str, list[str]], output_root: Path, seed: int) -> dict:
    output_root.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_NAMES:
        (output_root / f"{name}.txt").write_text("".join(f"{t}\n" for t in splits[name]), encoding="utf-8")
    summary = {"seed": seed, **{name: len(splits[name]) for name in SPLIT_NAMES}}
    (output_root / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens-root", type=Path, required=True, help="folder of token .npz files")
    parser.add_argument("--output-root", type=Path, required=True)
    parser.add_argument("--val-ratio", type=float, default=0.1)
    parser.add_argument("--test-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)


def main(args: argparse.Namespace) -> int:
    track_ids = list_track_ids(args.tokens_root)
    if not track_ids:
        raise SystemExit(f"no token files under {args.tokens_root}")
    summary = write_splits(assign_splits(track_ids, args.val_ratio, args.test_ratio, args.seed), args.output_root, args.seed)
    print(json.dumps(summary))
    return 0
