"""The ensemble vs the same four models called one after another by the client, at concurrency 1.

The chain pays three extra client round trips and moves every intermediate tensor (windows,
codes, embeddings) through the client; the ensemble passes them inside the server. Both are
timed with the same gRPC client on the same queries, interleaved so the shared machine's load
drifts over both alike, and their answers are compared.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

# (model, its outputs) in ensemble order; each step's outputs are the next step's inputs by name.
CHAIN = (
    ("audio_windows", ("WAVEFORM", "LENGTHS")),
    ("moss_encoder", ("CODES", "FRAME_COUNTS")),
    ("token_embedder", ("EMBEDDING",)),
    ("faiss_topk", ("TRACK_IDS", "SCORES")),
)


def _infer(client: grpcclient.InferenceServerClient, model: str, tensors: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    inputs = []
    for name, array in tensors.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(name) for name in outputs])
    return {name: result.as_numpy(name) for name in outputs}


def ensemble_search(client: grpcclient.InferenceServerClient, audio: np.ndarray, top_k: int) -> list[str]:
    top_k_tensor = np.array([top_k], np.int32)
    result = _infer(client, "audio_search", {"AUDIO": audio, "TOP_K": top_k_tensor}, ("TRACK_IDS", "SCORES"))
    return [track.decode() for track in result["TRACK_IDS"]]


def chain_search(client: grpcclient.InferenceServerClient, audio: np.ndarray, top_k: int) -> list[str]:
    tensors: dict[str, np.ndarray] = {"AUDIO": audio}
    for model, outputs in CHAIN:
        if model == "faiss_topk":
            tensors["TOP_K"] = np.array([top_k], np.int32)
        tensors = _infer(client, model, tensors, outputs)
    return [track.decode() for track in tensors["TRACK_IDS"]]


@dataclass(frozen=True)
class ChainComparison:
    queries: int
    ensemble_p50_ms: float
    chain_p50_ms: float
    ensemble_mean_ms: float
    chain_mean_ms: float
    answers_match: bool

    @property
    def ensemble_vs_chain_p50_ratio(self) -> float:
        return self.ensemble_p50_ms / self.chain_p50_ms


def compare_ensemble_chain(grpc_url: str, queries: list[np.ndarray], top_k: int = 10) -> ChainComparison:
    timings: dict[str, list[float]] = {"ensemble": [], "chain": []}
    answers: dict[str, list[list[str]]] = {"ensemble": [], "chain": []}
    runners: dict[str, Any] = {"ensemble": ensemble_search, "chain": chain_search}
    with grpcclient.InferenceServerClient(grpc_url) as client:
        for run in runners.values():  # warm-up: first calls pay ONNX Runtime / FAISS initialisation
            run(client, queries[0], top_k)
        for number, audio in enumerate(queries):
            # Alternate which goes first, so neither always runs right after the other warmed a cache.
            order = ("ensemble", "chain") if number % 2 == 0 else ("chain", "ensemble")
            for kind in order:
                started = time.perf_counter()
                answers[kind].append(runners[kind](client, audio, top_k))
                timings[kind].append((time.perf_counter() - started) * 1000)
    return ChainComparison(
        queries=len(queries),
        ensemble_p50_ms=statistics.median(timings["ensemble"]),
        chain_p50_ms=statistics.median(timings["chain"]),
        ensemble_mean_ms=statistics.fmean(timings["ensemble"]),
        chain_mean_ms=statistics.fmean(timings["chain"]),
        answers_match=answers["ensemble"] == answers["chain"],
    )
