"""``python -m training corpus``: Debian's free game music -> a deduplicated 24 kHz mono WAV corpus.

Steps: install the packages (configs/corpus.yaml, or a ``--packages`` subset) when missing; list
their audio (``training.corpus.sources``); hash every file and drop byte-identical copies; decode
the rest (``load_audio``: OGG Vorbis, Opus, MP3 -> 24 kHz mono) and write those of at least
``min_seconds`` (counted from the first to the last audible moment, ``training.dsp.audible_seconds``:
a jingle padded with silence to 30 s is short) to ``OUT/audio/<track_id>.wav``; fingerprint them and drop near-duplicates
(``training.corpus.fingerprint``), keeping the longest version of each piece; split by track hash.

Outputs: ``manifest.csv`` (one row per kept track), ``dropped.csv`` (every file not kept, with
its reason: ``short``, ``duplicate-of <id>``, ``near-duplicate-of <id> (similarity x)``,
``unreadable: <error>``), ``summary.json`` (tracks and minutes per package and split, drops by
reason, the closest pairs that were kept), ``similarity.npz`` (every compared pair's score and time
shift) and ``similarity.png`` (their distribution and the threshold).

Resumable: each decoded file leaves ``cache/<track_id>.npz`` (source hash, duration, fingerprint)
and WAVs are written under a temporary name and renamed, so a rerun decodes only what is missing,
compares only pairs it has not scored, and an interrupted run leaves no half-written WAV. An
unreadable file is listed and skipped.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import multiprocessing
import os
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE, AudioError, load_audio, write_wav
from training.corpus.config import DEFAULT_CONFIG, CorpusConfig, load_corpus_config
from training.corpus.fingerprint import FingerprintConfig, fingerprint, similarity_matrix
from training.corpus.licence import DOC_ROOT, package_licence
from training.corpus.sources import Listing, Source, dpkg_files, ensure_installed, installed, list_package
from training.dsp import audible_seconds
from training.splits import assign_splits_by_hash

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("track_id", "package", "source_path", "duration_s", "licence", "split", "path")
DROPPED = "dropped.csv"
DROPPED_COLUMNS = ("track_id", "package", "source_path", "duration_s", "audible_s", "reason")
SUMMARY = "summary.json"
ANALYSIS = "corpus-v4"  # what a cache file holds; with the fingerprint's tag, says whether it is current
SIMILARITIES = "similarity.npz"  # every compared pair: kept for inspection and reused by reruns
CLOSEST_PAIRS = 15


@dataclass
class Track:
    track_id: str
    source: Source
    sha256: str = ""
    duration_s: float = 0.0
    audible_s: float = 0.0
    fingerprint: np.ndarray | None = None


@dataclass(frozen=True)
class Drop:
    track_id: str
    package: str
    source_path: str
    duration_s: float | None
    reason: str
    audible_s: float | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="corpus settings and package list (default: %(default)s)")
    parser.add_argument("--packages", default=None,
                        help="comma-separated subset of the config's packages for a quick run, e.g. asc-music,singularity-music (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the config's output_dir, artifacts/corpus)")
    parser.add_argument("--min-seconds", type=float, default=None, help="keep tracks at least this long (default: the config's, 30)")
    parser.add_argument("--threshold", type=float, default=None, help="near-duplicate similarity threshold (default: the config's)")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes (default: %(default)s)")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get: fail with the command to run instead")


def main(args: argparse.Namespace) -> int:
    cfg = load_corpus_config(args.config)
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    if args.min_seconds is not None and args.min_seconds < 0:
        raise SystemExit("--min-seconds must be >= 0")
    if args.threshold is not None and not 0 < args.threshold <= 1:
        raise SystemExit("--threshold must be in (0, 1]")
    cfg = replace(
        cfg,
        packages=tuple(_chosen_packages(cfg, args.packages)),
        min_seconds=cfg.min_seconds if args.min_seconds is None else args.min_seconds,
        near_duplicate=cfg.near_duplicate if args.threshold is None else replace(cfg.near_duplicate, threshold=args.threshold),
    )
    started = time.monotonic()
    packages = list(cfg.packages)
    if args.no_install:
        missing = [package for package in packages if not installed(package)]
        if missing:
            raise SystemExit(f"packages not installed: {' '.join(missing)}; install them with: sudo apt-get install -y --no-install-recommends {' '.join(missing)}")
    else:
        ensure_installed(packages)
    listings = [list_package(package, dpkg_files(package), package in cfg.music_folder_only) for package in packages]
    out = Path(args.out or cfg.output_dir)
    summary = build_corpus(listings, out, cfg, workers=args.workers, started=started)
    per_package = ", ".join(f"{name} {entry['tracks']} ({entry['minutes']:.1f} min)" for name, entry in summary["per_package"].items())
    print(f"{out}: {summary['tracks']} tracks, {summary['minutes']:.1f} min [{per_package}]; "
          f"dropped {json.dumps(summary['dropped'])}; {summary['wall_s']:.0f} s")
    return 0


def _chosen_packages(cfg: CorpusConfig, subset: str | None) -> list[str]:
    if not cfg.packages:
        raise SystemExit("the corpus config lists no packages")
    if subset is None:
        return list(cfg.packages)
    chosen = [name.strip() for name in subset.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in cfg.packages]
    if unknown or not chosen:
        raise SystemExit(f"--packages: {', '.join(unknown) or 'empty'} not in the config's packages {', '.join(cfg.packages)}")
    return [name for name in cfg.packages if name in chosen]


def build_corpus(
    listings: list[Listing], out: Path, cfg: CorpusConfig, workers: int = 2, doc_root: Path = DOC_ROOT, started: float | None = None
) -> dict:
    """Write the corpus for ``listings`` under ``out`` (see the module doc); returns the summary."""
    started = time.monotonic() if started is None else started
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    drops: list[Drop] = []
    tracks: dict[str, Track] = {}
    for listing in listings:
        drops += [Drop("", listing.package, path, None, f"duplicate-of {track_id}") for path, track_id in listing.aliases]
        drops += [Drop("", listing.package, path, None, reason) for path, reason in listing.errors]
        for track_id, source in listing.sources.items():
            if track_id in tracks:
                raise SystemExit(f"track id {track_id} from both {tracks[track_id].source.package} and {listing.package}")
            tracks[track_id] = Track(track_id, source)

    unique = _drop_identical(tracks, drops)
    readable = _analyse(unique, out, cfg, workers, drops)
    long_tracks = []
    for track in readable:
        if track.audible_s < cfg.min_seconds:
            drops.append(Drop(track.track_id, track.source.package, track.source.source_path, track.duration_s, "short", track.audible_s))
        else:
            long_tracks.append(track)
    kept, closest, scores = _drop_near_duplicates(long_tracks, cfg, out, drops)
    _materialise(kept, [drop.track_id for drop in drops if drop.track_id], out, workers)

    splits = assign_splits_by_hash([t.track_id for t in kept], cfg.splits.val_ratio, cfg.splits.test_ratio, cfg.splits.seed)
    split_of = {track_id: name for name, ids in splits.items() for track_id in ids}
    _write_manifest(out / MANIFEST, kept, split_of, doc_root)
    _write_dropped(out / DROPPED, drops)
    summary = _summary(listings, kept, drops, split_of, closest, cfg, time.monotonic() - started)
    _write_json(out / SUMMARY, summary)
    _plot_similarities(out / "similarity.png", scores, cfg)
    return summary


def _remove_stale_temporaries(out: Path) -> None:
    for folder in (out, out / "audio", out / "cache"):
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


def _drop_identical(tracks: dict[str, Track], drops: list[Drop]) -> list[Track]:
    """Hash every source; byte-identical copies are duplicates of the smallest id among them."""
    first_with: dict[str, str] = {}
    unique: list[Track] = []
    for track_id in tqdm(sorted(tracks), desc="hash", unit="file", mininterval=1.0):
        track = tracks[track_id]
        try:
            track.sha256 = hashlib.sha256(track.source.read_bytes()).hexdigest()
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            drops.append(Drop(track_id, track.source.package, track.source.source_path, None, f"unreadable: {exc}"))
            continue
        if track.sha256 in first_with:
            drops.append(Drop(track_id, track.source.package, track.source.source_path, None, f"duplicate-of {first_with[track.sha256]}"))
        else:
            first_with[track.sha256] = track_id
            unique.append(track)
    return unique


def _cache_path(out: Path, track_id: str) -> Path:
    return out / "cache" / f"{track_id}.npz"


def _wav_path(out: Path, track_id: str) -> Path:
    return out / "audio" / f"{track_id}.wav"


def _read_cache(path: Path) -> dict | None:
    try:
        with np.load(path) as data:
            return {"sha256": str(data["sha256"]), "tag": str(data["tag"]), "duration_s": float(data["duration_s"]),
                    "audible_s": float(data["audible_s"]) if "audible_s" in data.files else None, "fingerprint": data["fingerprint"]}
    except (OSError, KeyError, ValueError):
        return None


def _write_cache(path: Path, sha256: str, tag: str, duration_s: float, audible_s: float, fp: np.ndarray) -> None:
    _save_arrays(path, sha256=np.array(sha256), tag=np.array(tag), duration_s=np.array(duration_s), audible_s=np.array(audible_s), fingerprint=fp)


def _analyse(tracks: list[Track], out: Path, cfg: CorpusConfig, workers: int, drops: list[Drop]) -> list[Track]:
    """Duration and fingerprint of every track, from the cache or by decoding (which also writes the WAV)."""
    tag = f"{ANALYSIS}:{cfg.fingerprint.tag()}"
    jobs = []
    for track in tracks:
        cached = _read_cache(_cache_path(out, track.track_id))
        if cached is not None and (cached["sha256"], cached["tag"]) == (track.sha256, tag):
            track.duration_s, track.audible_s, track.fingerprint = cached["duration_s"], cached["audible_s"], cached["fingerprint"]
            continue
        # Same file, other fingerprint settings: the WAV already holds the decoded audio.
        reuse_wav = cached is not None and cached["sha256"] == track.sha256 and _wav_path(out, track.track_id).is_file()
        jobs.append((track.track_id, track.source, track.sha256, out, cfg.min_seconds, cfg.fingerprint, tag, reuse_wav))
    errors: dict[str, str] = {}
    for track_id, error in _run(_analyse_one, jobs, workers, "decode"):
        if error:
            errors[track_id] = error
    readable = []
    for track in tracks:
        if track.track_id in errors:
            drops.append(Drop(track.track_id, track.source.package, track.source.source_path, None, f"unreadable: {errors[track.track_id]}"))
            continue
        if track.fingerprint is None:
            cached = _read_cache(_cache_path(out, track.track_id))
            assert cached is not None, track.track_id
            track.duration_s, track.audible_s, track.fingerprint = cached["duration_s"], cached["audible_s"], cached["fingerprint"]
        readable.append(track)
    return readable


def _analyse_one(job: tuple[str, Source, str, Path, float, FingerprintConfig, str, bool]) -> tuple[str, str]:
    track_id, source, sha256, out, min_seconds, fp_cfg, tag, reuse_wav = job
    wav = _wav_path(out, track_id)
    try:
        x = load_audio(wav) if reuse_wav else source.decode()
    except AudioError as exc:
        return track_id, str(exc)
    if not reuse_wav:
        # Measured on what the WAV holds, so that a rerun reading it back finds the same numbers.
        x = _as_pcm16(x)
    duration_s, audible_s = x.size / SAMPLE_RATE, audible_seconds(x, SAMPLE_RATE)
    if audible_s >= min_seconds and not reuse_wav:
        write_wav(wav, x)
    # Short files are fingerprinted too: the cache then serves any later --min-seconds.
    _write_cache(_cache_path(out, track_id), sha256, tag, duration_s, audible_s, fingerprint(x, fp_cfg))
    return track_id, ""


def _as_pcm16(x: np.ndarray) -> np.ndarray:
    """``x`` as ``write_wav`` stores it and ``load_audio`` reads it back."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(x, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    buffer.seek(0)
    return sf.read(buffer, dtype="float32")[0]


