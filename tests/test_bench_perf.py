"""perf_analyzer runs, model-configuration variants and the ensemble-vs-chain comparison, on the real server."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.chain import compare_ensemble_chain
from benchmarks.perf import parse_concurrency
from benchmarks.perf_analyzer import perf_environment
from benchmarks.variants import Variant, lay_out_variants, with_instances, without_dynamic_batching
from common.cli import run_module
from common.metrics_db import connect, run_query
from serving.triton_runtime import EmbeddedTriton

# A small mix of the generated catalog: 3 excerpts of 2 tracks (cached after the first run).
MIX_ARGS = ["--queries", "3", "--catalog-tracks", "2", "--catalog-seconds", "31"]


@pytest.fixture()
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCHMARK_RESULTS", str(tmp_path))
    return tmp_path


def test_concurrency_specs() -> None:
    assert parse_concurrency("1:32") == [1, 2, 4, 8, 16, 32]
    assert parse_concurrency("1:9:4") == [1, 5, 9]
    assert parse_concurrency("1,8,32") == [1, 8, 32]
    assert parse_concurrency("4") == [4]


def test_perf_analyzer_environment() -> None:
    env = perf_environment()
    assert any(Path(p, "libcudart.so.12").exists() for p in env["LD_LIBRARY_PATH"].split(os.pathsep))


def test_perf_run_writes_summary_and_plot(triton_server: EmbeddedTriton, triton_repository: Path, results: Path,
                                         serving_config: Any) -> None:
    argv = ["--model", "token_embedder", "--url", triton_server.grpc_url, "--model-repository", str(triton_repository),
            "--concurrency", "1,4", "--measurement-interval", "800", "--max-trials", "3", "--name", "run", *MIX_ARGS]
    assert run_module("benchmarks.perf", argv) == 0
    summary = json.loads((results / "run" / "summary.json").read_text())
    points = summary["configs"]["token_embedder"]["points"]
    assert [p["concurrency"] for p in points] == [1, 4]
    for point in points:
        assert point["throughput"] > 0 and 0 < point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
        assert point["server_compute_infer_ms"] > 0 and point["average_batch"] >= 1
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["cpu_model"]
    assert (results / "run" / "throughput_vs_p95.png").stat().st_size > 0
    entries = json.loads(Path(summary["input_data"]).read_text())["data"]
    n_quantizers = serving_config.model("token_embedder").inputs[0].dims[0]
    assert entries and all(e["CODES"]["shape"][0] == n_quantizers for e in entries)
    assert all(e["FRAME_COUNTS"]["content"] == [e["CODES"]["shape"][1]] for e in entries)


def test_ensemble_perf_run_sends_real_audio(triton_server: EmbeddedTriton, triton_repository: Path, results: Path) -> None:
    argv = ["--model", "audio_search", "--url", triton_server.http_url, "--protocol", "http", "--model-repository",
            str(triton_repository), "--concurrency", "2", "--measurement-interval", "1000", "--max-trials", "3", "--name", "e2e", *MIX_ARGS,
            "--db", f"sqlite:///{results / 'metrics.sqlite'}", "--run-id", "bench-1"]
    assert run_module("benchmarks.perf", argv) == 0
    summary = json.loads((results / "e2e" / "summary.json").read_text())
    point = summary["configs"]["audio_search"]["points"][0]
    assert point["throughput"] > 0
    columns, rows = run_query(connect(f"sqlite:///{results / 'metrics.sqlite'}"), "latency_trend")
    recorded = dict(zip(columns, rows[0]))
    assert len(rows) == 1 and (recorded["run_id"], recorded["model"], recorded["concurrency"]) == ("bench-1", "audio_search", 2)
    assert recorded["p95_ms"] == pytest.approx(point["p95_ms"], abs=1e-3) and recorded["source"] == "perf_analyzer"


def test_variants_come_from_the_serving_config(tmp_path: Path, triton_repository: Path) -> None:
    variants = [Variant("token_embedder_nobatch", "token_embedder", without_dynamic_batching, ""),
                Variant("token_embedder_x2", "token_embedder", with_instances(2), "")]
    repository = lay_out_variants(tmp_path, variants, triton_repository)
    nobatch = (repository / "token_embedder_nobatch" / "configs" / "cpu.pbtxt").read_text()
    twice = (repository / "token_embedder_x2" / "configs" / "cpu.pbtxt").read_text()
    assert 'name: "token_embedder_nobatch"' in nobatch and "dynamic_batching" not in nobatch and "max_batch_size: 64" in nobatch
    assert "dynamic_batching" in twice and "count: 2" in twice
    assert (repository / "token_embedder_nobatch" / "1" / "model.onnx").is_file()


def test_chain_answers_like_the_ensemble(triton_server: EmbeddedTriton, serving_artifacts: Any) -> None:
    queries = [serving_artifacts.track_audio[track][: 7 * 24_000] for track in ("track-00", "track-03", "track-09")]
    comparison = compare_ensemble_chain(triton_server.grpc_url, queries, top_k=5)
    assert comparison.answers_match and comparison.queries == 3
    assert comparison.ensemble_p50_ms > 0 and comparison.chain_p50_ms > 0
