"""`python -m export demo` (make demo): the main job end to end on the embedded default.

Builds (or reuses) every artifact from generated audio — tiny random-weight MOSS, a briefly
trained TokenEmbedder, ONNX exports, the FAISS catalog — publishes them into model_repository/,
starts the real tritonserver on CPU, sends one noisy 5-s excerpt of a catalog track through
`audio_search`, prints the top-5 and stops the server. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common.cli import run_module
from export.repo_layout import publish_artifacts
from export.triton_runtime import EmbeddedTriton
from training.audio_io import SAMPLE_RATE, load_audio
from training.augment import degrade
from training.pipeline import PipelineConfig, PipelinePaths, run_step, run_training_pipeline


def build_serving_artifacts(paths: PipelinePaths, onnx_dir: Path, index_dir: Path, n_quantizers: int, timings: dict[str, float]) -> tuple[Path, Path]:
    moss_onnx, embedder_onnx = onnx_dir / "moss_encoder.onnx", onnx_dir / "token_embedder.onnx"
    if not moss_onnx.exists():
        run_step("moss-onnx", "export.moss_onnx", ["--moss-config", "tiny", "--output", str(moss_onnx), "--n-quantizers", str(n_quantizers)], timings)
    if not embedder_onnx.exists():
        run_step("embedder-onnx", "export.embedder_onnx", ["--checkpoint", str(paths.best_checkpoint), "--output", str(embedder_onnx), "--n-quantizers", str(n_quantizers)], timings)
    if not (index_dir / "manifest.json").exists():
        run_step("index", "export.index", ["--checkpoint", str(paths.best_checkpoint), "--embedder-onnx", str(embedder_onnx), "--tokens-root", str(paths.tokens), "--output", str(index_dir), "--n-quantizers", str(n_quantizers)], timings)
    return moss_onnx, embedder_onnx


def noisy_excerpt(audio_root: Path, track_ids: list[str], seconds: float, condition: str, seed: int) -> tuple[str, np.ndarray]:
    """The opening ``seconds`` of a random catalog track, degraded by ``condition``.

    The opening, because the tiny RANDOM-weight tokenizer's codes depend on the exact sample phase and on
    the causal context the encoder saw (`python -m training code-stability`): only an excerpt that starts
    where the catalog's tokens start reproduces them. Real MOSS weights are what makes any offset work.
    """
    rng = np.random.default_rng(seed)
    track_id = track_ids[int(rng.integers(len(track_ids)))]
    audio = load_audio(audio_root / f"{track_id}.wav")
    return track_id, degrade(audio[: int(seconds * SAMPLE_RATE)], condition, rng)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", type=Path, default=Path("artifacts/demo"))
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--query-seconds", type=float, default=5.0)
    parser.add_argument("--condition", default="snr20", help="listening condition of the query (see training.augment.CONDITIONS)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)


def main(args: argparse.Namespace) -> int:
    from client import AudioSearchClient

    timings: dict[str, float] = {}
    cfg = PipelineConfig(
        work_dir=args.work_dir, tracks=args.tracks, seconds=args.seconds, views_per_track=6,
        n_quantizers=8, epochs=args.epochs, val_ratio=0.1, test_ratio=0.0,
    )
    paths = run_training_pipeline(cfg, timings)
    moss_onnx, embedder_onnx = build_serving_artifacts(paths, args.work_dir / "onnx", args.work_dir / "index", cfg.n_quantizers, timings)
    publish_artifacts(args.model_repository, moss_onnx=moss_onnx, embedder_onnx=embedder_onnx, catalog_dir=args.work_dir / "index")
    track_ids = sorted(p.stem for p in paths.audio.glob("*.wav"))
    expected, query = noisy_excerpt(paths.audio, track_ids, args.query_seconds, args.condition, args.seed)
    print(f"== serving {args.model_repository} on the embedded tritonserver (CPU)", flush=True)
    with EmbeddedTriton(args.model_repository) as server:
        with AudioSearchClient(server.grpc_url, protocol="grpc") as client:
            client.search(query[:SAMPLE_RATE], top_k=1)  # warm-up: first requests pay ORT/FAISS initialisation
            started = time.perf_counter()
            hits = client.search(query, top_k=args.top_k)
            latency_ms = (time.perf_counter() - started) * 1000
    print(f"query: the opening {args.query_seconds:g} s of {expected}, condition {args.condition} (tiny RANDOM-weight tokenizer: see README)")
    for rank, (track_id, score) in enumerate(hits, start=1):
        print(f"  {rank}. {track_id}  score {score:.4f}{'  <- expected' if track_id == expected else ''}")
    print(json.dumps({"seconds_per_step": timings}))
    print(json.dumps({"expected": expected, "top1": hits[0][0], "hit": hits[0][0] == expected, "latency_ms": round(latency_ms, 2)}))
    return 0
