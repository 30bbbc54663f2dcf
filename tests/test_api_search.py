"""The search API (python -m api serve, a real uvicorn process) in front of the session's real tritonserver:
every accepted format finds the track, the API and `python -m client search` agree, keys, rate limits,
request ids, metrics and the OpenAPI description."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from api_stack import ApiServer, call, search

from api.config import load_api_config
from common.paths import REPO_ROOT
from common.windowing import SAMPLE_RATE
from export.repo_configs import load_serving_config
from training.augment import add_noise

TRACK = "track-09"
RATE = 48_000


def phone_recording(artifacts: Any, track: str = TRACK, seconds: float = 8.0) -> np.ndarray:
    """A noisy excerpt from the track's start (where the stand-in's codes line up), 48 kHz stereo as a phone gives it."""
    clean = artifacts.track_audio[track][: round(seconds * SAMPLE_RATE)]
    noisy = add_noise(clean, 20.0, "pink", np.random.default_rng(3))
    return soxr.resample(np.stack([noisy, 0.8 * noisy], axis=1), SAMPLE_RATE, RATE).astype(np.float32)


def encode_sndfile(audio: np.ndarray, fmt: str, subtype: str) -> bytes:
    out = io.BytesIO()
    sf.write(out, audio, RATE, format=fmt, subtype=subtype)
    return out.getvalue()


def encode_av(audio: np.ndarray, container: str, codec: str) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=RATE, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio.T), format="fltp", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = 0  # so the muxer records the encoder's priming samples (edit list) and decoders drop them
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            muxer.mux(packet)
    return out.getvalue()


ENCODERS = {
    "clip.wav": lambda a: encode_sndfile(a, "WAV", "PCM_16"),
    "clip.flac": lambda a: encode_sndfile(a, "FLAC", "PCM_24"),
    "clip.ogg": lambda a: encode_sndfile(a, "OGG", "VORBIS"),
    "clip.opus": lambda a: encode_sndfile(a, "OGG", "OPUS"),
    "clip.mp3": lambda a: encode_sndfile(a, "MP3", "MPEG_LAYER_III"),
    "clip.m4a": lambda a: encode_av(a, "mp4", "aac"),
    "clip.webm": lambda a: encode_av(a, "webm", "libopus"),
}


@pytest.fixture(scope="module")
def recording(serving_artifacts: Any) -> np.ndarray:
    return phone_recording(serving_artifacts)


@pytest.mark.parametrize("filename", sorted(ENCODERS))
def test_every_accepted_format_is_searched(api_server: ApiServer, recording: np.ndarray, filename: str) -> None:
    answer = search(api_server, ENCODERS[filename](recording), filename="upload.bin", top_k=5)
    assert answer.status == 200, answer.body
    result = answer.json()
    assert set(result) == {"matches", "query_seconds", "latency_ms"}
    assert [set(match) for match in result["matches"]] == [{"track_id", "score"}] * 5
    scores = [match["score"] for match in result["matches"]]
    assert scores == sorted(scores, reverse=True)
    assert abs(result["query_seconds"] - 8.0) < 0.1 and result["latency_ms"] > 0
    assert result["matches"][0]["track_id"] == TRACK


def test_curl_and_the_client_cli_find_the_same_tracks(api_server: ApiServer, triton_server: Any, recording: np.ndarray, tmp_path: Path) -> None:
    clip = tmp_path / "clip.ogg"
    clip.write_bytes(ENCODERS["clip.ogg"](recording))
    cli = subprocess.run([sys.executable, "-m", "client", "search", str(clip), "--top-k", "5", "--json", "--url", triton_server.grpc_url],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    curl = subprocess.run(["curl", "-sS", "-F", f"file=@{clip}", "-F", "top_k=5", "-H", f"X-API-Key: {api_server.keys['tester']}",
                           f"{api_server.url}/v1/search"], capture_output=True, text=True, timeout=120)
    assert curl.returncode == 0, curl.stderr
    by_client, by_api = json.loads(cli.stdout), json.loads(curl.stdout)["matches"]
    assert by_api[0]["track_id"] == by_client[0]["track_id"] == TRACK
    # The same decoder and resampler on both paths: the same query, so the same ranking.
    assert [m["track_id"] for m in by_api] == [m["track_id"] for m in by_client]
    np.testing.assert_allclose([m["score"] for m in by_api], [m["score"] for m in by_client], atol=1e-5)


def test_default_top_k_and_request_ids(api_server: ApiServer, recording: np.ndarray) -> None:
    answer = search(api_server, ENCODERS["clip.wav"](recording), headers={"X-Request-ID": "trace-42"})
    assert answer.status == 200 and len(answer.json()["matches"]) == load_api_config().limits.default_top_k
    assert answer.headers["x-request-id"] == "trace-42"
    generated = search(api_server, b"", headers={"X-Request-ID": "not a valid id!"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert generated.json()["request_id"] == generated.headers["x-request-id"]
    assert re.search(r"\[trace-42\] POST /v1/search 200 .* caller=tester", api_server.log())


def test_keys_are_required_and_checked(api_server: ApiServer, recording: np.ndarray) -> None:
    data = ENCODERS["clip.wav"](recording)
    missing = search(api_server, data, key=None)
    assert missing.status == 401 and "X-API-Key" in missing.json()["detail"] and missing.headers["www-authenticate"]
    wrong = search(api_server, data, key=None, headers={"X-API-Key": "ct_" + "x" * 43})
    assert wrong.status == 401 and wrong.json()["detail"] == "the API key is not valid"
    bearer = search(api_server, data, key=None, headers={"Authorization": f"Bearer {api_server.keys['tester']}"})
    assert bearer.status == 200


def test_each_key_has_its_own_rate_limit(api_server: ApiServer) -> None:
    burst = 20  # tests/api_stack.py TEST_SETTINGS
    statuses = [search(api_server, b"x", key="limited").status for _ in range(burst)]
    assert statuses == [415] * burst  # counted against the key although refused for their content
    refused = search(api_server, b"x", key="limited")
    assert refused.status == 429 and "limited" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert search(api_server, b"x", key="tester").status == 415, "another key is not affected"


def test_health_and_the_openapi_description(api_server: ApiServer) -> None:
    health = call(api_server, "GET", "/v1/health")
    assert health.status == 200 and health.json() == {"ready": True, "triton_ready": True, "model_ready": True}
    schema = call(api_server, "GET", "/openapi.json").json()
    operation = schema["paths"]["/v1/search"]["post"]
    form = next(iter(operation["requestBody"]["content"]["multipart/form-data"]["schema"].values()))
    assert form
    assert {"401", "413", "415", "422", "429", "503"} <= set(operation["responses"])
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert "/v1/health" in schema["paths"]
    docs = call(api_server, "GET", "/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()


def test_metrics_count_requests_latency_and_refusals(api_server: ApiServer) -> None:
    search(api_server, b"", key="tester")
    with urllib.request.urlopen(f"http://127.0.0.1:{api_server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert re.search(r'cloudtune_api_requests_total\{route="/v1/search",status="400"\} [1-9]', text)
    assert re.search(r'cloudtune_api_refusals_total\{reason="empty"\} [1-9]', text)
    assert re.search(r'cloudtune_api_request_duration_seconds_count\{route="/v1/search"\} [1-9]', text)
    assert "cloudtune_api_in_flight" in text and "cloudtune_api_triton_duration_seconds" in text
    assert call(api_server, "GET", "/metrics").status == 404, "metrics are not on the public port"


def test_limits_are_the_ensembles() -> None:
    limits = load_api_config().limits
    windows = load_serving_config().model("audio_windows").parameters
    topk = load_serving_config().model("faiss_topk").parameters
    assert (limits.min_seconds, limits.max_seconds) == (float(windows["MIN_SECONDS"]), float(windows["MAX_SECONDS"]))
    assert limits.max_top_k == int(topk["MAX_TOP_K"]) and limits.default_top_k == int(topk["DEFAULT_TOP_K"])
