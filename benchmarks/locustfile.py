"""Locust load test of audio_search with the realistic query mix (1-30 s excerpts, benchmarks/query_mix.py).

Users (each a closed-loop client without think time, so users = concurrency, as in perf_analyzer):
  HttpSearchUser  KServe v2 over HTTP: the binary tensor extension (Inference-Header-Content-Length),
                  and for one request in four a plain JSON body (queries up to 10 s: as JSON text a
                  30-s query is ~10 MB, which no client would send)
  GrpcSearchUser  tritonclient gRPC, reported to locust through `request` events
Requests are named by protocol, encoding and query length (1-3 s, 3-10 s, 10-30 s).

Headless run against `make serve` (writes run_stats.csv, run_failures.csv, ... and report.html):
  .venv/bin/locust -f benchmarks/locustfile.py --headless -u 4 -r 2 -t 20s --host http://127.0.0.1:8000 \\
      --grpc-host 127.0.0.1:8001 --csv benchmarks/results/locust/run --html benchmarks/results/locust/report.html
Only one kind of user: append its class name (HttpSearchUser or GrpcSearchUser). The query mix must
describe the served catalog (--catalog-tracks/--catalog-seconds/--catalog-seed, as `training synth`).
"""
from __future__ import annotations

import random
import time
from typing import Any

# grpcio blocks the whole process under gevent unless told to cooperate; before any channel exists.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from locust import HttpUser, User, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from benchmarks.kserve_v2 import binary_request, infer_path, json_outputs, json_request  # noqa: E402
from benchmarks.query_mix import MixSpec, Query, load_mix  # noqa: E402

MODEL = "audio_search"
OUTPUTS = ["TRACK_IDS", "SCORES"]
LENGTH_BUCKETS = ((3.0, "1-3s"), (10.0, "3-10s"), (float("inf"), "10-30s"))
JSON_MAX_SECONDS = 10.0


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    defaults = MixSpec()
    parser.add_argument("--grpc-host", default="", help="host:port of gRPC (default: --host's host, port 8001)")
    parser.add_argument("--mix-queries", type=int, default=16, help="excerpts in the query mix")
    parser.add_argument("--catalog-tracks", type=int, default=defaults.catalog_tracks)
    parser.add_argument("--catalog-seconds", type=float, default=defaults.catalog_seconds)
    parser.add_argument("--catalog-seed", type=int, default=defaults.catalog_seed)
    parser.add_argument("--top-k", type=int, default=10)


def _bucket(query: Query) -> str:
    return next(label for limit, label in LENGTH_BUCKETS if query.seconds <= limit)


class _Workload:
    """Bodies are encoded once per process: a 30-s excerpt is 720k floats, costly to encode per request."""

    queries: list[Query] = []
    # (query, encoded request) pairs
    binary: list[tuple[Query, tuple[bytes, dict[str, str]]]] = []
    json: list[tuple[Query, tuple[bytes, dict[str, str]]]] = []
    top_k = np.zeros(1, np.int32)

    @classmethod
    def load(cls, options: Any) -> None:
        spec = MixSpec(queries=options.mix_queries, catalog_tracks=options.catalog_tracks,
                       catalog_seconds=options.catalog_seconds, catalog_seed=options.catalog_seed)
        cls.queries = load_mix(spec)
        cls.top_k = np.array([options.top_k], np.int32)
        cls.binary = [(q, binary_request({"AUDIO": q.audio, "TOP_K": cls.top_k}, OUTPUTS)) for q in cls.queries]
        short = [q for q in cls.queries if q.seconds <= JSON_MAX_SECONDS] or cls.queries[:1]
        cls.json = [(q, json_request({"AUDIO": q.audio, "TOP_K": cls.top_k}, OUTPUTS)) for q in short]


@events.init.add_listener
def _load_workload(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is not None:
        _Workload.load(environment.parsed_options)


class HttpSearchUser(HttpUser):
    @task(3)
    def binary_tensors(self) -> None:
        self._search(_Workload.binary, "http-binary")

    @task(1)
    def json_body(self) -> None:
        self._search(_Workload.json, "http-json")

    def _search(self, requests: list[tuple[Query, tuple[bytes, dict[str, str]]]], encoding: str) -> None:
        query, (body, headers) = random.choice(requests)
        name = f"{MODEL} {encoding} {_bucket(query)}"
        with self.client.post(infer_path(MODEL), data=body, headers=headers, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif not json_outputs(response.content).get("TRACK_IDS"):
                response.failure("no TRACK_IDS in the answer")


class GrpcSearchUser(User):
    def on_start(self) -> None:
        options = self.environment.parsed_options
        host = options.grpc_host or f"{(self.host or 'http://localhost').split('://')[-1].rsplit(':', 1)[0]}:8001"
        self.client = grpcclient.InferenceServerClient(host)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def search(self) -> None:
        query = random.choice(_Workload.queries)
        audio = grpcclient.InferInput("AUDIO", list(query.audio.shape), "FP32")
        audio.set_data_from_numpy(query.audio)
        top_k = grpcclient.InferInput("TOP_K", [1], "INT32")
        top_k.set_data_from_numpy(_Workload.top_k)
        started = time.perf_counter()
        length, error = 0, None
        try:
            result = self.client.infer(MODEL, [audio, top_k], client_timeout=60)
            length = result.get_response().ByteSize()
            if result.as_numpy("TRACK_IDS").size == 0:
                error = RuntimeError("no TRACK_IDS in the answer")
        except InferenceServerException as exception:
            error = exception
        self.environment.events.request.fire(
            request_type="grpc", name=f"{MODEL} grpc {_bucket(query)}", response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=error, context={},
        )
