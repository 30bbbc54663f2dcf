"""The embedded tritonserver on the committed model repository (stand-in ONNX models, small catalog)."""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from common.windowing import SAMPLE_RATE
from serving.triton_runtime import EmbeddedTriton

MODELS = ("audio_windows", "moss_encoder", "token_embedder", "faiss_topk", "audio_search")


@pytest.fixture(scope="module")
def grpc(triton_server: EmbeddedTriton) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        yield client


@pytest.fixture(scope="module")
def http(triton_server: EmbeddedTriton) -> Iterator[httpclient.InferenceServerClient]:
    # Closed at the end: the server's shutdown waits for open connections.
    with httpclient.InferenceServerClient(triton_server.http_url) as client:
        yield client


def search_inputs(module: Any, audio: np.ndarray, top_k: int | None = None) -> list[Any]:
    audio_input = module.InferInput("AUDIO", list(audio.shape), np_to_triton_dtype(audio.dtype))
    audio_input.set_data_from_numpy(audio)
    if top_k is None:
        return [audio_input]
    k_input = module.InferInput("TOP_K", [1], "INT32")
    k_input.set_data_from_numpy(np.array([top_k], dtype=np.int32))
    return [audio_input, k_input]


def search(client: Any, audio: np.ndarray, top_k: int | None = None) -> tuple[list[str], np.ndarray]:
    module = grpcclient if isinstance(client, grpcclient.InferenceServerClient) else httpclient
    result = client.infer("audio_search", search_inputs(module, audio, top_k))
    return [track.decode() for track in result.as_numpy("TRACK_IDS")], result.as_numpy("SCORES")


def infer_concurrently(client: grpcclient.InferenceServerClient, model: str, requests: list[list[Any]]) -> list[Any]:
    """Send every request back to back (inputs built beforehand); results or exceptions in request order."""
    results: list[Any] = [None] * len(requests)
    done = threading.Semaphore(0)

    def finished(index: int, result: Any, error: Any) -> None:
        results[index] = error or result
        done.release()

    for index, inputs in enumerate(requests):
        client.async_infer(model, inputs, lambda result, error, index=index: finished(index, result, error))
    for _ in requests:
        assert done.acquire(timeout=120)
    return results


def async_searches(client: grpcclient.InferenceServerClient, queries: list[np.ndarray]) -> list[Any]:
    return infer_concurrently(client, "audio_search", [search_inputs(grpcclient, audio) for audio in queries])


