"""Real tensors for every model's benchmark, derived from the query mix as the ensemble would derive them.

Windows come from the served windowing (common/windowing.py, parameters from configs/serving.yaml);
codes from the tiny MOSS encoder in PyTorch (``training.encode.encode_clips``); embeddings from the
served token_embedder ONNX (run here with ONNX Runtime). Cached next to the query mix.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.query_mix import DEFAULT_CACHE, MixSpec, Query
from common.windowing import WindowParams, make_windows
from export.repo_configs import load_serving_config
from serving.catalog_index import sha256_file


@dataclass(frozen=True)
class QueryTensors:
    """One query's windows as the composing models see them."""

    codes: list[np.ndarray]  # per window int32 [Q, frames]
    embeddings: np.ndarray  # float32 [W, D]


def served_window_params() -> WindowParams:
    return WindowParams.from_parameters(load_serving_config().model("audio_windows").parameters)


def served_n_quantizers() -> int:
    """Q of token_embedder's CODES input [Q, T]."""
    return load_serving_config().model("token_embedder").inputs[0].dims[0]


def _encode(queries: list[Query], params: WindowParams, moss_config: str) -> list[list[np.ndarray]]:
    import torch

    from training.encode import encode_clips
    from training.moss.weights import build_encoder

    torch.set_num_threads(2)
    encoder = build_encoder(moss_config)
    windows = []
    for query in queries:
        waveform, lengths = make_windows(query.audio, params)
        windows.append([waveform[row, 0, :length] for row, length in enumerate(lengths)])
    flat = encode_clips(encoder, [clip for clips in windows for clip in clips], served_n_quantizers())
    bounds = np.cumsum([0] + [len(clips) for clips in windows])
    return [[codes.astype(np.int32) for codes in flat[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]


def _embed(codes: list[np.ndarray], embedder_onnx: Path) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(embedder_onnx), providers=["CPUExecutionProvider"])
    return np.concatenate([
        session.run(["EMBEDDING"], {"CODES": c[np.newaxis], "FRAME_COUNTS": np.array([c.shape[1]], np.int64)})[0]
        for c in codes
    ]).astype(np.float32)


def query_tensors(
    spec: MixSpec,
    queries: list[Query],
    embedder_onnx: Path,
    moss_config: str = "tiny",
    cache_dir: Path | None = DEFAULT_CACHE,
) -> list[QueryTensors]:
    params = served_window_params()
    identity = f"{spec.key()} {sha256_file(embedder_onnx)} {moss_config} {params} {served_n_quantizers()}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    path = cache_dir / f"tensors-{key}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            return [QueryTensors([data[f"codes_{i}_{w}"] for w in range(int(data[f"windows_{i}"]))], data[f"embeddings_{i}"])
                    for i in range(len(queries))]
    tensors = [QueryTensors(codes, _embed(codes, embedder_onnx)) for codes in _encode(queries, params, moss_config)]
    if path is not None:
        arrays: dict[str, np.ndarray] = {}
        for i, item in enumerate(tensors):
            arrays[f"windows_{i}"] = np.array(len(item.codes))
            arrays[f"embeddings_{i}"] = item.embeddings
            arrays.update({f"codes_{i}_{w}": codes for w, codes in enumerate(item.codes)})
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp.npz")
        np.savez(temporary, **arrays)
        temporary.replace(path)
    return tensors
