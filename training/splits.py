"""Deterministic train/val/test splits by track id, so no track (nor any chunk of it) is in two splits."""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
from pathlib import Path

from training.token_files import list_track_ids

SPLIT_NAMES = ("train", "val", "test")
METHODS = ("shuffle", "hash")


def _check_ratios(val_ratio: float, test_ratio: float) -> None:
    if not 0 <= val_ratio < 1 or not 0 <= test_ratio < 1 or val_ratio + test_ratio >= 1:
        raise ValueError(f"ratios must be in [0, 1) and sum below 1, got val={val_ratio} test={test_ratio}")


def assign_splits_by_hash(track_ids: list[str], val_ratio: float, test_ratio: float, seed: int) -> dict[str, list[str]]:
    """Each track's split from a hash of (seed, id) alone: adding tracks never moves an existing one, so a
    growing catalog keeps its test set and run-over-run quality numbers stay comparable."""
    _check_ratios(val_ratio, test_ratio)
    splits: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for track_id in sorted(set(track_ids)):
        digest = hashlib.sha256(f"{seed}:{track_id}".encode("utf-8")).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        name = "test" if position < test_ratio else "val" if position < test_ratio + val_ratio else "train"
        splits[name].append(track_id)
    return splits


def assign_splits(track_ids: list[str], val_ratio: float, test_ratio: float, seed: int) -> dict[str, list[str]]:
    """Exact split sizes from a seeded shuffle (a fixed catalog)."""
    _check_ratios(val_ratio, test_ratio)
    ordered = sorted(set(track_ids))
    random.Random(seed).shuffle(ordered)
    n_test = round(len(ordered) * test_ratio)
    n_val = round(len(ordered) * val_ratio)
    return {
        "test": sorted(ordered[:n_test]),
        "val": sorted(ordered[n_test : n_test + n_val]),
        "train": sorted(ordered[n_test + n_val :]),
    }


def manifest_splits(manifest: str | Path) -> dict[str, list[str]]:
    """Track ids per split from a corpus manifest's ``track_id`` and ``split`` columns (`python -m training corpus`)."""
    splits: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    with open(manifest, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("split") not in splits:
                raise ValueError(f"{manifest}: track {row.get('track_id')!r} has split {row.get('split')!r}, expected one of {SPLIT_NAMES}")
            splits[row["split"]].append(row["track_id"])
    return {name: sorted(ids) for name, ids in splits.items()}


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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokens-root", type=Path, help="folder of token .npz files: split their track ids")
    source.add_argument("--manifest", type=Path, help="a corpus manifest.csv: write the splits of its split column (ratios and method unused)")
    parser.add_argument("--output-root", type=Path, required=True)
    parser.add_argument("--val-ratio", type=float, default=0.1)
    parser.add_argument("--test-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--method", choices=METHODS, default="shuffle",
                        help="shuffle: exact sizes for a fixed catalog; hash: a track keeps its split as the catalog grows (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    if args.manifest is not None:
        try:
            splits = manifest_splits(args.manifest)
        except (OSError, ValueError) as error:
            raise SystemExit(str(error)) from None
        print(json.dumps(write_splits(splits, args.output_root, args.seed)))
        return 0
    track_ids = list_track_ids(args.tokens_root)
    if not track_ids:
        raise SystemExit(f"no token files under {args.tokens_root}")
    assign = assign_splits_by_hash if args.method == "hash" else assign_splits
    summary = write_splits(assign(track_ids, args.val_ratio, args.test_ratio, args.seed), args.output_root, args.seed)
    print(json.dumps(summary))
    return 0