def _run(function, jobs: list, workers: int, desc: str):
    """``function`` over ``jobs`` with a progress bar, in ``workers`` processes when there is work for them."""
    with tqdm(total=len(jobs), desc=desc, unit="file", mininterval=1.0) as progress:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield function(job)
                progress.update()
            return
        # Longest files first: a long file started last would leave the other workers idle.
        jobs = sorted(jobs, key=lambda job: -job[1].size())
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for result in pool.imap_unordered(function, jobs):
                yield result
                progress.update()


def _write_one(job: tuple[str, Source, Path]) -> tuple[str, str]:
    track_id, source, out = job
    try:
        write_wav(_wav_path(out, track_id), source.decode())
    except AudioError as exc:
        return track_id, str(exc)
    return track_id, ""


def _drop_near_duplicates(tracks: list[Track], cfg: CorpusConfig, out: Path, drops: list[Drop]) -> tuple[list[Track], list[dict], np.ndarray]:
    """Longest first, a track is kept unless it matches an already kept one at the threshold or above."""
    near = cfg.near_duplicate
    window = max(1, round(near.window_seconds * cfg.fingerprint.frames_per_second))
    order = sorted(tracks, key=lambda t: (-t.duration_s, t.track_id))
    keys = np.array([f"{t.track_id}:{t.sha256}" for t in order])
    params = f"{ANALYSIS}:{cfg.fingerprint.tag()}:{window}:{near.candidate_shifts}"
    known = _known_similarities(out / SIMILARITIES, keys, params)
    scores, shifts = similarity_matrix([t.fingerprint for t in order], window, near.candidate_shifts, known=known)
    _save_arrays(out / SIMILARITIES, keys=keys, params=np.array(params), track_ids=np.array([t.track_id for t in order]),
                 scores=scores, shifts=shifts)
    kept: list[int] = []
    for index, track in enumerate(order):
        match = max(kept, key=lambda k: scores[index, k], default=None)
        if match is not None and scores[index, match] >= near.threshold:
            reason = f"near-duplicate-of {order[match].track_id} (similarity {scores[index, match]:.3f})"
            drops.append(Drop(track.track_id, track.source.package, track.source.source_path, track.duration_s, reason))
        else:
            kept.append(index)
    pairs = sorted(((scores[i, j], i, j) for n, i in enumerate(kept) for j in kept[n + 1 :]), reverse=True)[:CLOSEST_PAIRS]
    closest = [
        {"a": order[i].track_id, "b": order[j].track_id, "similarity": round(float(score), 4),
         "b_offset_s": round(float(shifts[i, j]) / cfg.fingerprint.frames_per_second, 2)}
        for score, i, j in pairs
    ]
    return sorted((order[i] for i in kept), key=lambda t: t.track_id), closest, scores


