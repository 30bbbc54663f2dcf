"""`python -m benchmarks milvus-agreement`: top-1 agreement of the Milvus catalog with the FAISS one, through the ensemble.

One model repository (the given tokenizer and embedder, exported to ONNX; the catalog of every tokens folder) is
served twice by the embedded tritonserver on CPU: with `catalog.backend: faiss` (the catalog folder inside
faiss_topk) and with `milvus` (the same tracks written into Milvus Lite by `python -m export index --backend milvus`,
served on a loopback port by `python -m serving milvus-lite`). Both get the same queries through tritonclient:
excerpts of the corpus's TEST-split tracks (never trained on) at seeded random sample offsets, per length and
condition (training.evaluate.track_queries: the evaluation's own draw, degraded by training.augment.degrade).

Reported per condition and length: how often the two top-1 tracks agree, how often the whole top-K lists do,
recall@1 of each (the expected track is the query's own), the largest top-1 score difference, and p50/p95 latency of
each. Queries go one at a time (no concurrency): the latency is one request's. Results: summary.json, table.md and
agreement.png under benchmarks/results/<name>/.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.machine import machine_info
from benchmarks.results import results_dir, write_summary
from demo.run import build_serving_artifacts
from export.repo_configs import load_serving_config, render_repository, with_catalog, write_repository
from export.repo_layout import lay_out_repository
from serving import milvus_catalog
from serving.catalog_index import Catalog, CatalogMismatch, load_catalog, sha256_file
from serving.milvus_lite_server import MilvusLiteServer, free_port
from serving.triton_runtime import EmbeddedTriton
from training.audio_io import SAMPLE_RATE, load_audio
from training.augment import CONDITIONS
from training.evaluate import Query, sample_tracks, track_queries
from training.pipeline import run_step, tokenizer_tag
from training.splits import manifest_splits
from training.token_files import TokenFile, load_tracks

BACKENDS = ("faiss", "milvus")
COLLECTION = "agreement"


@dataclass(frozen=True)
class Answer:
    track_ids: list[str]
    scores: list[float]
    latency_ms: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="the TokenEmbedder checkpoint served")
    parser.add_argument("--tokens-root", type=Path, nargs="+", required=True,
                        help="token files of the catalog (every track in them, test tracks and distractors alike)")
    parser.add_argument("--corpus", type=Path, required=True, help="real-music corpus: manifest.csv (split column) + audio/")
    parser.add_argument("--moss-config", default="models/moss-small", help="tokenizer the tokens were made with (default: %(default)s)")
    parser.add_argument("--query-seconds", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--conditions", nargs="+", default=["clean", "snr10", "reverb"], choices=CONDITIONS)
    parser.add_argument("--queries-per-track", type=int, default=1, help="excerpts per test track, condition and length")
    parser.add_argument("--max-tracks", type=int, default=None, help="query a seeded sample of at most this many test tracks")
    parser.add_argument("--milvus-index-type", choices=tuple(milvus_catalog.INDEX_TYPES), default="flat",
                        help="the Milvus collection's index; FAISS is the exact flat index (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work-dir", type=Path, default=Path("artifacts/milvus-agreement"),
                        help="ONNX exports, the FAISS catalog and the Milvus Lite folder, kept for the next run (default: %(default)s)")
    parser.add_argument("--note", action="append", default=[], help="a caveat about the inputs, kept in the results (repeatable)")
    parser.add_argument("--name", default="milvus-agreement", help="results folder under benchmarks/results (default: %(default)s)")


def draw_queries(args: argparse.Namespace, tracks: dict[str, list[TokenFile]]) -> list[tuple[str, Query]]:
    """The evaluation's draw for the test tracks: per track, condition and length, excerpts at seeded sample offsets."""
    test_ids = sample_tracks(manifest_splits(args.corpus / "manifest.csv")["test"], args.max_tracks, args.seed)
    missing = sorted(t for t in test_ids if t not in tracks or not (args.corpus / "audio" / f"{t}.wav").is_file())
    if missing:
        raise SystemExit(f"{len(missing)} test tracks lack tokens under the tokens roots or audio under {args.corpus}/audio, e.g. {missing[:3]}")
    return [(track_id, query) for index, track_id in enumerate(test_ids)
            for query in track_queries(index, track_id, load_audio(args.corpus / "audio" / f"{track_id}.wav"), tracks[track_id],
                                       args.query_seconds, args.conditions, args.queries_per_track, args.seed, "same_file_aug", None)]


def collection_matches(uri: str, catalog: Catalog, index_type: str) -> bool:
    """Whether the collection a previous run left holds the FAISS catalog's rows, by the same embedder and index type
    (a run stopped half-way leaves fewer rows, which is rebuilt)."""
    try:
        info = milvus_catalog.describe(milvus_catalog.Milvus(uri), COLLECTION)
    except CatalogMismatch:
        return False
    return (info.embedder_sha256, info.index_type, info.n_vectors, info.n_tracks) == (
        catalog.manifest["embedder_sha256"], index_type, catalog.index.ntotal, len(catalog.track_ids))


