"""``python -m training corpus-pack``: one split (or all) of the corpus as compact Ogg audio, within a size budget.

For carrying audio to a GPU machine, whose transfers hold 64 MiB. Tracks are taken in a seeded order
spread over packages (each package's tracks shuffled, then one from each package in turn, packages in
a shuffled order) and encoded as 24 kHz mono Vorbis or Opus until the next one would exceed
``--max-mb``; ``--after`` skips the tracks of earlier packs, so a corpus larger than one transfer goes
over in several packs (``corpus-unpack`` merges them there). libsndfile sets Vorbis quality to
``1 - compression_level`` (oggenc's -q 0..10 divided by 10): the default 0.7 is -q 3, about
45-60 kbit/s for 24 kHz mono music, roughly two hours in 48 MiB; Opus at level 0.94 is about 22 kbit/s,
about five hours in 48 MiB.

Writes ``OUT/audio/<track_id>.ogg`` and ``OUT/manifest.csv`` (the corpus manifest's columns, with
``path`` pointing at the Ogg file). Packing again into the same folder replaces the earlier pack.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from training.audio_io import OGG_CODECS, SAMPLE_RATE, AudioError, load_audio, write_ogg
from training.corpus.build import MANIFEST, MANIFEST_COLUMNS
from training.splits import SPLIT_NAMES

MIB = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, default=Path("artifacts/corpus"), help="corpus folder (default: %(default)s)")
    parser.add_argument("--split", choices=(*SPLIT_NAMES, "all"), default="train", help="which split to pack, or all (default: %(default)s)")
    parser.add_argument("--after", type=Path, nargs="*", default=[], help="earlier packs: their tracks are left out of this one")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes (default: one per core)")
    parser.add_argument("--codec", choices=OGG_CODECS, default="vorbis", help="Ogg codec (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="pack folder (created; an earlier pack there is replaced)")
    parser.add_argument("--max-mb", type=float, default=48.0, help="size budget of the whole folder in MiB (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the track order (default: %(default)s)")
    parser.add_argument("--compression-level", type=float, default=0.7,
                        help="libsndfile compression level in [0, 1]: Vorbis quality = 1 - level; Opus bitrate falls with it (default: %(default)s, Vorbis -q 3)")


def main(args: argparse.Namespace) -> int:
    if args.max_mb <= 0:
        raise SystemExit("--max-mb must be > 0")
    if not 0 <= args.compression_level <= 1:
        raise SystemExit("--compression-level must be in [0, 1]")
    rows = read_manifest(args.corpus / MANIFEST)
    chosen = [row for row in rows if args.split in ("all", row["split"])]
    if not chosen:
        raise SystemExit(f"{args.corpus / MANIFEST}: no tracks in split {args.split!r}")
    earlier = {row["track_id"] for folder in args.after for row in read_manifest(folder / MANIFEST)}
    if args.out.resolve() in {folder.resolve() for folder in args.after}:
        raise SystemExit(f"--out {args.out} is one of the --after packs")
    todo = [row for row in chosen if row["track_id"] not in earlier]
    if not todo:
        raise SystemExit(f"every {args.split} track is in the --after packs already")
    packed = pack(args.corpus, todo, args.out, int(args.max_mb * MIB), args.seed, args.compression_level, args.codec, max(1, args.workers))
    minutes = sum(float(row["duration_s"]) for row in packed) / 60
    total = sum(float(row["duration_s"]) for row in todo) / 60
    size = folder_bytes(args.out) / MIB
    packages = len({row["package"] for row in packed})
    print(f"{args.out}: {len(packed)} of {len(todo)} {args.split} tracks not in earlier packs, {minutes:.1f} of {total:.1f} min "
          f"from {packages} packages, {size:.1f} MiB; {len(todo) - len(packed)} left for another pack")
    return 0


def read_manifest(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise SystemExit(f"{path}: no corpus manifest (run python -m training corpus first)")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = [column for column in MANIFEST_COLUMNS if rows and column not in rows[0]]
    if missing:
        raise SystemExit(f"{path}: missing columns {missing}")
    return rows


def pack_order(rows: list[dict[str, str]], seed: int) -> list[dict[str, str]]:
    """Seeded order spread over packages: shuffled within each package, then taken round-robin."""
    rng = random.Random(seed)
    by_package: dict[str, list[dict[str, str]]] = {}
    for row in sorted(rows, key=lambda r: r["track_id"]):
        by_package.setdefault(row["package"], []).append(row)
    packages = sorted(by_package)
    rng.shuffle(packages)
    for name in packages:
        rng.shuffle(by_package[name])
    order = []
    for turn in range(max(len(tracks) for tracks in by_package.values())):
        order += [by_package[name][turn] for name in packages if turn < len(by_package[name])]
    return order


def pack(corpus: Path, rows: list[dict[str, str]], out: Path, budget_bytes: int, seed: int, compression_level: float,
         codec: str = "vorbis", workers: int = 1) -> list[dict[str, str]]:
    """Encode tracks in ``pack_order`` until the next would pass the budget; returns their manifest rows.

    ``workers`` processes encode ahead in that order; what they encoded past the budget is deleted.
    """
    _clear_earlier_pack(out)
    audio = out / "audio"
    audio.mkdir(parents=True)
    packed: list[dict[str, str]] = []
    used = 0
    # The manifest is written last; its size is reserved up front (a generous bound per row).
    reserve = 512 * (len(rows) + 1)
    order = pack_order(rows, seed)
    tasks = [(corpus / row["path"], audio / f"{row['track_id']}.ogg", compression_level, codec) for row in order]
    with get_context("spawn").Pool(workers) if workers > 1 else nullcontext() as pool:
        sizes = pool.imap(_encode_task, tasks) if pool else map(_encode_task, tasks)
        for row, size in tqdm(zip(order, sizes), total=len(order), desc="pack", unit="track", mininterval=1.0):
            if isinstance(size, str):
                raise SystemExit(f"{row['track_id']}: {size}")
            if used + size + reserve > budget_bytes:
                break
            used += size
            packed.append({**row, "path": f"audio/{row['track_id']}.ogg"})
    kept = {Path(row["path"]).name for row in packed}
    for extra in audio.iterdir():
        if extra.name not in kept:
            extra.unlink()
    write_manifest(out / MANIFEST, packed)
    return packed


def _encode_task(task: tuple[Path, Path, float, str]) -> int | str:
    """A pool task: the encoded size, or the reason the source could not be read."""
    source, target, compression_level, codec = task
    try:
        return encode_ogg(load_audio(source), target, compression_level, codec)
    except AudioError as exc:
        return str(exc)


def encode_ogg(x, path: Path, compression_level: float, codec: str) -> int:
    """24 kHz mono Ogg ``codec`` at ``compression_level``, written atomically; returns its size in bytes."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_ogg(str(tmp), x, SAMPLE_RATE, compression_level, codec)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def _clear_earlier_pack(out: Path) -> None:
    if not out.exists():
        return
    entries = {entry.name for entry in out.iterdir()}
    if entries - {"audio", MANIFEST}:
        raise SystemExit(f"{out}: holds files that are not a corpus pack ({', '.join(sorted(entries - {'audio', MANIFEST}))}); choose another --out")
    if (out / "audio").is_dir() and any(p.suffix != ".ogg" for p in (out / "audio").iterdir()):
        raise SystemExit(f"{out / 'audio'}: holds files that are not a pack's .ogg files; choose another --out")
    shutil.rmtree(out)


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["track_id"]))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