def _known_similarities(path: Path, keys: np.ndarray, params: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores of an earlier run for the pairs whose files (id and hash) and settings are unchanged; NaN elsewhere."""
    try:
        with np.load(path) as data:
            if str(data["params"]) != params:
                return None
            earlier = {key: index for index, key in enumerate(data["keys"].tolist())}
            old_scores, old_shifts = data["scores"], data["shifts"]
    except (OSError, KeyError, ValueError):
        return None
    where = np.array([earlier.get(key, -1) for key in keys.tolist()])
    both = (where[:, None] >= 0) & (where[None, :] >= 0)
    rows, cols = np.clip(where, 0, None)[:, None], np.clip(where, 0, None)[None, :]
    return np.where(both, old_scores[rows, cols], np.nan), np.where(both, old_shifts[rows, cols], 0)


def _save_arrays(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _materialise(kept: list[Track], dropped_ids: list[str], out: Path, workers: int) -> None:
    """WAVs for exactly the kept tracks: write the missing ones, remove those of dropped tracks."""
    jobs = [(t.track_id, t.source, out) for t in kept if not _wav_path(out, t.track_id).is_file()]
    for track_id, error in _run(_write_one, jobs, workers, "write"):
        if error:
            raise SystemExit(f"{track_id}: decoded before but not now: {error}")
    for track_id in dropped_ids:
        _wav_path(out, track_id).unlink(missing_ok=True)


def _write_rows(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_manifest(path: Path, kept: list[Track], split_of: dict[str, str], doc_root: Path) -> None:
    _write_rows(path, MANIFEST_COLUMNS, [
        (t.track_id, t.source.package, t.source.source_path, f"{t.duration_s:.3f}",
         package_licence(t.source.package, t.source.installed_path, doc_root), split_of[t.track_id], f"audio/{t.track_id}.wav")
        for t in kept
    ])


def _write_dropped(path: Path, drops: list[Drop]) -> None:
    rows = sorted(drops, key=lambda d: (d.package, d.source_path))
    _write_rows(path, DROPPED_COLUMNS, [
        (d.track_id, d.package, d.source_path, "" if d.duration_s is None else f"{d.duration_s:.3f}",
         "" if d.audible_s is None else f"{d.audible_s:.1f}", d.reason) for d in rows
    ])


def reason_kind(reason: str) -> str:
    """``short`` | ``duplicate`` | ``near-duplicate`` | ``unreadable``: how summary.json counts drops."""
    head = reason.split(" ", 1)[0].rstrip(":")
    return head.removesuffix("-of")


def _summary(
    listings: list[Listing], kept: list[Track], drops: list[Drop], split_of: dict[str, str], closest: list[dict], cfg: CorpusConfig, wall_s: float
) -> dict:
    kinds = ("short", "duplicate", "near-duplicate", "unreadable")
    per_package = {}
    for listing in listings:
        mine = [t for t in kept if t.source.package == listing.package]
        dropped = Counter(reason_kind(d.reason) for d in drops if d.package == listing.package)
        per_package[listing.package] = {
            "files": len(listing.sources) + len(listing.aliases) + len(listing.errors),
            "tracks": len(mine),
            "minutes": round(sum(t.duration_s for t in mine) / 60, 2),
            "dropped": {kind: dropped[kind] for kind in kinds},
        }
    splits = {
        name: {"tracks": sum(1 for t in kept if split_of[t.track_id] == name),
               "minutes": round(sum(t.duration_s for t in kept if split_of[t.track_id] == name) / 60, 2)}
        for name in ("train", "val", "test")
    }
    dropped = Counter(reason_kind(d.reason) for d in drops)
    return {
        "packages": list(cfg.packages),
        "tracks": len(kept),
        "minutes": round(sum(t.duration_s for t in kept) / 60, 2),
        "per_package": per_package,
        "splits": splits,
        "dropped": {kind: dropped[kind] for kind in kinds},
        "near_duplicates": {**asdict(cfg.near_duplicate), "closest_kept_pairs": closest},
        "min_seconds": cfg.min_seconds,
        "fingerprint": asdict(cfg.fingerprint),
        "wall_s": round(wall_s, 1),
    }


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _plot_similarities(path: Path, scores: np.ndarray, cfg: CorpusConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    upper = scores[np.triu_indices(scores.shape[0], k=1)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(upper, bins=np.linspace(min(0.0, float(upper.min(initial=0.0))), 1.0, 81), color="tab:blue", log=True)
    threshold = cfg.near_duplicate.threshold
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"near-duplicate threshold {threshold:g}")
    ax.set_xlabel(f"similarity: best mean frame cosine over {cfg.near_duplicate.window_seconds:g} s, over time shifts")
    ax.set_ylabel("track pairs")
    ax.set_title(f"{scores.shape[0]} tracks of {cfg.min_seconds:g} s or more, {upper.size} pairs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
