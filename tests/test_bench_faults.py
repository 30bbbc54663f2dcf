"""Malformed-request barrage, a short soak, and a Python-backend stub killed under load: on real servers."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.faults import barrage_with_checks
from benchmarks.server_proc import pid_listening_on, python_stubs
from benchmarks.soak import soak
from benchmarks.stub_kill import kill_stub_experiment
from client.sync_client import AudioSearchClient
from serving.triton_runtime import EmbeddedTriton


def queries(artifacts: Any) -> list[Any]:
    return [artifacts.track_audio[track][: seconds * 24_000] for track, seconds in (("track-01", 3), ("track-09", 20), ("track-06", 7))]


def test_malformed_barrage_leaves_the_server_serving(triton_server: EmbeddedTriton, serving_artifacts: Any) -> None:
    report = barrage_with_checks(triton_server.grpc_url, triton_server.http_url, serving_artifacts.track_audio["track-03"])
    bad = [outcome for outcome in report.outcomes if not outcome.acceptable]
    assert not bad, bad
    assert len(report.outcomes) >= 20
    assert report.ready_after and report.answer_after == report.answer_before
    assert report.answer_after[0][0] == "track-03"


def test_short_soak_reports_no_failures_and_memory(triton_server: EmbeddedTriton, serving_artifacts: Any) -> None:
    server_pid = pid_listening_on(triton_server.http_port)
    assert server_pid is not None
    with AudioSearchClient(triton_server.grpc_url, retries=0) as client:
        report = soak(client, queries(serving_artifacts), seconds=4.0, rate=6.0, server_pid=server_pid, sample_every_s=1.0)
    assert report["requests"] == 24 and report["failed"] == 0 and report["ok"] == 24
    assert report["latency"]["p50_ms"] > 0
    start, end = report["memory_start"], report["memory_end"]
    assert start["tritonserver"] > 0 and any(key.startswith("stub:faiss_topk") for key in end)
    assert end["total"] == sum(value for key, value in end.items() if key not in ("t_s", "total"))


@pytest.fixture(scope="module")
def own_server(triton_repository: Path) -> Iterator[EmbeddedTriton]:
    """Its own server: the experiment breaks a model on purpose. The instance that lost its stub never
    finishes unloading, so shutdown always ends at the exit timeout: keep it short."""
    with EmbeddedTriton(triton_repository, extra_args=["--model-control-mode=explicit", "--load-model=audio_search"],
                        log_path=triton_repository.parent / "tritonserver-stub-kill.log", exit_timeout_s=2) as server:
        yield server


def test_killed_stub_is_not_restarted_and_unload_load_recovers(own_server: EmbeddedTriton, serving_artifacts: Any) -> None:
    report = kill_stub_experiment(own_server.grpc_url, own_server.http_url, "faiss_topk", queries(serving_artifacts),
                                  users=2, warm_s=1.5, observe_s=3.0)
    assert report["before_kill"].get("ok", 0) > 0
    # Triton 2.51: the stub stays dead, requests fail, readiness keeps saying 200 (docs in benchmarks/stub_kill.py).
    assert not report["stub_restarted_by_triton"], report
    assert any("is not healthy" in outcome for outcome in report["after_kill"]), report["after_kill"]
    assert all(entry["server_ready"] == 200 for entry in report["timeline"])
    assert report["reload_status"] == {"unload": "200", "load": "200"}
    assert report["stub_pids_after_reload"] and report["killed_pid"] not in report["stub_pids_after_reload"]
    with AudioSearchClient(own_server.grpc_url, retries=0) as client:
        assert client.search(serving_artifacts.track_audio["track-02"], top_k=1)[0][0] == "track-02"
    assert [stub.model for stub in python_stubs(report["server_pid"])].count("faiss_topk") == 1
