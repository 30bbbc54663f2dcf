"""Locust load test of the search API (compose profile `bench`, service `locust-api`; web UI on :8090, or headless).

Each user uploads the 3-, 10- and 30-s queries of bench_audio.py as 16-bit WAV files to POST /v1/search, reported
per length. The API key comes from $CLOUDTUNE_API_KEY or the file named by $CLOUDTUNE_API_KEY_FILE (compose: the
api_bench_key secret of deploy/make_secrets.sh). Refusals count as failures and are named: 429 means the key's
rate limit, 503 the API's queue (configs/api.yaml) or Triton, so a run shows which limit was reached.

Headless against a local API (`make serve`, or python -m api serve):
  .venv/bin/locust -f deploy/locustfile_api.py --headless -u 4 -r 2 -t 20s --host http://127.0.0.1:8080
"""
from __future__ import annotations

import os
import random

from bench_audio import DURATIONS_S, query_wav
from locust import HttpUser, task


def api_key() -> str:
    path = os.environ.get("CLOUDTUNE_API_KEY_FILE")
    if path:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    return os.environ.get("CLOUDTUNE_API_KEY", "")


UPLOADS = [(f"/v1/search {seconds:g}s", query_wav(seconds, seed)) for seed, seconds in enumerate(DURATIONS_S)]


class ApiSearchUser(HttpUser):
    # No think time: each user is one closed-loop client, so users = concurrency.

    def on_start(self) -> None:
        key = api_key()
        self.headers = {"X-API-Key": key} if key else {}

    @task
    def search(self) -> None:
        name, upload = random.choice(UPLOADS)
        with self.client.post("/v1/search", files={"file": ("query.wav", upload, "audio/wav")}, data={"top_k": "10"},
                              headers=self.headers, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif not response.json().get("matches"):
                response.failure("no matches in the answer")
