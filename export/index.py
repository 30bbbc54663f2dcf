"""`python -m export index`: embed the catalog through the exported ONNX embedder and build the FAISS index.

Segments are the catalog windows the embedder was trained and evaluated with (its checkpoint's
``catalog`` layout: window, hop, and whether each window's audio is tokenized alone); every segment
row maps to its track, and search results are fused per track. `--add` appends tracks that are not
yet in an existing catalog without rebuilding it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common.cli import run_module
from common.metrics_target import add_metrics_arguments, metrics_target
from serving.catalog_index import INDEX_TYPES, add_to_catalog, build_index, load_catalog, sha256_file, write_catalog
from training.audio_io import list_audio_files
from training.dataset import CatalogConfig, ClipEncoder, build_catalog
from training.encode import clip_encoder
from training.moss.weights import build_encoder
from training.retrieval import EmbedFn, embed_sequences
from training.token_files import TokenFile, load_tracks
from training.train import trained_layout


def onnx_embed_fn(onnx_path: Path) -> EmbedFn:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def embed(codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return session.run(["EMBEDDING"], {"CODES": codes.astype(np.int32), "FRAME_COUNTS": counts.astype(np.int64)})[0]

    return embed


def catalog_segments(tracks: dict[str, list[TokenFile]], layout: CatalogConfig, encode: ClipEncoder | None = None,
                     audio_paths: dict[str, Path] | None = None) -> tuple[list[np.ndarray], np.ndarray, list[dict]]:
    """Segment windows of every track under ``layout``, the track index of each segment, and the track metadata."""
    catalog = build_catalog(tracks, layout, encode, audio_paths)
    metadata = [
        {"track_id": t, "duration_s": round(sum(c.duration_s for c in tracks[t]), 3), "source_path": tracks[t][0].source_path}
        for t in catalog.track_ids
    ]
    return catalog.segments, catalog.segment_track, metadata


def window_encoder(args: argparse.Namespace, layout: CatalogConfig) -> tuple[ClipEncoder | None, dict[str, Path] | None]:
    """For a layout that tokenizes each window alone: the MOSS encoder of ``--moss-config`` and the tracks' audio
    (``--audio-root``, else each token file's source path); nothing for windows cut from whole-track codes."""
    if layout.tokenize != "alone":
        return None, None
    audio = {p.stem: p for p in list_audio_files(args.audio_root)} if args.audio_root else None
    return clip_encoder(build_encoder(args.moss_config, device="cpu"), args.n_quantizers, 16, "cpu"), audio


def ensure_embedder_onnx(checkpoint: Path, onnx_path: Path, n_quantizers: int) -> Path:
    if not onnx_path.exists():
        run_module("export.embedder_onnx", ["--checkpoint", str(checkpoint), "--output", str(onnx_path), "--n-quantizers", str(n_quantizers)])
    return onnx_path


def tokens_root_from_audio(audio_root: Path, work: Path, moss_argv: list[str]) -> Path:
    tokens = work / "tokens"
    if run_module("training.tokenize", ["--input-root", str(audio_root), "--output-root", str(tokens), *moss_argv]) != 0:
        raise SystemExit(f"tokenizing {audio_root} failed")
    return tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="the TokenEmbedder checkpoint the index is built for")
    parser.add_argument("--embedder-onnx", type=Path, default=None, help="its ONNX export (written from --checkpoint if absent; default next to the index)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokens-root", type=Path, help="token files of the catalog tracks")
    source.add_argument("--audio-root", type=Path, help="catalog audio; tokenized first with the MOSS options below")
    parser.add_argument("--output", type=Path, default=Path("artifacts/index"))
    parser.add_argument("--index-type", choices=INDEX_TYPES, default="flat")
    parser.add_argument("--add", action="store_true", help="append tracks missing from an existing catalog instead of rebuilding")
    parser.add_argument("--n-quantizers", type=int, default=32, help="RVQ levels of the tokens (the embedder's CODES input)")
    parser.add_argument("--moss-config", default="tiny", help="MOSS preset or weights folder for --audio-root")
    parser.add_argument("--batch-size", type=int, default=64)
    add_metrics_arguments(parser)


def main(args: argparse.Namespace) -> int:
    target = metrics_target(args)
    started = time.perf_counter()
    onnx_path = ensure_embedder_onnx(args.checkpoint, args.embedder_onnx or args.output.parent / "token_embedder.onnx", args.n_quantizers)
    embedder_sha = sha256_file(onnx_path)
    with tempfile.TemporaryDirectory() as scratch:
        moss_argv = ["--moss-config", args.moss_config, "--n-quantizers", str(args.n_quantizers)]
        tokens_root = args.tokens_root or tokens_root_from_audio(args.audio_root, Path(scratch), moss_argv)
        tracks = load_tracks(tokens_root)
        if not tracks:
            raise SystemExit(f"no token files under {tokens_root}")
        embed = onnx_embed_fn(onnx_path)
        layout = trained_layout(args.checkpoint)
        encode, audio_paths = window_encoder(args, layout)
        if args.add and (args.output / "manifest.json").exists():
            existing = load_catalog(args.output, expected_dim=None, expected_embedder_sha256=embedder_sha)
            new = {t: files for t, files in tracks.items() if t not in set(existing.track_ids)}
            if not new:
                print(json.dumps({"added_tracks": 0, "catalog_tracks": len(existing.track_ids)}))
                return 0
            segments, segment_track, metadata = catalog_segments(new, layout, encode, audio_paths)
            manifest = add_to_catalog(args.output, embed_sequences(embed, segments, args.batch_size), segment_track, metadata, embedder_sha)
        else:
            segments, segment_track, metadata = catalog_segments(tracks, layout, encode, audio_paths)
            embeddings = embed_sequences(embed, segments, args.batch_size)
            manifest = write_catalog(args.output, build_index(embeddings, args.index_type), segment_track, metadata, embedder_sha, args.index_type)
    print(json.dumps({k: manifest[k] for k in manifest if k != "files"}))
    if target is not None:
        from common.metrics_db import MetricsDatabaseError, record_index_build  # SQLAlchemy only where a database is given

        try:
            record_index_build(target, str(args.output), manifest, round(time.perf_counter() - started, 3))
        except MetricsDatabaseError as error:
            raise SystemExit(f"the index is in {args.output}, but recording its build failed: {error}") from error
    return 0
