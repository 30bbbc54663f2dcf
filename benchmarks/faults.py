"""`python -m benchmarks faults`: a barrage of malformed requests, then proof the server still serves.

Every kind of bad input the service can get, over gRPC (tritonclient) and raw HTTP: empty, NaN,
infinite, too short/long, wrong dtype, wrong rank, TOP_K <= 0 / huge / wrong shape, missing or
unknown inputs, random bytes, lying length headers, oversized payloads. Each must be rejected as
the client's fault (gRPC INVALID_ARGUMENT / HTTP 4xx; Triton's own 500 for unparsable JSON is
tolerated and reported), never answered otherwise; afterwards the server must be ready and answer
a good query exactly as before.
"""
from __future__ import annotations

import argparse
import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from benchmarks.kserve_v2 import HEADER_LENGTH, binary_request, infer_path, json_request
from benchmarks.query_mix import MixSpec, load_mix
from client.sync_client import AudioSearchClient
from training.audio_io import SAMPLE_RATE

MODEL = "audio_search"
OUTPUTS = ["TRACK_IDS", "SCORES"]
# Triton 2.51 has no HTTP body limit: it reads this whole body, then the service rejects the length.
OVERSIZED_HTTP_BYTES = 80 * 2**20
# Triton 2.51 answers a body it cannot parse as JSON with 500, not 400: expected, the server survives it.
TRITON_PARSE_ERRORS = ("failed to parse the request JSON", "Unable to parse")


@dataclass(frozen=True)
class Outcome:
    case: str
    transport: str
    status: str
    message: str
    acceptable: bool


def _audio(seconds: float, dtype: type = np.float32) -> np.ndarray:
    return (0.1 * np.sin(np.arange(round(seconds * SAMPLE_RATE)) / 7.0)).astype(dtype)


def _top_k(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int32)


def _nan(seconds: float, value: float) -> np.ndarray:
    audio = _audio(seconds)
    audio[::100] = value
    return audio


GRPC_CASES: dict[str, Callable[[], dict[str, np.ndarray]]] = {
    "empty audio": lambda: {"AUDIO": np.zeros(0, np.float32)},
    "NaN samples": lambda: {"AUDIO": _nan(3, np.nan)},
    "infinite samples": lambda: {"AUDIO": _nan(3, np.inf)},
    "too short (0.5 s)": lambda: {"AUDIO": _audio(0.5)},
    "too long (31 s)": lambda: {"AUDIO": _audio(31)},
    "float64 audio": lambda: {"AUDIO": _audio(3, np.float64)},
    "int16 audio": lambda: {"AUDIO": (_audio(3) * 30000).astype(np.int16)},
    "2-D audio [2, S]": lambda: {"AUDIO": np.stack([_audio(3), _audio(3)])},
    "TOP_K = 0": lambda: {"AUDIO": _audio(3), "TOP_K": _top_k(0)},
    "TOP_K = -5": lambda: {"AUDIO": _audio(3), "TOP_K": _top_k(-5)},
    "TOP_K = 10^9": lambda: {"AUDIO": _audio(3), "TOP_K": _top_k(10**9)},
    "TOP_K shape [2]": lambda: {"AUDIO": _audio(3), "TOP_K": _top_k(5, 5)},
    "TOP_K int64": lambda: {"AUDIO": _audio(3), "TOP_K": np.array([5], np.int64)},
    "missing AUDIO": lambda: {"TOP_K": _top_k(5)},
    "unknown input": lambda: {"AUDIO": _audio(3), "NOT_AN_INPUT": _top_k(1)},
    "oversized gRPC (40 MB, 7 min)": lambda: {"AUDIO": np.zeros(10_000_000, np.float32)},
}