def build_milvus_catalog(uri: str, checkpoint: Path, embedder_onnx: Path, tokens_roots: list[Path], index_type: str,
                         n_quantizers: int, timings: dict[str, float]) -> None:
    """The same tracks into a Milvus collection, through the same CLI and embedding path as the FAISS catalog."""
    for i, tokens in enumerate(tokens_roots):
        run_step(f"milvus-index-{tokens.name}", "export.index", [
            "--backend", "milvus", "--uri", uri, "--collection", COLLECTION, "--index-type", index_type,
            "--checkpoint", str(checkpoint), "--embedder-onnx", str(embedder_onnx), "--tokens-root", str(tokens),
            "--n-quantizers", str(n_quantizers), *(["--add"] if i else [])], timings)


def serve_and_search(repository: Path, queries: list[np.ndarray], top_k: int, label: str) -> list[Answer]:
    """Every query through `audio_search` of a fresh embedded tritonserver, one request at a time."""
    from client import AudioSearchClient

    answers = []
    with EmbeddedTriton(repository, log_path=repository.parent / f"tritonserver-{label}.log") as server:
        with AudioSearchClient(server.grpc_url, protocol="grpc", retries=0, timeout_s=120) as client:
            client.search(queries[0][:SAMPLE_RATE], top_k=1)  # warm-up: first requests pay ORT/index initialisation
            for waveform in tqdm(queries, desc=f"queries ({label})", unit="query"):
                started = time.perf_counter()
                hits = client.search(waveform, top_k=top_k)
                latency_ms = (time.perf_counter() - started) * 1000
                answers.append(Answer([track for track, _ in hits], [float(score) for _, score in hits], latency_ms))
    return answers


def compare(expected: list[str], faiss: list[Answer], milvus: list[Answer]) -> dict[str, Any]:
    """Agreement, recall@1 and latency of one group of queries."""
    row: dict[str, Any] = {
        "queries": len(expected),
        "top1_agreement": float(np.mean([f.track_ids[:1] == m.track_ids[:1] for f, m in zip(faiss, milvus)])),
        "topk_agreement": float(np.mean([f.track_ids == m.track_ids for f, m in zip(faiss, milvus)])),
        "max_top1_score_diff": float(max(abs(f.scores[0] - m.scores[0]) for f, m in zip(faiss, milvus))),
    }
    for backend, answers in (("faiss", faiss), ("milvus", milvus)):
        latencies = [a.latency_ms for a in answers]
        row[f"recall@1_{backend}"] = float(np.mean([a.track_ids[:1] == [t] for a, t in zip(answers, expected)]))
        row[f"p50_ms_{backend}"] = float(np.percentile(latencies, 50))
        row[f"p95_ms_{backend}"] = float(np.percentile(latencies, 95))
    return row


def by_condition_length(queries: list[tuple[str, Query]], answers: dict[str, list[Answer]]) -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for condition in dict.fromkeys(q.condition for _, q in queries):
        for seconds in dict.fromkeys(q.seconds for _, q in queries):
            chosen = [i for i, (_, q) in enumerate(queries) if (q.condition, q.seconds) == (condition, seconds)]
            table.setdefault(condition, {})[f"{seconds:g}"] = compare(
                [queries[i][0] for i in chosen], *([answers[b][i] for i in chosen] for b in BACKENDS))
    return table


COLUMNS = (("queries", "n", "{:d}"), ("top1_agreement", "top-1 agreement", "{:.1%}"), ("recall@1_faiss", "recall@1 FAISS", "{:.3f}"),
           ("recall@1_milvus", "recall@1 Milvus", "{:.3f}"), ("p50_ms_faiss", "p50 ms FAISS", "{:.0f}"),
           ("p50_ms_milvus", "p50 ms Milvus", "{:.0f}"))


