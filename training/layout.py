"""`python -m training layout-sweep`: what each catalog layout buys in recall, and what it costs in bytes and build time.

A layout (training.dataset.CatalogConfig) is a window length, a hop, and whether windows are cut from the
whole track's codes or each window's audio is tokenized alone, as a query is. One fixed set of queries
(test-track excerpts at random sample offsets, every listening condition, embedded as `audio_search`
does) is ranked against the catalog each layout builds from the same tracks. Reported per layout:
recall@1 per condition, rows per track, bytes per minute of music (float32 rows) against the budget,
and build seconds per minute of music (tokenizing included: whole tracks once for `whole`, every
window for `alone`). Writes a JSON table and a PNG.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE, list_audio_files, load_audio
from training.conditions import QUERY_CONDITIONS
from training.dataset import CATALOG_TOKENIZE, CatalogConfig, build_catalog
from training.encode import batched, clip_encoder
from training.evaluate import babble_pool, check_inputs, embed_query_stream, grouped_metrics, rank_queries, sample_tracks, track_queries
from training.metrics import retrieval_metrics
from training.moss.attention import blocked_windowed_causal_attention
from training.moss.weights import build_encoder
from training.retrieval import embed_queries, embed_sequences, torch_embed_fn
from training.splits import read_split
from training.token_files import TokenFile
from training.tokenize import add_moss_arguments, moss_spec
from training.train import load_embedder, resolve_device

BUDGET_BYTES_PER_MINUTE = 16 * 1024
DEFAULT_LAYOUTS = ("whole:10:5", "whole:10:10", "whole:20:10", "whole:5:5", "whole:7.5:3.75", "whole:5:2.5",
                   "alone:10:5", "alone:5:5", "alone:7.5:3.75")


def parse_layout(text: str) -> CatalogConfig:
    """``tokenize:window_s:hop_s``, e.g. ``whole:10:5``."""
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError("expected three fields")
        return CatalogConfig(parts[0], float(parts[1]), float(parts[2]))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"layout {text!r}: {error} (format tokenize:window_s:hop_s, tokenize one of {CATALOG_TOKENIZE})") from error


def layout_name(layout: CatalogConfig) -> str:
    return f"{layout.tokenize} {layout.window_s:g}s/{layout.hop_s:g}s"


def plot_layouts(rows: list[dict], conditions: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (table, scatter) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 2.5), gridspec_kw={"width_ratios": [3, 2]})
    values = np.array([[row["recall@1"][c] for c in conditions] for row in rows])
    table.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    table.set_xticks(range(len(conditions)), conditions, rotation=30, fontsize=8)
    table.set_yticks(range(len(rows)), [f"{layout_name(CatalogConfig(r['tokenize'], r['window_s'], r['hop_s']))}  {r['bytes_per_minute'] / 1024:.1f} KB/min" for r in rows], fontsize=8)
    for (i, j), value in np.ndenumerate(values):
        table.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black")
    table.set_title("recall@1 of 5-s queries per condition", fontsize=9)
    for row in rows:
        marker = "o" if row["tokenize"] == "whole" else "s"
        scatter.scatter(row["bytes_per_minute"] / 1024, row["recall@1_all"], marker=marker, color="C0" if row["tokenize"] == "whole" else "C1")
        scatter.annotate(f"{row['window_s']:g}/{row['hop_s']:g}", (row["bytes_per_minute"] / 1024, row["recall@1_all"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    scatter.axvline(BUDGET_BYTES_PER_MINUTE / 1024, color="red", linestyle="--", linewidth=1, label="budget 16 KB/min")
    scatter.plot([], [], "o", color="C0", label="windows cut from whole-track codes")
    scatter.plot([], [], "s", color="C1", label="each window tokenized alone")
    scatter.set_xlabel("catalog KB per minute of music (float32 rows)")
    scatter.set_ylabel("recall@1, all conditions")
    scatter.grid(alpha=0.3)
    scatter.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--audio-root", type=Path, nargs="+", required=True, help="audio of the catalog tracks (file stem = track id): all splits, distractors")
    parser.add_argument("--splits-root", type=Path, required=True)
    parser.add_argument("--split", default="test", help="the split whose tracks are queried")
    parser.add_argument("--layouts", type=parse_layout, nargs="+", default=[parse_layout(t) for t in DEFAULT_LAYOUTS], help="tokenize:window_s:hop_s ...")
    parser.add_argument("--other-tracks", type=int, default=100,
                        help="catalog tracks besides the queried ones (a seeded sample; tokenizing every window alone is the cost); 0 = all")
    parser.add_argument("--max-tracks", type=int, default=None, help="query a seeded sample of at most this many tracks of the split")
    parser.add_argument("--query-seconds", type=float, default=5.0)
    parser.add_argument("--conditions", nargs="+", default=list(QUERY_CONDITIONS), choices=QUERY_CONDITIONS)
    parser.add_argument("--queries-per-track", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--output-json", type=Path, default=Path("reports/layout.json"))
    parser.add_argument("--plot", type=Path, default=None, help="PNG (default: next to the JSON)")
    add_moss_arguments(parser)


def main(args: argparse.Namespace) -> int:
    check_inputs(args.checkpoint, args.splits_root / f"{args.split}.txt", args.audio_root)
    device = resolve_device(args.device)
    audio_paths = {p.stem: p for root in args.audio_root for p in list_audio_files(root)}
    query_ids = sample_tracks(read_split(args.splits_root / f"{args.split}.txt"), args.max_tracks, args.seed)
    missing = sorted(set(query_ids) - set(audio_paths))
    if missing:
        raise SystemExit(f"{len(missing)} tracks of split {args.split!r} have no audio under {', '.join(map(str, args.audio_root))}, e.g. {missing[:5]}")
    others = sorted(set(audio_paths) - set(read_split(args.splits_root / f"{args.split}.txt")))
    if args.other_tracks:
        others = sorted(np.random.default_rng(args.seed).choice(others, size=min(args.other_tracks, len(others)), replace=False).tolist())
    catalog_ids = sorted(set(query_ids) | set(others))
    babble = babble_pool(args.splits_root, args.split, audio_paths) if "babble5" in args.conditions else None

    encoder = build_encoder(moss_spec(args), device=device)
    encoder.set_attention(blocked_windowed_causal_attention)  # whole tracks: memory linear in their length
    encode = clip_encoder(encoder, args.n_quantizers, args.batch_size, device)
    embed = torch_embed_fn(load_embedder(args.checkpoint, device), device)
    # The whole-track codes are made here, timed, so `whole` layouts are charged for tokenizing too.
    started = time.perf_counter()
    whole: dict[str, list[TokenFile]] = {}
    samples = 0
    for batch in batched(tqdm(catalog_ids, desc="whole-track codes", unit="track"), args.batch_size):
        clips = [load_audio(audio_paths[t]) for t in batch]
        for track_id, clip, codes in zip(batch, clips, encode(clips)):
            whole[track_id] = [TokenFile(track_id, 0, codes, str(audio_paths[track_id]), clip.size / SAMPLE_RATE, args.n_quantizers)]
            samples += clip.size
    whole_seconds = time.perf_counter() - started
    minutes = samples / SAMPLE_RATE / 60

    index_of = {t: i for i, t in enumerate(catalog_ids)}
    query_stream = (q for t in query_ids for q in track_queries(index_of[t], t, load_audio(audio_paths[t]), whole[t], [args.query_seconds],
                                                                 args.conditions, args.queries_per_track, args.seed, "same_file_aug", babble))
    queries = embed_query_stream(query_stream, lambda w: embed_queries(encoder, embed, w, args.n_quantizers, batch_size=args.batch_size, device=device),
                                 len(query_ids) * len(args.conditions) * args.queries_per_track)
    rows = []
    for layout in args.layouts:
        print(f"== layout {layout_name(layout)}", flush=True)
        started = time.perf_counter()
        catalog = build_catalog(whole, layout, encode, audio_paths)
        segments = embed_sequences(embed, catalog.segments)
        build_seconds = time.perf_counter() - started + (whole_seconds if layout.tokenize == "whole" else 0.0)
        ranks = rank_queries(queries, segments, catalog, "same_file_aug", use_faiss=False)["exact"]
        per_condition = grouped_metrics(ranks, queries.conditions)
        bytes_per_minute = len(catalog.segments) * segments.shape[1] * 4 / minutes
        rows.append({
            "tokenize": layout.tokenize, "window_s": layout.window_s, "hop_s": layout.hop_s,
            "recall@1": {c: m["recall@1"] for c, m in per_condition.items()}, "recall@1_all": retrieval_metrics(ranks)["recall@1"],
            "mrr": retrieval_metrics(ranks)["mrr"], "rows": len(catalog.segments), "rows_per_track": round(len(catalog.segments) / len(catalog_ids), 2),
            "rows_per_minute": round(len(catalog.segments) / minutes, 2), "bytes_per_minute": round(bytes_per_minute, 1),
            "within_budget": bytes_per_minute <= BUDGET_BYTES_PER_MINUTE, "build_seconds_per_minute": round(build_seconds / minutes, 3),
        })
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "checkpoint": str(args.checkpoint), "moss": moss_spec(args), "device": str(device), "split": args.split, "seed": args.seed,
        "query_seconds": args.query_seconds, "queries": len(queries.track), "query_tracks": len(query_ids), "catalog_tracks": len(catalog_ids),
        "catalog_minutes": round(minutes, 2), "embedding_dim": int(segments.shape[1]), "budget_bytes_per_minute": BUDGET_BYTES_PER_MINUTE,
        "whole_track_tokenize_seconds_per_minute": round(whole_seconds / minutes, 3), "layouts": rows,
    }
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    args.output_json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    title = (f"catalog layouts: {len(queries.track)} {args.query_seconds:g}-s queries of {len(query_ids)} {args.split} tracks, "
             f"catalog of {len(catalog_ids)} tracks ({minutes:.0f} min), {moss_spec(args)}")
    plot_layouts(rows, list(dict.fromkeys(queries.conditions)), args.plot or args.output_json.with_suffix(".png"), title)
    print(json.dumps({"report": str(args.output_json), "layouts": len(rows)}))
    return 0
