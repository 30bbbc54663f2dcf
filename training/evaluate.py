"""`python -m training evaluate`: Recall@K / MRR of a checkpoint as a user meets it, per listening condition and query length.

Catalog: every track under the tokens roots (all splits, plus any distractors), as the served index holds
them: overlapping windows (training.dataset.CatalogConfig) fused per track by max score. Queries: excerpts
of L seconds at random SAMPLE offsets of the tracks of one split (the test split: never trained on),
degraded per condition (training.conditions) and embedded exactly as `audio_search` does (the served
windowing, each window tokenized alone). Query offsets are seeded per track: adding tracks leaves every
other track's queries unchanged.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.metrics_target import add_metrics_arguments, metrics_target
from common.yaml_config import from_dict
from training.audio_io import SAMPLE_RATE, list_audio_files, load_audio
from training.augment import NoiseSource
from training.conditions import BABBLE_TRACKS, QUERY_CONDITIONS, babble_source, degrade_query
from training.dataset import CATALOG_TOKENIZE, CatalogConfig, SegmentCatalog, build_catalog
from training.encode import clip_encoder
from training.metrics import ranks_in_order, retrieval_metrics
from training.moss.weights import build_encoder
from training.retrieval import EmbedFn, embed_queries, embed_sequences, rank_tracks_exact, rank_tracks_faiss, torch_embed_fn
from training.splits import SPLIT_NAMES, read_split
from training.token_files import TokenFile, load_tracks
from training.tokenize import add_moss_arguments, moss_spec
from training.train import load_embedder, resolve_device, trained_layout
from training.view_synth import track_rng

PROTOCOLS = ("same_file_aug", "cross_chunk")
# Kept in the report (and the run-metrics scope) so runs of the earlier start- and frame-aligned
# evaluations are never compared with these.
QUERY_ALIGNMENT = "sample"
# Queries embedded per encoder pass group; bounds the audio held in memory at once.
QUERY_BLOCK = 256
# Queries ranked per block: bounds the [queries, segments] score matrix.
RANK_BLOCK = 512


@dataclass(frozen=True)
class Query:
    track: int  # index into the catalog's track list
    chunk: int  # the catalog chunk the excerpt comes from (excluded under cross_chunk)
    condition: str
    seconds: float
    offset: int  # first sample of the excerpt in the whole track
    waveform: np.ndarray


def track_queries(track: int, track_id: str, audio: np.ndarray, chunks: list[TokenFile], lengths: list[float], conditions: list[str],
                  per_track: int, seed: int, protocol: str, babble: NoiseSource | None) -> list[Query]:
    """``per_track`` excerpts per (length, condition) of one track at random sample offsets, degraded."""
    rng = track_rng(seed, track_id)
    bounds = np.cumsum([0] + [int(round(c.duration_s * SAMPLE_RATE)) for c in chunks])
    bounds[-1] = min(bounds[-1], audio.size)
    queries = []
    for seconds in lengths:
        size = int(round(seconds * SAMPLE_RATE))
        for condition in conditions:
            for _ in range(per_track):
                chunk = int(rng.integers(len(chunks))) if protocol == "cross_chunk" else 0
                first, end = (bounds[chunk], bounds[chunk + 1]) if protocol == "cross_chunk" else (0, bounds[-1])
                offset = int(rng.integers(first, max(first, end - size) + 1))
                excerpt = audio[offset : offset + size]
                queries.append(Query(track, chunks[chunk].chunk_index, condition, seconds, offset, degrade_query(excerpt, condition, rng, babble)))
    return queries


def check_inputs(checkpoint: Path, split_file: Path, audio_roots: list[Path]) -> None:
    """One line instead of a traceback for the inputs a user names wrongly."""
    for path, what in ((checkpoint, "--checkpoint"), (split_file, "the split file")):
        if not path.is_file():
            raise SystemExit(f"{what} {path} does not exist")
    for root in audio_roots:
        if not root.exists():
            raise SystemExit(f"--audio-root {root} does not exist")


def sample_tracks(track_ids: list[str], limit: int | None, seed: int) -> list[str]:
    """At most ``limit`` of ``track_ids``, a seeded sample (sorted ids often group a source or an album together)."""
    if limit is None or limit >= len(track_ids):
        return list(track_ids)
    return sorted(np.random.default_rng(seed).choice(track_ids, size=limit, replace=False).tolist())


def babble_pool(splits_root: Path, query_split: str, audio_paths: dict[str, Path]) -> NoiseSource:
    """``babble5``'s source: the tracks of the other splits (never queried) that have audio."""
    others = sorted({t for name in SPLIT_NAMES if name != query_split and (splits_root / f"{name}.txt").is_file()
                     for t in read_split(splits_root / f"{name}.txt")} & set(audio_paths))
    if len(others) < BABBLE_TRACKS:
        raise SystemExit(f"babble5 mixes {BABBLE_TRACKS} tracks of splits other than {query_split!r}; only {len(others)} have audio")
    return babble_source([audio_paths[t] for t in others])


