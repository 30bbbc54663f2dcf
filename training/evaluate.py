"""`python -m training evaluate`: Recall@K / MRR of a checkpoint on a split, per listening condition and query length.

Catalog: every track of the split as overlapping segment windows of its clean tokens, fused per
track by max score. Queries: excerpts of L seconds at random offsets of the track audio, degraded
per condition, tokenized by the MOSS encoder exactly as a live query would be. Fixed seed.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.metrics_target import add_metrics_arguments, metrics_target
from training.audio_io import SAMPLE_RATE, list_audio_files, load_audio
from training.augment import CONDITIONS, degrade
from training.dataset import HOP_FRAMES, WINDOW_FRAMES, CatalogConfig, build_catalog
from training.encode import HOP, encode_clips
from training.metrics import ranks_of_targets, retrieval_metrics
from training.moss.weights import build_encoder
from training.retrieval import embed_sequences, rank_tracks_exact, rank_tracks_faiss, torch_embed_fn
from training.splits import read_split
from training.token_files import TokenFile, load_tracks
from training.tokenize import add_moss_arguments, moss_spec
from training.train import load_embedder, resolve_device

PROTOCOLS = ("same_file_aug", "cross_chunk")
QUERY_ALIGNMENTS = ("sample", "frame", "start")


@dataclass(frozen=True)
class Query:
    track: int  # index into the catalog's track list
    chunk: int  # the catalog chunk the excerpt comes from (excluded under cross_chunk)
    condition: str
    seconds: float
    waveform: np.ndarray


def make_queries(tracks: dict[str, list[TokenFile]], track_ids: list[str], audio_paths: dict[str, Path], lengths: list[float], conditions: list[str], seed: int, protocol: str, alignment: str) -> list[Query]:
    """Fixed-seed excerpts; ``alignment``: "sample" starts them anywhere, "frame" on the catalog's 1,920-sample
    grid, "start" where the catalog's tokens start (same samples and same causal context as the catalog)."""
    grid = HOP if alignment == "frame" else 1
    rng = np.random.default_rng(seed)
    queries = []
    for t, track_id in enumerate(tqdm(track_ids, desc="queries", unit="track")):
        audio = load_audio(audio_paths[track_id])
        chunks = tracks[track_id]
        if protocol == "cross_chunk" and len(chunks) < 2:
            continue
        starts = np.cumsum([0.0] + [c.duration_s for c in chunks])
        for seconds in lengths:
            for condition in conditions:
                c = int(rng.integers(len(chunks))) if protocol == "cross_chunk" else 0
                begin, end = (starts[c], starts[c + 1]) if protocol == "cross_chunk" else (0.0, starts[-1])
                size = int(seconds * SAMPLE_RATE)
                first = int(begin * SAMPLE_RATE)
                last = max(first, int(end * SAMPLE_RATE) - size)
                offset = first if alignment == "start" else int(rng.integers(-(-first // grid), max(-(-first // grid), last // grid) + 1)) * grid
                excerpt = audio[offset : offset + size]
                queries.append(Query(t, c, condition, seconds, degrade(excerpt, condition, rng)))
    return queries


def grouped_metrics(ranks: np.ndarray, keys: list) -> dict:
    return {str(k): retrieval_metrics(ranks[np.array([key == k for key in keys])]) for k in dict.fromkeys(keys)}


def plot_recall_vs_length(by_condition_length: dict, lengths: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for condition, per_length in by_condition_length.items():
        ax.plot(lengths, [per_length[str(length)]["recall@1"] for length in lengths], marker="o", label=condition)
    ax.set_xscale("log")
    ax.set_xticks(lengths, [f"{length:g}" for length in lengths])
    ax.set_xlabel("query length (s)")
    ax.set_ylabel("recall@1")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Recall@1 vs query length per listening condition")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--output-json", type=Path, required=True)
    parser.add_argument("--use-faiss", action="store_true", help="also rank through FAISS IndexFlatIP and check it agrees with exact search")
    parser.add_argument("--tokens-root", type=Path, default=Path("artifacts/tokens"))
    parser.add_argument("--splits-root", type=Path, default=Path("artifacts/splits"))
    parser.add_argument("--audio-root", type=Path, default=Path("artifacts/audio"), help="where the queries are cut from (file stem = track id)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="same_file_aug")
    parser.add_argument("--query-alignment", choices=QUERY_ALIGNMENTS, default="sample", help="sample: excerpts start anywhere (a live query); frame: on the 1,920-sample frame grid; start: where the catalog tokens start")
    parser.add_argument("--query-seconds", type=float, nargs="+", default=[1.0, 2.0, 5.0, 10.0])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--window-frames", type=int, default=WINDOW_FRAMES, help="catalog segment length in frames (12.5 per second)")
    parser.add_argument("--hop-frames", type=int, default=HOP_FRAMES)
    parser.add_argument("--max-tracks", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of recall@1 vs query length (default: next to the JSON)")
    add_moss_arguments(parser)
    add_metrics_arguments(parser)


def main(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    split_ids = read_split(args.splits_root / f"{args.split}.txt")[: args.max_tracks]
    tracks = load_tracks(args.tokens_root, split_ids)
    absent = sorted(set(split_ids) - set(tracks))
    if absent:
        raise SystemExit(f"{len(absent)} tracks of split {args.split!r} have no tokens under {args.tokens_root}, e.g. {absent[:5]}")
    audio_paths = {p.stem: p for p in list_audio_files(args.audio_root)}
    catalog = build_catalog(tracks, CatalogConfig(window_s=args.window_frames * HOP / SAMPLE_RATE, hop_s=args.hop_frames * HOP / SAMPLE_RATE))
    queries = make_queries(tracks, catalog.track_ids, audio_paths, args.query_seconds, args.conditions, args.seed, args.protocol, args.query_alignment)
    if not queries:
        raise SystemExit(f"no queries: protocol {args.protocol} needs tracks tokenized in several chunks (tokenize --chunk-seconds)")
    encoder = build_encoder(moss_spec(args), device=device)
    query_codes = encode_clips(encoder, [q.waveform for q in tqdm(queries, desc="tokenize queries", unit="query")], args.n_quantizers, args.batch_size, device)
    embed = torch_embed_fn(load_embedder(args.checkpoint, device), device)
    query_emb = embed_sequences(embed, query_codes)
    segment_emb = embed_sequences(embed, catalog.segments)
    query_chunk = np.array([q.chunk for q in queries])
    query_track = np.array([q.track for q in queries])
    excluded = None
    if args.protocol == "cross_chunk":
        excluded = (catalog.segment_track[None, :] == query_track[:, None]) & (catalog.segment_chunk[None, :] == query_chunk[:, None])
    order, _ = rank_tracks_exact(query_emb, segment_emb, catalog.segment_track, len(catalog.track_ids), excluded)
    ranks = ranks_of_targets([list(row) for row in order], list(query_track))
    result = {**retrieval_metrics(ranks), "catalog_tracks": len(catalog.track_ids), "catalog_segments": len(catalog.segments)}
    if args.use_faiss:
        faiss_order, _ = rank_tracks_faiss(query_emb, segment_emb, catalog.segment_track, len(catalog.track_ids), excluded)
        result["faiss_top1_agreement"] = float(np.mean(faiss_order[:, 0] == order[:, 0]))
        result["faiss_ranks_equal"] = bool(np.array_equal(ranks_of_targets([list(r) for r in faiss_order], list(query_track)), ranks))
    conditions = [q.condition for q in queries]
    lengths = [str(q.seconds) for q in queries]
    result["by_condition"] = grouped_metrics(ranks, conditions)
    result["by_length"] = grouped_metrics(ranks, lengths)
    result["by_condition_length"] = {
        c: grouped_metrics(ranks[np.array([q.condition == c for q in queries])], [str(q.seconds) for q in queries if q.condition == c])
        for c in args.conditions
    }
    result.update({"split": args.split, "protocol": args.protocol, "query_alignment": args.query_alignment, "checkpoint": str(args.checkpoint), "moss": moss_spec(args), "seed": args.seed})
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    args.output_json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    target = metrics_target(args)
    if target is not None:
        from common.metrics_db import MetricsDatabaseError, record_quality

        try:
            print(f"recorded {record_quality(target, result)} quality rows for run {target.run_id}")
        except MetricsDatabaseError as error:
            raise SystemExit(f"the results are in {args.output_json}, but recording them failed: {error}") from error
    plot = args.plot or args.output_json.with_suffix(".png")
    plot_recall_vs_length(result["by_condition_length"], args.query_seconds, plot)
    print(json.dumps({k: result[k] for k in ("recall@1", "recall@10", "recall@100", "mrr", "queries", "catalog_tracks")}))
    print(f"by condition recall@1: " + ", ".join(f"{c} {m['recall@1']:.3f}" for c, m in result["by_condition"].items()))
    return 0
