"""perf_analyzer `--input-data` JSON for each benchmarked model, from the real tensors.

perf_analyzer cycles through the "data" entries, one per request. Audio travels base64-encoded
("b64"): a 30-s excerpt is 720k floats, far too many for a JSON number list.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the GPU benchmark imports this module where the audio stack is absent
    from benchmarks.query_mix import Query
    from benchmarks.real_inputs import QueryTensors

MODELS = ("audio_search", "token_embedder", "faiss_topk")


def _b64(array: np.ndarray) -> dict[str, Any]:
    return {"b64": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"), "shape": list(array.shape)}


def _content(array: np.ndarray) -> dict[str, Any]:
    return {"content": array.reshape(-1).tolist(), "shape": list(array.shape)}


def audio_entry(audio: np.ndarray, top_k: int) -> dict[str, Any]:
    """One `audio_search` request: a float32 waveform at 24 kHz and TOP_K."""
    return {"AUDIO": _b64(audio.astype(np.float32, copy=False)), "TOP_K": _content(np.array([top_k], np.int32))}


def audio_search_entries(queries: list[Query], top_k: int) -> list[dict[str, Any]]:
    return [audio_entry(q.audio, top_k) for q in queries]


def token_embedder_entries(tensors: list[QueryTensors]) -> list[dict[str, Any]]:
    """One request per window of the mix (batch size 1: the batch dimension is not in the shapes).

    Windows differ in length (short queries); the embedded config batches them anyway (ragged inputs).
    """
    return [{"CODES": _content(codes), "FRAME_COUNTS": _content(np.array([codes.shape[1]], np.int64))}
            for item in tensors for codes in item.codes]


def faiss_topk_entries(tensors: list[QueryTensors], top_k: int) -> list[dict[str, Any]]:
    """One request per query: the embeddings of all its windows, as the ensemble sends them."""
    return [{"EMBEDDING": _content(item.embeddings), "TOP_K": _content(np.array([top_k], np.int32))} for item in tensors]


def write_input_data(path: Path, entries: list[dict[str, Any]]) -> Path:
    """Written atomically: the file is a cache entry, and a half-written one must never be read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps({"data": entries}), encoding="utf-8")
    temporary.replace(path)
    return path
