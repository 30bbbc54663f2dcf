"""`python -m export index`: embed the catalog through the exported ONNX embedder and build the FAISS index.

Segments are the catalog windows the embedder was trained and evaluated with (its checkpoint's
``catalog`` layout: window, hop, and whether each window's audio is tokenized alone); every segment
row maps to its track, and search results are fused per track. `--add` appends tracks that are not
yet in an existing catalog without rebuilding it.

`--backend milvus --uri URI` writes the catalog into a Milvus collection instead (serving/milvus_catalog.py): a build
replaces the collection behind the `--collection` alias in one step; `--add`, `--upsert` and `--delete TRACK_ID ...`
change the live collection, with no reload of the server.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import run_module
from common.metrics_target import add_metrics_arguments, metrics_target
from serving import milvus_catalog
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
    parser.add_argument("--checkpoint", type=Path, help="the TokenEmbedder checkpoint the index is built for (required but with --delete)")
    parser.add_argument("--embedder-onnx", type=Path, default=None, help="its ONNX export (written from --checkpoint if absent; default next to the index)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tokens-root", type=Path, help="token files of the catalog tracks")
    source.add_argument("--audio-root", type=Path, help="catalog audio; tokenized first with the MOSS options below")
    parser.add_argument("--output", type=Path, default=Path("artifacts/index"))
    parser.add_argument("--index-type", choices=sorted({*INDEX_TYPES, *milvus_catalog.INDEX_TYPES}), default="flat",
                        help="faiss: %s; milvus: %s" % (", ".join(INDEX_TYPES), ", ".join(milvus_catalog.INDEX_TYPES)))
    parser.add_argument("--backend", choices=("faiss", "milvus"), default="faiss",
                        help="faiss: the catalog folder --output; milvus: a collection at --uri")
    parser.add_argument("--uri", help="Milvus: http://host:19530, or a Milvus Lite folder no server holds")
    parser.add_argument("--collection", default=milvus_catalog.DEFAULT_COLLECTION, help="Milvus catalog name (an alias)")
    change = parser.add_mutually_exclusive_group()
    change.add_argument("--add", action="store_true", help="append tracks missing from an existing catalog instead of rebuilding")
    change.add_argument("--upsert", action="store_true", help="milvus: add new tracks and replace present ones in place")
    change.add_argument("--delete", nargs="+", metavar="TRACK_ID", help="milvus: remove these tracks from the live catalog")
    parser.add_argument("--n-quantizers", type=int, default=32, help="RVQ levels of the tokens (the embedder's CODES input)")
    parser.add_argument("--moss-config", default="tiny", help="MOSS preset or weights folder for --audio-root")
    parser.add_argument("--batch-size", type=int, default=64)
    add_metrics_arguments(parser)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.backend == "milvus" and not args.uri:
        raise SystemExit("--backend milvus needs --uri (http://host:19530 or a Milvus Lite folder)")
    if args.backend == "faiss" and (args.upsert or args.delete or args.index_type not in INDEX_TYPES):
        raise SystemExit(f"--upsert, --delete and --index-type {args.index_type} need --backend milvus "
                         "(a FAISS catalog is rebuilt, or extended with --add)")
    if args.backend == "milvus" and args.index_type not in milvus_catalog.INDEX_TYPES:
        raise SystemExit(f"--index-type {args.index_type} is FAISS's; Milvus takes {tuple(milvus_catalog.INDEX_TYPES)}")
    if not args.delete and (args.checkpoint is None or (args.tokens_root is None and args.audio_root is None)):
        raise SystemExit("--checkpoint and one of --tokens-root/--audio-root are required (but with --delete)")


def milvus_index(args: argparse.Namespace, tracks: dict[str, list[TokenFile]], embedder_sha: str,
                 embed_tracks: Callable[[dict[str, list[TokenFile]]], tuple[np.ndarray, np.ndarray, list[dict]]]
                 ) -> dict[str, Any]:
    """Build, add to or upsert into the Milvus catalog; the summary line's keys."""
    milvus = milvus_catalog.Milvus(args.uri)
    if args.add or args.upsert:
        info = milvus_catalog.describe(milvus, args.collection)
        milvus_catalog.check_embedder(info, args.uri, None, embedder_sha)
        present = milvus_catalog.present_tracks(milvus, args.collection, list(tracks)) if args.add else set()
        new = {t: files for t, files in tracks.items() if t not in present}
        if not new:
            return {**milvus_catalog.summary(info, args.uri), "added_tracks": 0}
        embeddings, segment_track, metadata = embed_tracks(new)
        written = milvus_catalog.upsert_tracks(milvus, args.collection, embeddings, segment_track, metadata, embedder_sha)
        return {**written, ("added_tracks" if args.add else "upserted_tracks"): len(new)}
    embeddings, segment_track, metadata = embed_tracks(tracks)
    return milvus_catalog.build_collection(milvus, args.collection, embeddings, segment_track, metadata, embedder_sha,
                                           args.index_type)


def main(args: argparse.Namespace) -> int:
    _check_arguments(args)
    if args.delete:
        print(json.dumps(milvus_catalog.delete_tracks(milvus_catalog.Milvus(args.uri), args.collection, args.delete)))
        return 0
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

        def embed_tracks(chosen: dict[str, list[TokenFile]]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
            segments, segment_track, metadata = catalog_segments(chosen, layout, encode, audio_paths)
            return embed_sequences(embed, segments, args.batch_size), segment_track, metadata

        if args.backend == "milvus":
            manifest = milvus_index(args, tracks, embedder_sha, embed_tracks)
        elif args.add and (args.output / "manifest.json").exists():
            existing = load_catalog(args.output, expected_dim=None, expected_embedder_sha256=embedder_sha)
            new = {t: files for t, files in tracks.items() if t not in set(existing.track_ids)}
            if not new:
                print(json.dumps({"added_tracks": 0, "catalog_tracks": len(existing.track_ids)}))
                return 0
            manifest = add_to_catalog(args.output, *embed_tracks(new), embedder_sha)
        else:
            embeddings, segment_track, metadata = embed_tracks(tracks)
            manifest = write_catalog(args.output, build_index(embeddings, args.index_type), segment_track, metadata, embedder_sha, args.index_type)
    print(json.dumps({k: manifest[k] for k in manifest if k != "files"}))
    if target is not None:
        from common.metrics_db import MetricsDatabaseError, record_index_build  # SQLAlchemy only where a database is given

        try:
            path = f"{args.uri}#{args.collection}" if args.backend == "milvus" else str(args.output)
            record_index_build(target, path, manifest, round(time.perf_counter() - started, 3))
        except MetricsDatabaseError as error:
            raise SystemExit(f"the index is in {path}, but recording its build failed: {error}") from error
    return 0