def grouped_metrics(ranks: np.ndarray, keys: list) -> dict:
    return {str(k): retrieval_metrics(ranks[np.array([key == k for key in keys])]) for k in dict.fromkeys(keys)}


def condition_length_table(ranks: np.ndarray, conditions: list[str], lengths: list[float]) -> dict:
    return {
        c: grouped_metrics(ranks[np.array([q == c for q in conditions])], [str(s) for q, s in zip(conditions, lengths) if q == c])
        for c in dict.fromkeys(conditions)
    }


def plot_recall_vs_length(by_condition_length: dict, lengths: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for condition, per_length in by_condition_length.items():
        ax.plot(lengths, [per_length[str(length)]["recall@1"] for length in lengths], marker="o", label=condition)
    ax.set_xscale("log")
    ax.set_xticks(lengths, [f"{length:g}" for length in lengths])
    ax.set_xlabel("query length (s), random sample offsets")
    ax.set_ylabel("recall@1")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class QuerySet:
    """Embedded queries: window rows [R, D], the query of each row, and each query's labels."""

    rows: np.ndarray
    row_query: np.ndarray
    track: np.ndarray
    chunk: np.ndarray
    conditions: list[str]
    seconds: list[float]
    offsets: np.ndarray


def embed_query_stream(queries: Iterator[Query], encode_and_embed, total: int) -> QuerySet:
    rows, owners, labels = [], [], []
    block: list[Query] = []
    with tqdm(total=total, desc="queries", unit="query") as progress:
        def flush() -> None:
            emb, owner = encode_and_embed([q.waveform for q in block])
            rows.append(emb)
            owners.append(owner + len(labels))
            labels.extend((q.track, q.chunk, q.condition, q.seconds, q.offset) for q in block)
            progress.update(len(block))
            block.clear()

        for query in queries:
            block.append(query)
            if len(block) >= QUERY_BLOCK:
                flush()
        if block:
            flush()
    if not labels:
        raise ValueError("no queries")
    track, chunk, conditions, seconds, offsets = zip(*labels)
    return QuerySet(np.concatenate(rows), np.concatenate(owners), np.array(track), np.array(chunk), list(conditions), list(seconds), np.array(offsets))


def rank_queries(queries: QuerySet, segments: np.ndarray, catalog: SegmentCatalog, protocol: str, use_faiss: bool) -> dict[str, np.ndarray]:
    """Per query, the rank of its own track (1-based) and the top-1 track, by exact search ("exact", "exact_top1")
    and by FAISS when asked ("faiss", "faiss_top1"); in blocks of queries."""
    n_tracks = len(catalog.track_ids)
    out: dict[str, list[np.ndarray]] = {}
    starts = np.searchsorted(queries.row_query, np.arange(0, len(queries.track), RANK_BLOCK))
    bounds = [*starts, len(queries.row_query)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = np.unique(queries.row_query[a:b])
        excluded = None
        if protocol == "cross_chunk":
            excluded = (catalog.segment_track[None, :] == queries.track[members, None]) & (catalog.segment_chunk[None, :] == queries.chunk[members, None])
        rows, owner = queries.rows[a:b], queries.row_query[a:b]
        for name, rank in (("exact", rank_tracks_exact), ("faiss", rank_tracks_faiss))[: 1 + use_faiss]:
            order, _ = rank(rows, segments, catalog.segment_track, n_tracks, excluded, owner)
            out.setdefault(name, []).append(ranks_in_order(order, queries.track[members]))
            out.setdefault(f"{name}_top1", []).append(order[:, 0])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output-json", type=Path, required=True)
    parser.add_argument("--split", default="test", help="the split whose tracks are queried (the catalog holds every track)")
    parser.add_argument("--use-faiss", action="store_true", help="also rank through FAISS IndexFlatIP and report its agreement with exact search")
    parser.add_argument("--tokens-root", type=Path, nargs="+", default=[Path("artifacts/tokens")],
                        help="token files of the catalog: every track under these folders is in it (all splits, distractors)")
    parser.add_argument("--splits-root", type=Path, default=Path("artifacts/splits"))
    parser.add_argument("--audio-root", type=Path, nargs="+", default=[Path("artifacts/audio")],
                        help="audio of the catalog tracks (file stem = track id): queries are cut from it, babble mixed from it")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="same_file_aug")
    parser.add_argument("--query-seconds", type=float, nargs="+", default=[1.0, 2.0, 5.0, 10.0])
    parser.add_argument("--conditions", nargs="+", default=list(QUERY_CONDITIONS), choices=QUERY_CONDITIONS)
    parser.add_argument("--queries-per-track", type=int, default=1, help="excerpts per query track, condition and length")
    parser.add_argument("--max-tracks", type=int, default=None, help="query a seeded sample of at most this many tracks of the split (the catalog stays whole)")
    parser.add_argument("--catalog-tokenize", choices=CATALOG_TOKENIZE, default=None,
                        help="whole: windows cut from whole-track codes; alone: each window's audio tokenized alone (default: the checkpoint's training layout)")
    parser.add_argument("--window-seconds", type=float, default=None, help="catalog window length (default: the checkpoint's training layout)")
    parser.add_argument("--hop-seconds", type=float, default=None, help="catalog window hop (default: the checkpoint's training layout)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of recall@1 vs query length (default: next to the JSON)")
    add_moss_arguments(parser)
    add_metrics_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.queries_per_track < 1:
        raise SystemExit("--queries-per-track must be at least 1")
    split_file = args.splits_root / f"{args.split}.txt"
    check_inputs(args.checkpoint, split_file, args.audio_root)
    device = resolve_device(args.device)
    trained = trained_layout(args.checkpoint)
    try:
        layout = CatalogConfig(args.catalog_tokenize or trained.tokenize, args.window_seconds or trained.window_s, args.hop_seconds or trained.hop_s)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    tracks: dict[str, list[TokenFile]] = {}
    for root in args.tokens_root:
        tracks.update(load_tracks(root))
    if not tracks:
        raise SystemExit(f"no token files under {', '.join(map(str, args.tokens_root))}")
    query_ids = sample_tracks(read_split(split_file), args.max_tracks, args.seed)
    absent = sorted(set(query_ids) - set(tracks))
    if absent:
        raise SystemExit(f"{len(absent)} tracks of split {args.split!r} have no tokens under {', '.join(map(str, args.tokens_root))}, e.g. {absent[:5]}")
    audio_paths = {p.stem: p for root in args.audio_root for p in list_audio_files(root)}
    missing_audio = sorted(set(query_ids) - set(audio_paths))
    if missing_audio:
        raise SystemExit(f"{len(missing_audio)} query tracks have no audio under {', '.join(map(str, args.audio_root))}, e.g. {missing_audio[:5]}")
    # Codes left from tracks since removed (a corpus rebuild drops near-duplicates) must not stay in the catalog.
    stale = sorted(set(tracks) - set(audio_paths))
    if stale:
        print(f"NOTE {len(stale)} tokenized tracks have no audio under the audio roots and are left out of the catalog, e.g. {stale[:3]}")
        tracks = {t: files for t, files in tracks.items() if t in audio_paths}
    if args.protocol == "cross_chunk":
        query_ids = [t for t in query_ids if len(tracks[t]) > 1]
        if not query_ids:
            raise SystemExit(f"no queries: protocol {args.protocol} needs tracks tokenized in several chunks (tokenize --chunk-seconds)")
    babble = babble_pool(args.splits_root, args.split, audio_paths) if "babble5" in args.conditions else None

    encoder = build_encoder(moss_spec(args), device=device)
    embed: EmbedFn = torch_embed_fn(load_embedder(args.checkpoint, device), device)
    started = time.perf_counter()
    catalog = build_catalog(tracks, layout, clip_encoder(encoder, args.n_quantizers, args.batch_size, device), audio_paths)
    segments = embed_sequences(embed, catalog.segments)
    catalog_seconds = time.perf_counter() - started
    index_of = {t: i for i, t in enumerate(catalog.track_ids)}

    def all_queries() -> Iterator[Query]:
        for track_id in query_ids:
            yield from track_queries(index_of[track_id], track_id, load_audio(audio_paths[track_id]), tracks[track_id], args.query_seconds,
                                     args.conditions, args.queries_per_track, args.seed, args.protocol, babble)

    def encode_and_embed(waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return embed_queries(encoder, embed, waveforms, args.n_quantizers, batch_size=args.batch_size, device=device)

    total = len(query_ids) * len(args.query_seconds) * len(args.conditions) * args.queries_per_track
    started = time.perf_counter()
    queries = embed_query_stream(all_queries(), encode_and_embed, total)
    query_seconds = time.perf_counter() - started
    ranked = rank_queries(queries, segments, catalog, args.protocol, args.use_faiss)
    ranks = ranked["exact"]

    music_minutes = sum(c.duration_s for files in tracks.values() for c in files) / 60
    result = {**retrieval_metrics(ranks), "catalog_tracks": len(catalog.track_ids), "catalog_segments": len(catalog.segments)}
    if args.use_faiss:
        result["faiss_top1_agreement"] = float(np.mean(ranked["faiss_top1"] == ranked["exact_top1"]))
        result["faiss_ranks_equal"] = bool(np.array_equal(ranked["faiss"], ranks))
        result["faiss_rank_agreement"] = float(np.mean(ranked["faiss"] == ranks))
    result["by_condition"] = grouped_metrics(ranks, queries.conditions)
    result["by_length"] = grouped_metrics(ranks, [str(s) for s in queries.seconds])
    result["by_condition_length"] = condition_length_table(ranks, queries.conditions, queries.seconds)
    result.update({
        "split": args.split, "protocol": args.protocol, "query_alignment": QUERY_ALIGNMENT, "checkpoint": str(args.checkpoint),
        "moss": moss_spec(args), "seed": args.seed,
        "query_tracks": len(query_ids), "queries_per_track": args.queries_per_track, "query_seconds": args.query_seconds,
        "conditions": args.conditions, "query_offset_seconds": {"min": float(queries.offsets.min() / SAMPLE_RATE), "max": float(queries.offsets.max() / SAMPLE_RATE)},
        "catalog": {"tokenize": layout.tokenize, "window_s": layout.window_s, "hop_s": layout.hop_s, "music_minutes": round(music_minutes, 2),
                    "rows_per_minute": round(len(catalog.segments) / music_minutes, 3),
                    "bytes_per_minute": round(len(catalog.segments) * segments.shape[1] * 4 / music_minutes, 1)},
        "seconds": {"catalog": round(catalog_seconds, 1), "queries": round(query_seconds, 1)},
    })
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    args.output_json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    target = metrics_target(args)
    if target is not None:
        from common.metrics_db import MetricsDatabaseError, record_quality

        try:
            print(f"recorded {record_quality(target, result)} quality rows for run {target.run_id}")
        except MetricsDatabaseError as error:
            raise SystemExit(f"the results are in {args.output_json}, but recording them failed: {error}") from error
    title = f"recall@1 vs query length: {len(query_ids)} {args.split} tracks queried, catalog of {len(catalog.track_ids)} tracks ({moss_spec(args)})"
    plot_recall_vs_length(result["by_condition_length"], args.query_seconds, args.plot or args.output_json.with_suffix(".png"), title)
    print(json.dumps({k: result[k] for k in ("recall@1", "recall@10", "recall@100", "mrr", "queries", "catalog_tracks")}))
    print("by condition recall@1: " + ", ".join(f"{c} {m['recall@1']:.3f}" for c, m in result["by_condition"].items()))
    if args.use_faiss:
        print(f"FAISS IndexFlatIP vs exact search: same rank for {result['faiss_rank_agreement']:.2%} of queries")
    return 0
