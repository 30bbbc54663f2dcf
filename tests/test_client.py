"""The audio_search client library and CLI against the real tritonserver (stand-in models, session server)."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr

from client import AsyncAudioSearchClient, AudioSearchClient, InvalidInput, ModelNotReady, ServerUnavailable
from client.errors import SearchError
from client.retry import delay_s, should_retry
from common.cli import run_module
from common.windowing import SAMPLE_RATE
from serving.triton_runtime import EmbeddedTriton, free_ports
from training.augment import add_noise

PROTOCOLS = ("grpc", "http")
MODELS = {"audio_search", "audio_windows", "window_embedder", "moss_encoder", "token_embedder", "faiss_topk"}


def url(server: EmbeddedTriton, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def noisy_excerpt(artifacts: Any, track: str, seconds: float, seed: int) -> np.ndarray:
    # From the track's start: the catalog's windows start there, so frames line up as they would
    # for any excerpt of a real encoder (the stand-in's codes are not shift-invariant).
    clean = artifacts.track_audio[track][: round(seconds * SAMPLE_RATE)]
    return add_noise(clean, 20.0, "pink", np.random.default_rng(seed))


def assert_same_hits(got: list[Any], expected: list[Any]) -> None:
    """Same tracks in the same order; scores may differ in the last bits (batches are formed differently)."""
    assert [track for track, _ in got] == [track for track, _ in expected]
    np.testing.assert_allclose([score for _, score in got], [score for _, score in expected], atol=1e-5)


@pytest.fixture(scope="module")
def dead_url() -> str:
    """A local port nobody listens on."""
    return f"127.0.0.1:{free_ports(1)[0]}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_search_finds_the_track_of_a_noisy_excerpt(triton_server: EmbeddedTriton, serving_artifacts: Any, protocol: str) -> None:
    with AudioSearchClient(url(triton_server, protocol), protocol=protocol) as client:
        hits = client.search(noisy_excerpt(serving_artifacts, "track-09", 8.0, seed=1), top_k=3)
    assert [track for track, _ in hits][0] == "track-09"
    assert len(hits) == 3 and hits[0][1] > hits[1][1] > hits[2][1]


def test_search_decodes_and_resamples_a_file(triton_server: EmbeddedTriton, serving_artifacts: Any, tmp_path: Path) -> None:
    """48 kHz stereo (a file, and an array): the client mixes down and resamples to 24 kHz before sending.

    Upsampled from the catalog audio: the stand-in tracks are white noise up to 12 kHz, which a lower
    rate would cut away.
    """
    excerpt = serving_artifacts.track_audio["track-04"][: 6 * SAMPLE_RATE]
    stereo = soxr.resample(np.stack([excerpt, excerpt], axis=1), SAMPLE_RATE, 48_000)
    path = tmp_path / "query.wav"
    sf.write(path, stereo, 48_000, subtype="FLOAT")
    with AudioSearchClient(triton_server.grpc_url) as client:
        assert client.search(path, top_k=1)[0][0] == "track-04"
        assert client.search(stereo, top_k=1, sample_rate=48_000)[0][0] == "track-04"


def test_search_batch_answers_in_query_order(triton_server: EmbeddedTriton, serving_artifacts: Any) -> None:
    tracks = ["track-01", "track-07", "track-02", "track-10", "track-03"]
    queries = [noisy_excerpt(serving_artifacts, track, 5.0, seed=i) for i, track in enumerate(tracks)]
    with AudioSearchClient(triton_server.http_url, protocol="http", max_concurrency=3) as client:
        results = client.search_batch(queries, top_k=2)
        assert [hits[0][0] for hits in results] == tracks
        assert client.search_batch([], top_k=2) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_and_metadata(triton_server: EmbeddedTriton, protocol: str) -> None:
    with AudioSearchClient(url(triton_server, protocol), protocol=protocol) as client:
        health = client.health()
        metadata = client.metadata()
    assert health["live"] and health["ready"] and health["model_ready"]
    assert MODELS <= set(health["models"])
    assert all(health["models"][name]["ready"] and health["models"][name]["versions"] == ["1"] for name in MODELS)
    assert metadata["name"] == "audio_search"
    assert [tensor["name"] for tensor in metadata["inputs"]] == ["AUDIO", "TOP_K"]
    assert [tensor["name"] for tensor in metadata["outputs"]] == ["TRACK_IDS", "SCORES"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_client_answers_like_the_sync_client(triton_server: EmbeddedTriton, serving_artifacts: Any, protocol: str) -> None:
    queries = [noisy_excerpt(serving_artifacts, track, 4.0, seed=3) for track in ("track-05", "track-06", "track-08")]
    address = url(triton_server, protocol)

    async def run() -> tuple[list[Any], list[list[Any]], dict[str, Any], dict[str, Any]]:
        async with AsyncAudioSearchClient(address, protocol=protocol, max_concurrency=2) as client:
            one = await client.search(queries[0], top_k=4)
            batch = await client.search_batch(queries, top_k=4)
            return one, batch, await client.health(), await client.metadata()

    one, batch, health, metadata = asyncio.run(run())
    with AudioSearchClient(address, protocol=protocol) as client:
        assert_same_hits(one, client.search(queries[0], top_k=4))
        for got, expected in zip(batch, client.search_batch(queries, top_k=4), strict=True):
            assert_same_hits(got, expected)
        assert health == client.health()
        assert metadata == client.metadata()
    assert [hits[0][0] for hits in batch] == ["track-05", "track-06", "track-08"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_down_raises_server_unavailable_after_retries(dead_url: str, protocol: str) -> None:
    started = time.monotonic()
    with AudioSearchClient(dead_url, protocol=protocol, retries=2, timeout_s=5) as client:
        with pytest.raises(ServerUnavailable):
            client.search(np.zeros(SAMPLE_RATE * 2, np.float32))
    # Two retries wait 0.2 s + 0.4 s first.
    assert time.monotonic() - started >= delay_s(0) + delay_s(1)

    async def run() -> None:
        async with AsyncAudioSearchClient(dead_url, protocol=protocol, retries=1, timeout_s=5) as client:
            await client.health()

    with pytest.raises(ServerUnavailable):
        asyncio.run(run())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_raises_model_not_ready(triton_server: EmbeddedTriton, protocol: str) -> None:
    with AudioSearchClient(url(triton_server, protocol), protocol=protocol, model="no_such_model") as client:
        with pytest.raises(ModelNotReady, match="no_such_model"):
            client.search(np.zeros(SAMPLE_RATE * 2, np.float32))
        assert client.health()["model_ready"] is False


BAD_AUDIO = {
    "empty": (np.zeros(0, np.float32), "AUDIO is empty"),
    "nan": (np.where(np.arange(2 * SAMPLE_RATE) % 1000 == 0, np.nan, 0.1).astype(np.float32), "NaN or infinite"),
    "too long": (np.zeros(31 * SAMPLE_RATE, np.float32), "at most 30 s"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", BAD_AUDIO)
def test_invalid_audio_raises_invalid_input_with_the_server_message(triton_server: EmbeddedTriton, protocol: str, case: str) -> None:
    audio, message = BAD_AUDIO[case]
    with AudioSearchClient(url(triton_server, protocol), protocol=protocol) as client:
        with pytest.raises(InvalidInput, match=message) as caught:
            client.search(audio)
    assert "audio_search" in str(caught.value)  # the server's words ("in ensemble 'audio_search', ...")


def test_invalid_top_k_and_file_fail_without_retrying(triton_server: EmbeddedTriton, tmp_path: Path) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio")
    with AudioSearchClient(triton_server.grpc_url) as client:
        with pytest.raises(InvalidInput, match="TOP_K must be one integer"):
            client.search(np.zeros(SAMPLE_RATE * 2, np.float32), top_k=0)
        with pytest.raises(InvalidInput, match="cannot decode audio"):
            client.search(not_audio)
    assert not should_retry(InvalidInput("x"), attempt=0, retries=5)
    assert not should_retry(ModelNotReady("x"), attempt=0, retries=5)
    assert should_retry(ServerUnavailable("x"), attempt=1, retries=2) and not should_retry(ServerUnavailable("x"), 2, 2)
    assert all(issubclass(kind, SearchError) for kind in (InvalidInput, ModelNotReady, ServerUnavailable))


def test_search_cli(triton_server: EmbeddedTriton, serving_artifacts: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "query.flac"
    sf.write(path, noisy_excerpt(serving_artifacts, "track-11", 6.0, seed=5), SAMPLE_RATE)
    assert run_module("client.search_cli", [str(path), "--url", triton_server.http_url, "--protocol", "http", "--top-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and hits[0]["track_id"] == "track-11"
    assert run_module("client.search_cli", [str(path), "--url", triton_server.grpc_url, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "track-11" in lines[0]


def test_cli_errors_are_one_line_with_distinct_exit_codes(triton_server: EmbeddedTriton, dead_url: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(SAMPLE_RATE // 2, np.float32), SAMPLE_RATE)  # 0.5 s: the server refuses it
    cases = [
        (["client.search_cli", str(silence), "--url", triton_server.grpc_url], 2, "InvalidInput"),
        (["client.search_cli", str(silence), "--url", triton_server.grpc_url, "--model", "nope"], 3, "ModelNotReady"),
        (["client.search_cli", str(silence), "--url", dead_url, "--retries", "0"], 4, "ServerUnavailable"),
        (["client.health_cli", "--url", dead_url, "--protocol", "http", "--retries", "0"], 4, "ServerUnavailable"),
    ]
    for (module, *argv), code, kind in cases:
        assert run_module(module, argv) == code, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {kind}: ") and "\n" not in err, err


def test_health_cli_with_probe(triton_server: EmbeddedTriton, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_module("client.health_cli", ["--url", triton_server.grpc_url, "--probe", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ready"] and report["model_ready"] and report["probe_ms"] > 0
    assert run_module("client.health_cli", ["--url", triton_server.http_url, "--protocol", "http", "--model", "nope"]) == 3
    assert "searched nope ready=False" in capsys.readouterr().out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_real_pipeline_finds_the_track_of_a_noisy_excerpt(real_pipeline: Any, protocol: str) -> None:
    """The real tiny models (MOSS encoder, embedder, FAISS catalog of generated tracks) behind the client.

    The fixture's embedder is untrained, so an excerpt is found only where its frames line up with a
    catalog segment (here: the track's start); at other offsets it takes a trained one.
    """
    rng = np.random.default_rng(11)
    tracks = sorted(real_pipeline.track_audio)
    queries = [add_noise(real_pipeline.track_audio[track][: 8 * SAMPLE_RATE], 20.0, "pink", rng) for track in tracks]
    with AudioSearchClient(url(real_pipeline.server, protocol), protocol=protocol) as client:
        found = [hits[0][0] for hits in client.search_batch(queries, top_k=3)]
    assert found == tracks
