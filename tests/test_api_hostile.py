"""Hostile input against the real stack (the API process + the session's tritonserver): after every case the API
answers a real search and Triton is ready. The crashing request of issue 18, broken and wrong files, a 2-hour
recording, oversized and endless uploads, slow clients, a flood of 1,000 uploads, and Triton going away."""
from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import av
import grpc
import numpy as np
import pytest
import soundfile as sf
from api_stack import ApiServer, call, health_status, multipart, search, start_api
from tritonclient.grpc import service_pb2, service_pb2_grpc

from common.windowing import SAMPLE_RATE
from serving.triton_runtime import EmbeddedTriton, free_ports

# Issue 18: a declared shape of 99,999,999,999 floats with one value; Triton's HTTP frontend aborts on it.
CRASHING_REQUEST = {"inputs": [{"name": "AUDIO", "shape": [99999999999], "datatype": "FP32", "data": [1]}]}
FLOOD_REQUESTS = 1_000
FLOOD_CONCURRENCY = 100
FLOOD_DEADLINE_S = 240


def wav(seconds: float, rate: int = SAMPLE_RATE, subtype: str = "PCM_16", fill: float | None = None) -> bytes:
    samples = round(seconds * rate)
    audio = np.full(samples, fill, np.float32) if fill is not None else (0.1 * np.random.default_rng(1).standard_normal(samples)).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, audio, rate, format="WAV", subtype=subtype)
    return out.getvalue()


def encoded(fmt: str, subtype: str, seconds: float = 3.0, rate: int = SAMPLE_RATE, samples: np.ndarray | None = None) -> bytes:
    audio = samples if samples is not None else (0.1 * np.random.default_rng(2).standard_normal(round(seconds * rate))).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, audio, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def m4a(codec: str = "aac", seconds: float = 3.0) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as muxer:
        stream = muxer.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, round(seconds * SAMPLE_RATE)), np.float32 if codec == "aac" else np.int16),
                                           format="fltp" if codec == "aac" else "s16p", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            muxer.mux(packet)
    return out.getvalue()


@pytest.fixture(autouse=True)
def stays_ready(api_server: ApiServer, triton_server: EmbeddedTriton) -> Iterator[None]:
    """After every case: the API process runs, searches end to end, and Triton is ready."""
    yield
    api, triton = api_server, triton_server
    assert api.process.poll() is None, api.log()[-3000:]
    answer = search(api, wav(3.0), key="load")
    assert answer.status == 200 and len(answer.json()["matches"]) == 10, answer.body
    assert health_status(api) == 200
    assert triton.returncode is None and triton.is_ready()


def test_the_crashing_request_is_refused_by_the_api(api_server: ApiServer) -> None:
    body = json.dumps(CRASHING_REQUEST).encode()
    key = {"X-API-Key": api_server.keys["load"]}
    answer = call(api_server, "POST", "/v1/search", body, {"Content-Type": "application/json", **key})
    assert answer.status == 415 and "multipart/form-data" in answer.json()["detail"]
    # Triton's own path does not exist on the API, with or without a key.
    for headers in ({"Content-Type": "application/json"}, {"Content-Type": "application/json", **key}):
        assert call(api_server, "POST", "/v2/models/audio_search/infer", body, headers).status == 404
    # Smuggled as a form field or as the "file": not audio.
    form, content_type = multipart({"inputs": json.dumps(CRASHING_REQUEST["inputs"])}, {"file": ("x.json", body)})
    answer = call(api_server, "POST", "/v1/search", form, {"Content-Type": content_type, **key})
    assert answer.status == 415 and "not a recognised audio file" in answer.json()["detail"]