def markdown_table(table: dict[str, dict[str, dict[str, Any]]], overall: dict[str, Any]) -> str:
    lines = ["| condition | length s | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    rows = [(c, s, row) for c, per_length in table.items() for s, row in per_length.items()] + [("all", "all", overall)]
    for condition, seconds, row in rows:
        lines.append(f"| {condition} | {seconds} | " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot_agreement(table: dict[str, dict[str, dict[str, Any]]], path: Path, title: str) -> None:
    """Recall@1 of each backend per condition and length, with the top-1 agreement above each pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(c, s, row) for c, per_length in table.items() for s, row in per_length.items()]
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups)), 4.2))
    for offset, backend in ((-0.2, "faiss"), (0.2, "milvus")):
        ax.bar(x + offset, [row[f"recall@1_{backend}"] for _, _, row in groups], width=0.4, label=f"recall@1 {backend}")
    for i, (_, _, row) in enumerate(groups):
        ax.annotate(f"agree {row['top1_agreement']:.0%}", (i, max(row["recall@1_faiss"], row["recall@1_milvus"])),
                    textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(x, [f"{c}\n{s} s" for c, s, _ in groups], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("recall@1 (expected track = the query's)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def missing_inputs(args: argparse.Namespace) -> list[str]:
    """What of the command's inputs is not there, one phrase each (checked before any export or server start)."""
    missing = [] if args.checkpoint.is_file() else [f"--checkpoint {args.checkpoint}: no such file"]
    missing += [f"--tokens-root {root}: no such folder" for root in args.tokens_root if not root.is_dir()]
    if not (args.corpus / "manifest.csv").is_file():
        missing.append(f"--corpus {args.corpus}: no manifest.csv (make corpus installs the corpus)")
    return missing


def main(args: argparse.Namespace) -> int:
    missing = missing_inputs(args)
    if missing:
        raise SystemExit("milvus-agreement: " + "; ".join(missing))
    config = load_serving_config()
    # The served models fix the level count: moss_encoder's CODES are [Q, frames].
    n_quantizers = config.model("moss_encoder").outputs[0].dims[0]
    timings: dict[str, float] = {}
    tracks: dict[str, list[TokenFile]] = {}
    for root in args.tokens_root:
        tracks.update(load_tracks(root))
    queries = draw_queries(args, tracks)
    print(f"{len(queries)} queries from the test split of {args.corpus}; catalog of {len(tracks)} tracks", flush=True)

    served = args.work_dir / f"{tokenizer_tag(args.moss_config)}-q{n_quantizers}-{sha256_file(args.checkpoint)[:10]}"
    index_dir = served / ("index-" + "+".join(root.name for root in args.tokens_root))
    moss_onnx, embedder_onnx = build_serving_artifacts(args.moss_config, args.checkpoint, args.tokens_root, served / "onnx",
                                                       index_dir, n_quantizers, timings)
    catalog = load_catalog(index_dir)
    answers: dict[str, list[Answer]] = {}
    with tempfile.TemporaryDirectory(prefix="milvus-agreement-") as scratch:
        repository = lay_out_repository(Path(scratch), moss_onnx=moss_onnx, embedder_onnx=embedder_onnx, catalog_dir=index_dir)
        with MilvusLiteServer(index_dir.with_name(f"milvus-{index_dir.name}") / "catalog.db", free_port()) as milvus:
            if not collection_matches(milvus.uri, catalog, args.milvus_index_type):
                build_milvus_catalog(milvus.uri, args.checkpoint, embedder_onnx, args.tokens_root, args.milvus_index_type,
                                     n_quantizers, timings)
            waveforms = [q.waveform for _, q in queries]
            # The same repository both times; only faiss_topk's catalog parameters change between the two.
            for backend in BACKENDS:
                write_repository(repository, render_repository(with_catalog(config, backend, milvus.uri, COLLECTION)))
                started = time.perf_counter()
                answers[backend] = serve_and_search(repository, waveforms, args.top_k, backend)
                timings[f"serve-{backend}"] = round(time.perf_counter() - started, 1)

    table = by_condition_length(queries, answers)
    overall = compare([t for t, _ in queries], answers["faiss"], answers["milvus"])
    summary = {
        "command": "python -m benchmarks milvus-agreement " + shlex.join(sys.argv[1:]),
        "overall": overall, "by_condition_length": table,
        "catalog": {"tracks": len(catalog.track_ids), "segments": int(catalog.index.ntotal), "tokens_roots": [str(r) for r in args.tokens_root],
                    "faiss_index": catalog.manifest.get("index_type"), "milvus_index": args.milvus_index_type},
        "checkpoint": str(args.checkpoint), "moss": args.moss_config, "n_quantizers": n_quantizers, "top_k": args.top_k,
        "queries": {"split": "test", "tracks": len({t for t, _ in queries}), "per_track": args.queries_per_track, "seconds": args.query_seconds,
                    "conditions": args.conditions, "seed": args.seed, "alignment": "random sample offsets"},
        "served": "embedded tritonserver on CPU, one request at a time through tritonclient gRPC; Milvus Lite on loopback",
        "notes": args.note, "seconds_per_step": timings, "machine": machine_info(),
        "per_query": [{"track": t, "condition": q.condition, "seconds": q.seconds, "offset_s": round(q.offset / SAMPLE_RATE, 3),
                       **{f"{b}_top1": answers[b][i].track_ids[0] for b in BACKENDS},
                       **{f"{b}_ms": round(answers[b][i].latency_ms, 1) for b in BACKENDS}}
                      for i, (t, q) in enumerate(queries)],
    }
    out_dir = results_dir(args.name)
    write_summary(out_dir, summary)
    text = markdown_table(table, overall)
    (out_dir / "table.md").write_text(text, encoding="utf-8")
    plot_agreement(table, out_dir / "agreement.png",
                   f"FAISS vs Milvus through audio_search: {overall['queries']} test-track queries, catalog of {len(catalog.track_ids)} tracks")
    print(text, end="")
    print(f"results: {out_dir}")
    return 0
