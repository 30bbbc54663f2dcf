"""Locust load test of audio_search over HTTP (compose profile `bench`; web UI on :8089, or headless).

Each user sends the 3-, 10- and 30-s queries of bench_audio.py back to back, reported per length.
"""
from __future__ import annotations

import random

from bench_audio import MODEL, binary_infer_request, queries
from locust import HttpUser, task

REQUESTS = [(f"{MODEL} {seconds:g}s", *binary_infer_request(audio)) for seconds, audio in queries()]


class SearchUser(HttpUser):
    # No think time: each user is one closed-loop client, so users = concurrency (as in perf_analyzer).

    @task
    def search(self) -> None:
        name, body, headers = random.choice(REQUESTS)
        with self.client.post(f"/v2/models/{MODEL}/infer", data=body, headers=headers, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
            if not outputs.get("TRACK_IDS"):
                response.failure("no TRACK_IDS in the answer")
