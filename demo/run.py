"""`python -m demo` (make demo): the main job end to end on the embedded default.

Builds (or reuses) every artifact — the tokenizer (models/moss-small, or the tiny RANDOM-weight preset
where it is missing), the TokenEmbedder (the GPU-trained one of models/embedder-music where it learnt this
tokenizer's codes, else one trained briefly here), ONNX exports, the FAISS catalog of real music plus
generated distractors (generated tracks alone where no corpus is installed; training.pipeline) — publishes
them into model_repository/, starts the real tritonserver on CPU, sends one noisy 5-s excerpt from a
random offset of a catalog track through `audio_search`, prints the top-5 with the margin between the
first and second score, then the hit rate of more such excerpts (one query proves little), and stops
the server. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from export.repo_layout import publish_artifacts
from serving.catalog_index import sha256_file
from serving.triton_runtime import EmbeddedTriton
from training.audio_io import SAMPLE_RATE
from training.augment import CONDITIONS
from training.excerpts import noisy_excerpt
from training.pipeline import SHIPPED_EMBEDDER, PipelineConfig, add_source_arguments, prepare_data, resolve_tokenizer, run_step, shipped_embedder_for
from training.splits import read_split


def build_serving_artifacts(moss_config: str, checkpoint: Path, tokens_roots: list[Path], onnx_dir: Path, index_dir: Path,
                            n_quantizers: int, timings: dict[str, float]) -> tuple[Path, Path]:
    """The encoder and embedder ONNX exports and one FAISS catalog of every tokens folder, each made where absent."""
    moss_onnx, embedder_onnx = onnx_dir / "moss_encoder.onnx", onnx_dir / "token_embedder.onnx"
    if not moss_onnx.exists():
        run_step("moss-onnx", "export.moss_onnx", ["--moss-config", moss_config, "--output", str(moss_onnx), "--n-quantizers", str(n_quantizers)], timings)
    if not embedder_onnx.exists():
        run_step("embedder-onnx", "export.embedder_onnx", ["--checkpoint", str(checkpoint), "--output", str(embedder_onnx), "--n-quantizers", str(n_quantizers)], timings)
    if not (index_dir / "manifest.json").exists():
        # One catalog over every tokens folder: the first builds it, the others are appended.
        for i, tokens in enumerate(tokens_roots):
            run_step(f"index-{tokens.name}", "export.index", ["--checkpoint", str(checkpoint), "--embedder-onnx", str(embedder_onnx), "--tokens-root", str(tokens),
                                                             "--output", str(index_dir), "--n-quantizers", str(n_quantizers), *(["--add"] if i else [])], timings)
    return moss_onnx, embedder_onnx


def catalog_digest(tokens_roots: list[Path]) -> str:
    """Names the catalog by the tracks it holds: a corpus installed (or a split added) after a first run gets a new index,
    not the old one served again."""
    digest = hashlib.sha256()
    for root in tokens_roots:
        digest.update("\n".join([root.name, *sorted(p.name for p in root.glob("*.npz"))]).encode())
    return digest.hexdigest()[:10]


def served_checkpoint(args: argparse.Namespace) -> Path | None:
    """The embedder to serve: --checkpoint, else the shipped one where it learnt this tokenizer's codes; None: train one here."""
    checkpoint = args.checkpoint
    if checkpoint is None and not args.train_embedder:
        tokenizer = resolve_tokenizer(args.moss_config)[0]
        checkpoint = shipped_embedder_for(tokenizer)
        if checkpoint is None:
            print(f"NOTE embedder: the shipped one ({SHIPPED_EMBEDDER}) did not learn the codes of {tokenizer}; training one here", flush=True)
    if checkpoint is not None:
        print(f"embedder: {checkpoint}", flush=True)
    return checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", type=Path, default=Path("artifacts/demo"))
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    add_source_arguments(parser)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="serve this embedder checkpoint (default: models/embedder-music where it learnt the tokenizer's codes, else one trained here)")
    parser.add_argument("--train-embedder", action="store_true", help="train the embedder here even where the shipped one fits the tokenizer")
    parser.add_argument("--tracks", type=int, default=200, help="generated tracks that are the catalog where no corpus is installed")
    parser.add_argument("--distractors", type=int, default=200, help="generated tracks added to the corpus's catalog")
    parser.add_argument("--corpus-splits", nargs="+", default=["test"], metavar="SPLIT",
                        help="corpus tracks in the catalog: these splits (test: the tracks queried, never trained on), or all; "
                             "every track is hours of tokenizing on a small CPU. Training an embedder here takes all")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--query-seconds", type=float, default=5.0)
    parser.add_argument("--condition", default="snr20", choices=CONDITIONS, help="listening condition of the query")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--queries", type=int, default=20, help="excerpts behind the hit rate, the first one shown in full")
    parser.add_argument("--seed", type=int, default=7)


