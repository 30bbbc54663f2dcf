"""`python -m benchmarks waterfall` on the real embedded server: a query's latency split by ensemble step."""
from __future__ import annotations

from typing import Any

import pytest

from benchmarks.waterfall import PARTS, markdown, per_request, waterfall
from common.cli import run_module
from serving.triton_runtime import EmbeddedTriton


def test_waterfall_splits_the_latency_by_the_ensembles_steps(triton_server: EmbeddedTriton, serving_artifacts: Any) -> None:
    queries = [audio[: 5 * 24_000] for audio in list(serving_artifacts.track_audio.values())[:6]]
    report = waterfall(triton_server.grpc_url, queries)
    assert report["steps"] == ["audio_windows", "moss_encoder", "token_embedder", "faiss_topk"]
    assert report["queries"] == 6 and list(report["stages_ms"]) == report["steps"]
    for parts in report["stages_ms"].values():
        assert set(parts) == {"total", *PARTS} and all(value >= 0 for value in parts.values()) and parts["compute_infer"] > 0
        assert sum(parts[part] for part in PARTS) <= parts["total"]
    steps_total = sum(sum(parts[part] for part in PARTS) for parts in report["stages_ms"].values())
    assert 0 < steps_total < report["client_ms"]["mean"]
    assert report["outside_steps_ms"] == pytest.approx(report["client_ms"]["mean"] - steps_total)
    assert report["client_ms"]["p50"] <= report["client_ms"]["p90"]
    table = markdown(report)
    assert all(f"| {step} |" in table for step in report["steps"]) and "**client total**" in table


def test_a_request_count_that_does_not_match_the_queries_is_refused() -> None:
    before = {"m": {"count": 10, "total": 0, **dict.fromkeys(PARTS, 0)}}
    after = {"m": {"count": 14, "total": 4_000_000, **dict.fromkeys(PARTS, 4_000_000)}}
    assert per_request(before, after, "m", 4) == {"total": 1.0, **dict.fromkeys(PARTS, 1.0)}
    with pytest.raises(SystemExit, match="m served 4 requests while 3 queries were sent"):
        per_request(before, after, "m", 3)


def test_no_server_is_one_line_of_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="waterfall: the server at localhost:1 did not answer"):
        run_module("benchmarks.waterfall", ["--url", "localhost:1", "--queries", "2", "--seconds", "1"])