@pytest.mark.parametrize("use_raw", [True, False], ids=["raw-bytes", "typed-contents"])
@pytest.mark.parametrize("declared", [99_999_999_999, 3_000_000_000])
def test_the_crashing_request_is_refused_by_tritons_grpc(triton_server: EmbeddedTriton, declared: int, use_raw: bool) -> None:
    request = service_pb2.ModelInferRequest(model_name="audio_search")
    tensor = request.inputs.add(name="AUDIO", datatype="FP32", shape=[declared])
    if use_raw:
        request.raw_input_contents.append(np.float32(1).tobytes())
    else:
        tensor.contents.fp32_contents.append(1.0)
    with grpc.insecure_channel(triton_server.grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


def corrupt_cases() -> dict[str, tuple[bytes, int, str]]:
    """name -> (file, expected status, expected reason word)."""
    good_wav, good_mp3 = wav(3.0), encoded("MP3", "MPEG_LAYER_III")
    good_ogg, good_flac, good_m4a = encoded("OGG", "VORBIS"), encoded("FLAC", "PCM_16"), m4a()
    rng = np.random.default_rng(5)
    return {
        "zero-length": (b"", 400, "empty"),
        "wav header only": (good_wav[:44], 400, "holds no audio"),
        "wav cut to 0.5 s": (good_wav[: 44 + SAMPLE_RATE], 422, "send 1-30 s"),
        "wav half a header": (good_wav[:20], 400, "truncated or corrupt"),
        "mp3 cut to 500 bytes": (good_mp3[:500], 400, "truncated or corrupt"),
        "ogg cut to 100 bytes": (good_ogg[:100], 400, "truncated or corrupt"),
        "ogg garbage after the signature": (b"OggS" + rng.bytes(4000), 415, "Ogg stream with a codec"),
        "flac cut to 2000 bytes": (good_flac[:2000], 400, "truncated or corrupt"),
        "m4a cut in half": (good_m4a[: len(good_m4a) // 2], 400, "truncated or corrupt"),
        "m4a header only": (good_m4a[:32], 400, "truncated or corrupt"),
        "random bytes": (rng.bytes(50_000), 415, "not a recognised audio file"),
        "png image": (b"\x89PNG\r\n\x1a\n" + rng.bytes(2000), 415, "not a recognised audio file"),
        "text": (b"hello, this is not audio\n" * 100, 415, "not a recognised audio file"),
        "aiff (not accepted)": (encoded("AIFF", "PCM_16"), 415, "not a recognised audio file"),
        "ogg flac (not accepted)": (encoded("OGG", "FLAC") if "FLAC" in sf.available_subtypes("OGG") else b"OggS\x00\x02" + bytes(22) + b"\x01\x13\x7fFLAC", 415, "codec"),
        "m4a with alac (not accepted)": (m4a("alac"), 415, "alac"),
        "wav of NaN": (wav(3.0, subtype="FLOAT", fill=float("nan")), 422, "NaN"),
        "wav 0.5 s": (wav(0.5), 422, "send 1-30 s"),
        "wav 31 s": (wav(31.0), 422, "longer than 30 s"),
        "wav at 384 kHz": (wav(1.5, rate=384_000), 422, "sample rate"),
    }


CORRUPT = corrupt_cases()


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_broken_and_wrong_files_get_a_clear_4xx(api_server: ApiServer, name: str) -> None:
    data, status, words = CORRUPT[name]
    answer = search(api_server, data, filename="recording.wav", key="load")
    assert answer.status == status, answer.body
    detail = answer.json()["detail"]
    assert words in detail and "\n" not in detail and "Traceback" not in detail


def test_bad_form_fields_get_a_clear_422(api_server: ApiServer) -> None:
    key = {"X-API-Key": api_server.keys["load"]}
    for top_k, words in (("0", "top_k"), ("101", "top_k"), ("ten", "top_k")):
        body, content_type = multipart({"top_k": top_k}, {"file": ("a.wav", wav(2.0))})
        answer = call(api_server, "POST", "/v1/search", body, {"Content-Type": content_type, **key})
        assert answer.status == 422 and words in answer.json()["detail"], answer.body
    body, content_type = multipart({"top_k": "5"}, {})
    answer = call(api_server, "POST", "/v1/search", body, {"Content-Type": content_type, **key})
    assert answer.status == 422 and "file" in answer.json()["detail"]
    many, content_type = multipart({f"f{i}": "x" for i in range(20_000)}, {"file": ("a.wav", wav(2.0))})
    assert call(api_server, "POST", "/v1/search", many, {"Content-Type": content_type, **key}).status == 400


def test_a_two_hour_recording_is_refused_without_decoding_it(api_server: ApiServer) -> None:
    # Losslessly compressed silence: 2 hours in ~200 kB, under the size limit, so only the decoded duration can refuse it.
    two_hours = encoded("FLAC", "PCM_16", samples=np.zeros(8_000 * 7_200, np.float32), rate=8_000)
    assert len(two_hours) < 1_000_000
    answer = search(api_server, two_hours, filename="long.flac", key="load")
    assert answer.status == 422 and "longer than 30 s" in answer.json()["detail"]
    # As WAV the same two hours are 115 MB: refused from the Content-Length alone, before the body is read.
    with socket.create_connection(("127.0.0.1", api_server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"X-API-Key: " + api_server.keys["load"].encode() + b"\r\nContent-Length: 115200244\r\n\r\n" + wav(1.0)[:44])
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413") and "connection: close" in head.lower()


def test_an_endless_chunked_upload_is_cut_off_at_the_size_limit(api_server: ApiServer) -> None:
    sent = {"n": 0}

    def endless() -> Iterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        while sent["n"] < 64 * 1024 * 1024:  # gives up at 64 MiB, well past the 8 MiB limit
            sent["n"] += 65536
            yield bytes(65536)

    connection = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=60)
    try:
        connection.putrequest("POST", "/v1/search")
        for name, value in (("Content-Type", "multipart/form-data; boundary=b"), ("Transfer-Encoding", "chunked"),
                            ("X-API-Key", api_server.keys["load"])):
            connection.putheader(name, value)
        connection.endheaders()
        try:
            for chunk in endless():
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server closed the connection after refusing
        response = connection.getresponse()
        assert response.status == 413 and "larger than" in json.loads(response.read())["detail"]
    finally:
        connection.close()
    assert sent["n"] < 64 * 1024 * 1024


def test_a_client_that_trickles_its_upload_is_timed_out(api_server: ApiServer) -> None:
    body, content_type = multipart({}, {"file": ("a.wav", wav(3.0))})
    with socket.create_connection(("127.0.0.1", api_server.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nX-API-Key: {api_server.keys['load']}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        started = time.monotonic()
        answer = b""
        offset = 0
        # 16 bytes every 0.25 s (the whole upload would take 25 minutes) for twice the server's 2-s deadline, then
        # silence: bytes still arriving after the server closes would be answered with a reset, which can
        # overtake its 408 on a loaded machine (a fresh-clone run lost it so).
        while not answer and time.monotonic() - started < 4:
            try:
                sock.sendall(body[offset : offset + 16])
            except OSError:
                break
            offset += 16
            sock.settimeout(0.25)
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
        sock.settimeout(20)
        while chunk := sock.recv(65536):  # the answer ends with the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 2 s" in answer and b"connection: close" in answer.lower()


@pytest.mark.parametrize("trickle", [b"", b"POST /v1/search HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "trickled-headers"])
def test_a_client_that_never_completes_its_request_head_is_disconnected(api_server: ApiServer, trickle: bytes) -> None:
    with socket.create_connection(("127.0.0.1", api_server.port), timeout=30) as sock:
        sock.sendall(trickle)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 10:
            try:
                sock.sendall(b"X-Slow: 1\r\n" if trickle else b"")
                sock.settimeout(0.5)
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed, "the connection is still open after 10 s (the head deadline is 2 s)"


def test_a_flood_of_uploads_is_answered_with_429_and_503_not_a_collapse(api_server: ApiServer) -> None:
    clip = wav(1.0)
    keys = ["flood-limited" if i % 10 == 0 else "load" for i in range(FLOOD_REQUESTS)]

    async def flood() -> list[tuple[int, str | None]]:
        slots = asyncio.Semaphore(FLOOD_CONCURRENCY)
        connector = aiohttp.TCPConnector(limit=FLOOD_CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def one(key: str) -> tuple[int, str | None]:
                form = aiohttp.FormData()
                form.add_field("file", clip, filename="clip.wav")
                async with slots, session.post(f"{api_server.url}/v1/search", data=form, headers={"X-API-Key": api_server.keys[key]}) as response:
                    await response.read()
                    return response.status, response.headers.get("Retry-After")

            return await asyncio.wait_for(asyncio.gather(*(one(key) for key in keys)), FLOOD_DEADLINE_S)

    started = time.monotonic()
    results = asyncio.run(flood())
    elapsed = time.monotonic() - started
    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses[200] > 0 and statuses[503] > 0 and statuses[429] > 0, statuses
    assert all(retry_after for status, retry_after in results if status in (429, 503))
    print(f"flood of {FLOOD_REQUESTS} uploads at concurrency {FLOOD_CONCURRENCY}: {dict(statuses)} in {elapsed:.1f} s")
    rss_kib = int(next(line for line in Path(f"/proc/{api_server.process.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:")).split()[1])
    assert rss_kib < 1024 * 1024, f"the API holds {rss_kib / 1024:.0f} MiB after the flood"


def test_triton_down_means_503_with_retry_after_and_the_api_heals_when_it_returns(tmp_path: Path, triton_repository: Path) -> None:
    port = free_ports(1)[0]
    api = start_api(tmp_path, f"127.0.0.1:{port}", wait_ready=False)
    try:
        answer = search(api, wav(3.0))
        assert answer.status == 503 and int(answer.headers["retry-after"]) > 0
        assert "unavailable" in answer.json()["detail"]
        health = call(api, "GET", "/v1/health")
        assert health.status == 503 and health.json()["ready"] is False and health.headers["retry-after"]
        assert call(api, "GET", "/").status == 200, "the API itself stays up"
        with EmbeddedTriton(triton_repository, grpc_port=port, extra_args=["--model-control-mode=explicit", "--load-model=audio_search"],
                            log_path=tmp_path / "second-triton.log"):
            deadline = time.monotonic() + 30
            while health_status(api) != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert health_status(api) == 200
            assert search(api, wav(3.0)).status == 200
        assert search(api, wav(3.0)).status == 503
        assert api.process.poll() is None
    finally:
        api.stop()