def main(args: argparse.Namespace) -> int:
    from client import AudioSearchClient

    if args.queries < 1:
        raise SystemExit("--queries must be at least 1")
    if not {"test", "all"} & set(args.corpus_splits):
        raise SystemExit("--corpus-splits must include test (the demo queries test tracks) or be all")
    timings: dict[str, float] = {}
    checkpoint = served_checkpoint(args)
    # Training needs the train and val tracks; a shipped or given embedder needs only the tracks queried and their rivals.
    corpus_splits = None if checkpoint is None or "all" in args.corpus_splits else tuple(args.corpus_splits)
    cfg = PipelineConfig(
        work_dir=args.work_dir, tracks=args.tracks, seconds=args.seconds, views_per_track=6, n_quantizers=8, epochs=args.epochs,
        val_ratio=0.1, test_ratio=0.0, moss_config=args.moss_config, corpus=args.corpus, checkpoint=checkpoint, distractors=args.distractors, corpus_splits=corpus_splits,
    )
    data = prepare_data(cfg, timings)
    # Exports and the index belong to one tokenizer and one checkpoint: a new either gets fresh ones.
    served = args.work_dir / "serving" / f"{data.tag}-{sha256_file(data.checkpoint)[:10]}"
    index_dir = served / f"index-{catalog_digest(data.tokens_roots)}"
    moss_onnx, embedder_onnx = build_serving_artifacts(data.moss_config, data.checkpoint, data.tokens_roots, served / "onnx", index_dir,
                                                       cfg.n_quantizers, timings)
    publish_artifacts(args.model_repository, moss_onnx=moss_onnx, embedder_onnx=embedder_onnx, catalog_dir=index_dir)
    # Real music when there is some: a test track (never trained on); else any generated track.
    query_root = data.audio_roots[0]
    candidates = read_split(data.splits / "test.txt") if data.source == "corpus" else sorted(p.stem for p in query_root.glob("*.wav"))
    # Seeds in a row: each excerpt a random track and offset, the first the one shown.
    excerpts = [noisy_excerpt(query_root, candidates, args.query_seconds, args.condition, args.seed + i) for i in range(args.queries)]
    expected, query = excerpts[0]
    print(f"== serving {args.model_repository} on the embedded tritonserver (CPU)", flush=True)
    with EmbeddedTriton(args.model_repository) as server:
        with AudioSearchClient(server.grpc_url, protocol="grpc") as client:
            client.search(query[:SAMPLE_RATE], top_k=1)  # warm-up: first requests pay ORT/FAISS initialisation
            started = time.perf_counter()
            hits = client.search(query, top_k=args.top_k)
            latency_ms = (time.perf_counter() - started) * 1000
            found = [hits[0][0] == expected] + [client.search(audio, top_k=1)[0][0] == track for track, audio in excerpts[1:]]
    margin = hits[0][1] - hits[1][1] if len(hits) > 1 else None
    print(f"query: {args.query_seconds:g} s at a random offset of {expected} ({data.source} audio), condition {args.condition}, tokenizer {data.moss_config}")
    for rank, (track_id, score) in enumerate(hits, start=1):
        print(f"  {rank}. {track_id}  score {score:.4f}{'  <- expected' if track_id == expected else ''}")
    if margin is not None:
        print(f"margin between the first and second score: {margin:.4f}")
    hit_rate = sum(found) / len(found)
    print(f"hit rate: {sum(found)} of {len(found)} such excerpts (seeds {args.seed}..{args.seed + len(found) - 1}) found at rank 1")
    for note in data.notes:
        print(f"NOTE {note}")
    print(json.dumps({"seconds_per_step": timings}))
    print(json.dumps({"expected": expected, "top1": hits[0][0], "hit": hits[0][0] == expected, "latency_ms": round(latency_ms, 2),
                      "margin": None if margin is None else round(float(margin), 4), "hit_rate": round(hit_rate, 4), "queries": len(found)}))
    return 0
