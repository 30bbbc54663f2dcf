"""`python -m training views`: query views of every train and val track, with the catalog windows they pair with.

Views (training.view_synth: excerpts at any sample offset, 1-10 s, degraded like a recording) are made
in a process pool sized to the machine, then tokenized alone in batches (CUDA with `--device auto`
where present), as a live query is. Each track's catalog windows come from `build_catalog` under the
config's `catalog` layout, the rows evaluation and the served index use. One file per track; reruns
skip finished tracks, and a views folder made with another config is refused.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from training.audio_io import list_audio_files
from training.dataset import ClipEncoder, build_catalog, save_views, views_path
from training.encode import batched, clip_encoder
from training.moss.weights import build_encoder
from training.splits import read_split
from training.token_files import load_tracks
from training.train import VIEWS_META, TrainConfig, load_train_config, resolve_device, views_meta, views_mismatch
from training.view_synth import QueryView, init_worker, track_views

# Tracks whose views are tokenized together: enough clips for full encoder batches, little memory.
_TRACKS_PER_GROUP = 16


def synthesized(tasks: list[tuple], babble_paths: dict[str, Path], workers: int) -> Iterator[tuple[str, list[QueryView]]]:
    """``track_views`` of every task, in order; with ``workers`` > 0 in that many processes, a bounded number ahead."""
    if workers == 0:
        init_worker(babble_paths)
        yield from map(track_views, tasks)
        return
    # spawn: the workers import NumPy only, and a fork of a process holding torch threads (or CUDA) is unsafe.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker, initargs=(babble_paths,)) as pool:
        pending: deque[Future] = deque()
        for task in tasks:
            pending.append(pool.submit(track_views, task))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("configs/train.yaml"), help="the training config: data paths, tokenizer, catalog layout, views")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="which split files to make views for")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="view synthesis processes (0: in this process)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per encoder batch")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")


def main(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config)
    data = cfg.data
    mismatch = views_mismatch(cfg, tuple(views_meta(cfg)))
    if mismatch:
        raise SystemExit(f"{mismatch}; use another data.views_root or delete it")
    audio_by_track = {p.stem: p for p in list_audio_files(data.audio_root)}
    splits = {name: read_split(Path(data.splits_root) / f"{name}.txt") for name in args.splits}
    track_ids = sorted({t for ids in splits.values() for t in ids})
    missing = [t for t in track_ids if t not in audio_by_track]
    if missing:
        raise SystemExit(f"{len(missing)} tracks of the splits have no audio under {data.audio_root}, e.g. {missing[:5]}")
    tracks = load_tracks(Path(data.tokens_root), track_ids)
    missing = [t for t in track_ids if t not in tracks]
    if missing:
        raise SystemExit(f"{len(missing)} tracks of the splits have no tokens under {data.tokens_root}, e.g. {missing[:5]}")
    shallow = sorted(t for t in track_ids if tracks[t][0].n_quantizers < cfg.model.n_levels)
    if shallow and cfg.catalog.tokenize == "whole":
        raise SystemExit(f"{len(shallow)} token files under {data.tokens_root} have fewer than model.n_levels = {cfg.model.n_levels} RVQ levels, e.g. {shallow[:5]}")
    views_root = Path(data.views_root)
    todo = [t for t in track_ids if not views_path(views_root, t).exists()]
    # Babble is other training tracks' audio, never a val or test track's.
    babble_paths = {t: audio_by_track[t] for t in read_split(Path(data.splits_root) / "train.txt")}
    device = resolve_device(args.device)
    encode = clip_encoder(build_encoder(data.tokenizer, device=device), cfg.model.n_levels, args.batch_size, device)
    views_root.mkdir(parents=True, exist_ok=True)
    (views_root / VIEWS_META).write_text(json.dumps(views_meta(cfg), indent=2), encoding="utf-8")
    tasks = [(t, audio_by_track[t], cfg.views, cfg.seed) for t in todo]
    workers = min(args.workers, len(tasks))
    made = _encode_and_save(synthesized(tasks, babble_paths, workers), tracks, cfg, encode, audio_by_track, views_root, len(todo))
    print(json.dumps({"tracks": len(track_ids), "written": len(todo), "views_written": made, "workers": workers, "device": str(device), **views_meta(cfg)}))
    return 0


def _encode_and_save(results: Iterable[tuple[str, list[QueryView]]], tracks: dict, cfg: TrainConfig, encode: ClipEncoder, audio_by_track: dict[str, Path], views_root: Path, total: int) -> int:
    made = 0
    with tqdm(total=total, desc="views", unit="track") as progress:
        for group in batched(results, _TRACKS_PER_GROUP):
            ids = [track_id for track_id, _ in group]
            catalog = build_catalog({t: tracks[t] for t in ids}, cfg.catalog, encode, audio_by_track, progress=False)
            codes = iter(encode([view.waveform for _, views in group for view in views]))
            for track_id, views in group:
                rows = catalog.segment_track == catalog.track_ids.index(track_id)
                windows = [catalog.segments[i][: cfg.model.n_levels] for i in rows.nonzero()[0]]
                save_views(views_path(views_root, track_id), [next(codes) for _ in views], [v.offset for v in views], [v.waveform.size for v in views], windows, catalog.segment_start[rows])
                made += len(views)
            progress.update(len(group))
    return made