def request_counts(client: grpcclient.InferenceServerClient, model: str) -> np.ndarray:
    """Successful requests and model executions so far."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return np.array([int(stats["inference_stats"]["success"].get("count", 0)), int(stats.get("execution_count", 0))])


def counts_since(client: grpcclient.InferenceServerClient, model: str, before: np.ndarray, requests: int, timeout_s: float = 10.0) -> np.ndarray:
    """Requests and executions since ``before``, once the statistics show all ``requests``: Triton
    records them after sending the responses, so a read right after the last reply can lag behind."""
    deadline = time.monotonic() + timeout_s
    while True:
        delta = request_counts(client, model) - before
        if delta[0] >= requests or time.monotonic() > deadline:
            return delta
        time.sleep(0.05)


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)


def queries(serving_artifacts: Any) -> dict[str, np.ndarray]:
    return {
        "catalog track (2 windows)": serving_artifacts.track_audio["track-02"],
        "short (1 padded window)": noise(3.3, seed=10),
        "long (5 windows)": noise(29.5, seed=11),
    }


def test_all_models_are_ready(triton_server: EmbeddedTriton, grpc: grpcclient.InferenceServerClient) -> None:
    assert grpc.is_server_ready()
    assert [model for model in MODELS if not grpc.is_model_ready(model)] == []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("top_k", [None, 3])
def test_ensemble_equals_the_reference_pipeline(protocol: str, top_k: int | None, request: pytest.FixtureRequest,
                                                serving_artifacts: Any, serving_config: Any) -> None:
    client = request.getfixturevalue(protocol)
    k = top_k or int(serving_config.model("faiss_topk").parameters["DEFAULT_TOP_K"])
    results = {}
    for name, audio in queries(serving_artifacts).items():
        expected = serving_artifacts.reference.search(serving_artifacts.catalog, audio, k)
        results[name] = track_ids, scores = search(client, audio, top_k)
        assert track_ids == expected.track_ids, name
        np.testing.assert_allclose(scores, expected.scores, atol=1e-4, err_msg=name)
    track_ids, scores = results["catalog track (2 windows)"]
    assert track_ids[0] == "track-02" and scores[0] == pytest.approx(1.0, abs=1e-4)


def test_dynamic_batching_groups_concurrent_requests(grpc: grpcclient.InferenceServerClient) -> None:
    before = {model: request_counts(grpc, model) for model in ("moss_encoder", "token_embedder")}
    # Short queries of different lengths: batching them needs the ragged inputs of the embedded configs.
    results = async_searches(grpc, [noise(1.5 + 0.25 * (i % 8), seed=100 + i) for i in range(24)])
    assert not [r for r in results if isinstance(r, InferenceServerException)]
    for model, counts in before.items():
        requests, executions = counts_since(grpc, model, counts, 24)
        assert requests == 24, model
        assert executions < requests, f"{model}: {executions} executions for {requests} requests"


BAD_QUERIES = {
    "empty": (np.zeros(0, np.float32), None, "AUDIO is empty"),
    "nan": (np.where(np.arange(48_000) == 7, np.nan, 0.1).astype(np.float32), None, "1 NaN or infinite"),
    "inf": (np.full(48_000, np.inf, np.float32), None, "48000 NaN or infinite"),
    "too short": (noise(0.5, seed=1), None, "at least 1 s"),
    "too long": (noise(31.0, seed=2), None, "at most 30 s"),
    "wrong dtype": (noise(2.0, seed=3).astype(np.float64), None, "data-type"),
    "wrong rank": (noise(2.0, seed=4).reshape(2, -1), None, "unexpected shape"),
    "top_k zero": (noise(2.0, seed=5), 0, "TOP_K must be one integer in 1..100, got [0]"),
    "top_k negative": (noise(2.0, seed=5), -3, "TOP_K must be one integer in 1..100, got [-3]"),
    "top_k huge": (noise(2.0, seed=5), 1_000_000, "TOP_K must be one integer in 1..100, got [1000000]"),
}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("case", BAD_QUERIES)
def test_bad_inputs_fail_clearly_and_the_server_stays_healthy(
    protocol: str, case: str, request: pytest.FixtureRequest, serving_artifacts: Any
) -> None:
    client = request.getfixturevalue(protocol)
    audio, top_k, message = BAD_QUERIES[case]
    with pytest.raises(InferenceServerException, match=re.escape(message)) as caught:
        search(client, audio, top_k)
    status = caught.value.status()
    assert status in ("StatusCode.INVALID_ARGUMENT", "400"), status
    assert client.is_server_ready() and client.is_model_ready("audio_search")
    track_ids, _ = search(client, serving_artifacts.track_audio["track-05"], 2)
    assert track_ids[0] == "track-05"


def test_bad_requests_do_not_affect_concurrent_good_ones(grpc: grpcclient.InferenceServerClient,
                                                           serving_artifacts: Any) -> None:
    good = serving_artifacts.track_audio["track-07"]
    bad = np.full(48_000, np.nan, np.float32)
    results = async_searches(grpc, [good if i % 3 else bad for i in range(12)])
    for i, result in enumerate(results):
        if i % 3:
            assert result.as_numpy("TRACK_IDS")[0].decode() == "track-07"
        else:
            assert isinstance(result, InferenceServerException) and "NaN" in result.message()


def test_onnx_cpu_batches_requests_of_different_lengths(grpc: grpcclient.InferenceServerClient,
                                                         serving_artifacts: Any, serving_config: Any) -> None:
    """Concurrent token_embedder requests (different T and batch sizes) are padded, batched and split back."""
    n_quantizers = serving_config.model("moss_encoder").outputs[0].dims[0]
    rng = np.random.default_rng(3)
    requests = []
    # Enough requests that some meet in the batcher's queue even on a loaded machine.
    for batch, frames in [(1, 125), (3, 40), (2, 90), (1, 13), (4, 125), (2, 60)] * 3:
        codes = rng.integers(0, 1024, (batch, n_quantizers, frames), dtype=np.int32)
        counts = rng.integers(12, frames + 1, batch).astype(np.int64)
        requests.append((codes, counts))
    prepared = []
    for codes, counts in requests:
        inputs = [grpcclient.InferInput("CODES", list(codes.shape), "INT32"),
                  grpcclient.InferInput("FRAME_COUNTS", [len(counts), 1], "INT64")]
        inputs[0].set_data_from_numpy(codes)
        inputs[1].set_data_from_numpy(counts.reshape(-1, 1))
        prepared.append(inputs)
    before = request_counts(grpc, "token_embedder")
    outputs = infer_concurrently(grpc, "token_embedder", prepared)
    requests_served, executions = counts_since(grpc, "token_embedder", before, len(requests))
    assert requests_served == len(requests) and executions < len(requests), "the requests were not batched"
    for (codes, counts), output in zip(requests, outputs):
        assert not isinstance(output, InferenceServerException), output
        expected = serving_artifacts.reference.embed_codes(codes, counts)
        np.testing.assert_allclose(output.as_numpy("EMBEDDING"), expected, atol=1e-5)