def grpc_case(url: str, name: str, tensors: dict[str, np.ndarray]) -> Outcome:
    inputs = []
    for tensor_name, array in tensors.items():
        tensor = grpcclient.InferInput(tensor_name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    try:
        with grpcclient.InferenceServerClient(url) as client:
            client.infer(MODEL, inputs, client_timeout=60)
    except InferenceServerException as error:
        status = str(error.status()).removeprefix("StatusCode.")
        return Outcome(name, "grpc", status, error.message() or "", status == "INVALID_ARGUMENT")
    return Outcome(name, "grpc", "OK", "accepted a malformed request", False)


def _random_bytes(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _http_cases() -> dict[str, Callable[[], tuple[bytes, dict[str, str]]]]:
    def lying_header() -> tuple[bytes, dict[str, str]]:
        body, headers = binary_request({"AUDIO": _audio(3)}, OUTPUTS)
        return body, {**headers, HEADER_LENGTH: str(len(body) + 1000)}

    def short_binary() -> tuple[bytes, dict[str, str]]:
        body, headers = binary_request({"AUDIO": _audio(3)}, OUTPUTS)
        return body[: len(body) // 2], headers

    def unknown_dtype() -> tuple[bytes, dict[str, str]]:
        body = {"inputs": [{"name": "AUDIO", "shape": [3], "datatype": "FP99", "data": [0.0, 0.1, 0.2]}]}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}

    def shape_data_mismatch() -> tuple[bytes, dict[str, str]]:
        body = {"inputs": [{"name": "AUDIO", "shape": [48000], "datatype": "FP32", "data": [0.0, 0.1]}]}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}

    def oversized() -> tuple[bytes, dict[str, str]]:
        return binary_request({"AUDIO": np.zeros(OVERSIZED_HTTP_BYTES // 4, np.float32)}, OUTPUTS)

    return {
        "random bytes, binary header": lambda: (_random_bytes(4096, 1), {HEADER_LENGTH: "100"}),
        "random bytes as JSON": lambda: (_random_bytes(4096, 2), {"Content-Type": "application/json"}),
        "truncated JSON": lambda: (json_request({"AUDIO": _audio(1.5)}, OUTPUTS)[0][:1000], {"Content-Type": "application/json"}),
        "header length beyond body": lying_header,
        "binary data cut short": short_binary,
        "unknown datatype": unknown_dtype,
        "shape/data mismatch": shape_data_mismatch,
        "NaN as JSON text": lambda: (b'{"inputs":[{"name":"AUDIO","shape":[2],"datatype":"FP32","data":[NaN, 1.0]}]}',
                                     {"Content-Type": "application/json"}),
        "oversized HTTP (80 MiB)": oversized,
    }


def http_case(url: str, name: str, body: bytes, headers: dict[str, str]) -> Outcome:
    host, port = url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", infer_path(MODEL), body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    except (ConnectionError, http.client.HTTPException) as error:
        return Outcome(name, "http", "connection closed", f"{type(error).__name__}: {error}", False)
    finally:
        connection.close()
    try:
        message = str(json.loads(text).get("error", text))
    except ValueError:
        message = text
    parse_error = response.status == 500 and message.startswith(TRITON_PARSE_ERRORS)
    return Outcome(name, "http", str(response.status), message[:300], 400 <= response.status < 500 or parse_error)


def run_barrage(grpc_url: str, http_url: str) -> list[Outcome]:
    outcomes = [grpc_case(grpc_url, name, build()) for name, build in GRPC_CASES.items()]
    outcomes += [http_case(http_url, name, *build()) for name, build in _http_cases().items()]
    return outcomes


@dataclass(frozen=True)
class BarrageReport:
    outcomes: list[Outcome]
    ready_after: bool
    answer_before: list[tuple[str, float]]
    answer_after: list[tuple[str, float]]

    @property
    def passed(self) -> bool:
        return all(o.acceptable for o in self.outcomes) and self.ready_after and self.answer_before == self.answer_after


def barrage_with_checks(grpc_url: str, http_url: str, good_query: np.ndarray, top_k: int = 5) -> BarrageReport:
    with AudioSearchClient(grpc_url, retries=0) as client:
        before = client.search(good_query, top_k=top_k)
        outcomes = run_barrage(grpc_url, http_url)
        health: dict[str, Any] = client.health()
        after = client.search(good_query, top_k=top_k)
    return BarrageReport(outcomes, bool(health["ready"] and health["model_ready"]), before, after)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grpc-url", default="localhost:8001")
    parser.add_argument("--http-url", default="localhost:8000")


def main(args: argparse.Namespace) -> int:
    report = barrage_with_checks(args.grpc_url, args.http_url, load_mix(MixSpec(queries=1))[0].audio)
    for o in report.outcomes:
        print(f"{'ok ' if o.acceptable else 'BAD'}  {o.transport:<4} {o.case:<32} {o.status:<18} {' '.join(o.message.split())[:90]}")
    print(f"server ready after the barrage: {report.ready_after}; same answer as before: {report.answer_before == report.answer_after}")
    return 0 if report.passed else 1
