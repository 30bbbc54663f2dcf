"""The API's Prometheus metrics, in their own registry, served on their own port (never on the public one)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from api.admission import Gate

# Known paths are labelled as themselves; anything else (scanners, typos) shares one label.
ROUTES = ("/v1/search", "/v1/health", "/", "/docs", "/openapi.json")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") else "other"


class ApiMetrics:
    def __init__(self, uploads: Gate, work: Gate) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cloudtune_api_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("cloudtune_api_request_duration_seconds", "Time from the request head to the response, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.refusals = Counter("cloudtune_api_refusals", "Requests refused instead of searched, by reason",
                                ["reason"], registry=self.registry)
        self.triton_latency = Histogram("cloudtune_api_triton_duration_seconds", "audio_search calls to Triton (gRPC)",
                                        buckets=LATENCY_BUCKETS, registry=self.registry)
        self.query_seconds = Histogram("cloudtune_api_query_audio_seconds", "Duration of the searched recordings",
                                       buckets=(1, 2, 5, 10, 15, 20, 30), registry=self.registry)
        gauges = (("uploads_receiving", "Uploads being received", lambda: uploads.holding),
                  ("in_flight", "Requests decoding or searching", lambda: work.holding),
                  ("queued", "Received uploads waiting for a place", lambda: work.waiting))
        for name, help_text, read in gauges:
            Gauge(f"cloudtune_api_{name}", help_text, registry=self.registry).set_function(read)

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, address, registry=self.registry)
