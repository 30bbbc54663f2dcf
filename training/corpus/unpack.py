"""``python -m training corpus-unpack``: merge corpus packs (``corpus-pack``) into one corpus folder.

On the GPU machine, packs arrive one transfer at a time; each merge copies the pack's audio into
``CORPUS/audio`` and adds its manifest rows, so ``CORPUS`` reads like a corpus built by
``python -m training corpus`` (manifest.csv + audio/, the split column kept). Merging a pack again
changes nothing; a track id that is already there from another file is refused.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from training.corpus.build import MANIFEST
from training.corpus.pack import read_manifest, write_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packs", type=Path, nargs="+", help="pack folders (manifest.csv + audio/)")
    parser.add_argument("--corpus", type=Path, default=Path("artifacts/corpus"), help="corpus folder to merge into (default: %(default)s)")


def merge(pack: Path, corpus: Path) -> int:
    """Copies ``pack``'s audio into ``corpus`` and adds its rows; returns how many tracks were new."""
    incoming = read_manifest(pack / MANIFEST)
    rows = {row["track_id"]: row for row in read_manifest(corpus / MANIFEST)} if (corpus / MANIFEST).is_file() else {}
    clashes = [row["track_id"] for row in incoming if row["track_id"] in rows and rows[row["track_id"]]["path"] != row["path"]]
    if clashes:
        raise SystemExit(f"{pack}: tracks already in {corpus} from other files, e.g. {clashes[:3]}")
    (corpus / "audio").mkdir(parents=True, exist_ok=True)
    new = 0
    for row in incoming:
        source = pack / row["path"]
        if not source.is_file():
            raise SystemExit(f"{pack}: {row['path']} is in its manifest but missing")
        target = corpus / row["path"]
        if not (target.is_file() and target.stat().st_size == source.stat().st_size):
            shutil.copyfile(source, target)
        new += row["track_id"] not in rows
        rows[row["track_id"]] = row
    # The manifest is written after the audio, so an interrupted merge never lists a file that is missing.
    write_manifest(corpus / MANIFEST, list(rows.values()))
    return new


def main(args: argparse.Namespace) -> int:
    for pack in args.packs:
        new = merge(pack, args.corpus)
        print(f"{pack} -> {args.corpus}: {new} new tracks")
    total = len(read_manifest(args.corpus / MANIFEST))
    print(f"{args.corpus}: {total} tracks")
    return 0
