"""After a publish: the served ensemble answers audio queries from the new catalog version.

Noisy excerpts of catalog tracks go through `audio_search` over gRPC (the path backend engineers use);
the step fails if the newly published faiss_topk version is not the one ready, if a hit names a track the
new catalog does not have, or if too few queries find their own track first. The latencies are recorded
as the run's end-to-end benchmark row.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from common.metrics_db import LatencyPoint, record_benchmark
from common.metrics_target import MetricsTarget
from pipelines.run_state import StepFailed
from pipelines.settings import PipelineSettings
from serving.catalog_index import load_catalog
from serving.publish_index import TritonAdmin
from training.audio_io import SAMPLE_RATE
from training.excerpts import noisy_excerpt


def smoke_queries(settings: PipelineSettings, target: MetricsTarget, index_dir: Path, version: int) -> dict[str, Any]:
    from client import AudioSearchClient

    sv, sm = settings.serving, settings.smoke
    if not TritonAdmin(sv.http_url, sv.admin_header, "").version_ready("faiss_topk", version):
        raise StepFailed(f"faiss_topk version {version} (just published) is not ready on {sv.http_url}")
    catalog_tracks = set(load_catalog(index_dir).track_ids)
    audio_root = Path(settings.audio_root)
    candidates = sorted(t for t in catalog_tracks if (audio_root / f"{t}.wav").is_file())
    if not candidates:
        raise StepFailed(f"no catalog track has audio under {audio_root} to query with")
    rng = np.random.default_rng(sm.seed)
    chosen = [str(t) for t in rng.choice(candidates, size=min(sm.queries, len(candidates)), replace=False)]
    queries = [noisy_excerpt(audio_root, [track], sm.seconds, sm.condition, sm.seed + i) for i, track in enumerate(chosen)]
    latencies, first_hits, unknown = [], 0, set()
    with AudioSearchClient(sv.grpc_url, protocol="grpc") as client:
        client.search(queries[0][1][:SAMPLE_RATE], top_k=1)  # warm-up: the first request pays initialisation
        for expected, audio in queries:
            started = time.perf_counter()
            hits = client.search(audio, top_k=5)
            latencies.append((time.perf_counter() - started) * 1000)
            first_hits += bool(hits) and hits[0][0] == expected
            unknown |= {track for track, _ in hits} - catalog_tracks
    ms = np.array(latencies)
    point = LatencyPoint(1, round(len(ms) / (ms.sum() / 1000), 2), *(round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)))
    record_benchmark(target, "smoke", "audio_search", "pipeline", "grpc", [point])
    result = {"version": version, "queries": len(queries), "top1_rate": first_hits / len(queries), "p50_ms": point.p50_ms, "p95_ms": point.p95_ms}
    if unknown:
        raise StepFailed(f"hits name tracks outside the published catalog: {sorted(unknown)[:5]}")
    if result["top1_rate"] < sm.min_top1_rate:
        raise StepFailed(f"only {first_hits}/{len(queries)} smoke queries found their track first (minimum {sm.min_top1_rate:.0%})")
    return result
