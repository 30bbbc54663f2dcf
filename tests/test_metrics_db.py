"""The run-metrics SQL layer on SQLite: schema, idempotent writers, the .sql queries' deltas, the report."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.cli import run_module
from common.metrics_db import (ALL_CONDITIONS, LatencyPoint, connect, ensure_run, mark_published, metadata, quality_rows,
                               record_benchmark, record_index_build, record_quality, run_query)
from common.metrics_target import MetricsTarget, metrics_target

CONDITIONS = ("clean", "snr20")
LENGTHS = ("5.0", "10.0")


def metrics(rng: np.random.Generator, queries: int) -> dict[str, Any]:
    r1 = float(rng.uniform(0.1, 0.6))
    return {"recall@1": r1, "recall@10": min(1.0, r1 + 0.2), "recall@100": 1.0, "mrr": r1 + 0.05, "queries": queries}


def evaluate_result(seed: int, split: str = "test") -> dict[str, Any]:
    """Shaped like `python -m training evaluate`'s JSON, numbers drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {**metrics(rng, 40), "split": split, "protocol": "same_file_aug", "query_alignment": "start", "checkpoint": f"ckpt-{seed}.pt",
            "by_condition": {c: metrics(rng, 20) for c in CONDITIONS}, "by_length": {s: metrics(rng, 20) for s in LENGTHS},
            "by_condition_length": {c: {s: metrics(rng, 10) for s in LENGTHS} for c in CONDITIONS}}


def manifest(tracks: int, sha: str = "a" * 64) -> dict[str, Any]:
    return {"embedder_sha256": sha, "dim": 16, "index_type": "flat", "n_vectors": 2 * tracks, "n_tracks": tracks}


# Production runs on PostgreSQL: set this to a scratch database's URL (its tables are dropped) to run every
# test there too, e.g. postgresql+psycopg://cloudtune:cloudtune@localhost/metrics (README, "Catalog refresh").
POSTGRES_ENV = "CLOUDTUNE_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'metrics.sqlite'}"
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"set {POSTGRES_ENV} to run the SQL layer on PostgreSQL too")
    metadata.drop_all(connect(os.environ[POSTGRES_ENV]))
    return os.environ[POSTGRES_ENV]


def test_quality_rows_cover_pooled_condition_length_and_both(url: str) -> None:
    result = evaluate_result(1)
    rows = quality_rows(result)
    assert len(rows) == 1 + len(CONDITIONS) + len(LENGTHS) + len(CONDITIONS) * len(LENGTHS)
    pooled = [r for r in rows if r["condition"] == ALL_CONDITIONS and r["query_seconds"] is None]
    assert pooled == [{"condition": ALL_CONDITIONS, "query_seconds": None, "queries": 40, "recall_at_1": result["recall@1"],
                       "recall_at_10": result["recall@10"], "recall_at_100": 1.0, "mrr": result["mrr"]}]
    cell = next(r for r in rows if r["condition"] == "snr20" and r["query_seconds"] == 10.0)
    assert cell["recall_at_1"] == result["by_condition_length"]["snr20"]["10.0"]["recall@1"]


def test_writers_are_idempotent_per_run(url: str) -> None:
    target = MetricsTarget(url, "run-1")
    record_quality(target, evaluate_result(1))
    record_quality(target, evaluate_result(2))  # a restarted evaluate replaces, never adds
    record_quality(target, evaluate_result(3, split="val"))  # another evaluation of the same run is kept beside it
    points = [LatencyPoint(c, 10.0 * c, 5.0, 9.0 + c, 12.0) for c in (1, 4)]
    record_benchmark(target, "smoke", "audio_search", "cpu", "grpc", points)
    record_benchmark(target, "smoke", "audio_search", "cpu", "grpc", points)
    record_index_build(target, "artifacts/index", manifest(30), 1.5)
    record_index_build(target, "artifacts/index", manifest(30), 1.2)
    engine = connect(url)
    _, quality = run_query(engine, "quality_trend")
    assert sorted((row[2], row[6]) for row in quality) == sorted([("test", evaluate_result(2)["recall@1"]), ("val", evaluate_result(3)["recall@1"])])
    _, latency = run_query(engine, "latency_trend")
    assert [row[5] for row in latency] == [1, 4]
    _, builds = run_query(engine, "index_trend")
    assert [(row[2], row[5]) for row in builds] == [(30, 1.2)]
    _, summary = run_query(engine, "run_summary")
    assert summary == [("run-1", "evaluated", max(evaluate_result(2)["recall@1"], evaluate_result(3)["recall@1"]), 13.0)]


def test_trend_queries_give_run_over_run_deltas(url: str) -> None:
    results = {f"run-{i}": evaluate_result(10 + i) for i in range(3)}
    for run_id, result in results.items():
        target = MetricsTarget(url, run_id)
        record_quality(target, result)
        record_benchmark(target, "perf_analyzer", "audio_search", "cpu", "grpc",
                         [LatencyPoint(c, 100.0 / (i := int(run_id[-1]) + 1), 10.0 * i, 20.0 * i + c, 30.0 * i) for c in (1, 8)])
        record_index_build(target, "index", manifest(50 + 10 * int(run_id[-1])), 2.0 + int(run_id[-1]))
    engine = connect(url)
    columns, rows = run_query(engine, "quality_trend")
    recall = [r["recall@1"] for r in results.values()]
    assert [row[0] for row in rows] == list(results)
    delta = columns.index("recall_at_1_delta")
    assert rows[0][delta] is None
    assert [row[delta] for row in rows[1:]] == pytest.approx([recall[1] - recall[0], recall[2] - recall[1]])
    columns, rows = run_query(engine, "latency_trend")
    p95_delta = columns.index("p95_delta_ms")
    by_concurrency = {c: [row for row in rows if row[columns.index("concurrency")] == c] for c in (1, 8)}
    for c, series in by_concurrency.items():
        assert [row[0] for row in series] == list(results)
        assert [row[p95_delta] for row in series] == [None, 20.0, 20.0]  # p95 = 20 * (i + 1) + c
    columns, rows = run_query(engine, "index_trend")
    assert [row[columns.index("tracks_added")] for row in rows] == [None, 10, 10]
    columns, rows = run_query(engine, "quality_by_condition")
    snr20_10s = [row for row in rows if row[1] == "snr20" and row[2] == 10.0]
    expected = [r["by_condition_length"]["snr20"]["10.0"]["recall@1"] for r in results.values()]
    assert [row[4] for row in snr20_10s] == expected
    assert [row[5] for row in snr20_10s][1:] == pytest.approx(np.diff(expected).tolist())


def test_last_published_recall_is_the_gates_reference(url: str) -> None:
    engine = connect(url)
    scope = {"split": "test", "protocol": "same_file_aug", "query_alignment": "start"}
    for i in range(3):
        record_quality(MetricsTarget(url, f"run-{i}"), evaluate_result(20 + i))
    assert run_query(engine, "last_published_recall", run_id="run-2", **scope)[1] == []
    mark_published(engine, "run-0", 2)
    mark_published(engine, "run-1", 3)
    _, rows = run_query(engine, "last_published_recall", run_id="run-2", **scope)
    assert rows == [("run-1", evaluate_result(21)["recall@1"], 3)]
    _, rows = run_query(engine, "last_published_recall", run_id="run-1", **scope)  # a run is never its own reference
    assert rows == [("run-0", evaluate_result(20)["recall@1"], 2)]
    assert run_query(engine, "last_published_recall", run_id="run-2", **{**scope, "split": "val"})[1] == []


def test_bad_run_fields_and_missing_run_id_are_refused(url: str) -> None:
    engine = connect(url)
    with pytest.raises(ValueError, match="status"):
        ensure_run(engine, "run-x", status="shipped")
    with pytest.raises(ValueError, match="unknown run fields"):
        ensure_run(engine, "run-x", colour="red")
    with pytest.raises(SystemExit, match="--run-id"):
        metrics_target(argparse.Namespace(db=url, run_id=None))
    assert metrics_target(argparse.Namespace(db=None, run_id=None)) is None


def test_report_prints_every_table_and_draws_the_runs(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_module("benchmarks.report", ["--db", url, "--png", str(tmp_path / "empty.png")]) == 1  # nothing recorded yet
    for i in range(2):
        target = MetricsTarget(url, f"run-{i}")
        record_quality(target, evaluate_result(30 + i))
        record_benchmark(target, "smoke", "audio_search", "cpu", "grpc", [LatencyPoint(1, 20.0, 40.0, 50.0 + i, 60.0)])
    mark_published(connect(url), "run-0", 2)
    png, tables = tmp_path / "report" / "runs.png", tmp_path / "report" / "tables.json"
    capsys.readouterr()
    assert run_module("benchmarks.report", ["--db", url, "--png", str(png), "--json", str(tables)]) == 0
    out = capsys.readouterr().out
    for name in ("quality_trend (2 rows)", "quality_by_condition", "latency_trend (2 rows)", "index_trend (0 rows)"):
        assert f"== {name}" in out
    delta = evaluate_result(31)["recall@1"] - evaluate_result(30)["recall@1"]
    assert f"{delta:+.4g}" in out and "+1" in out  # recall and p95 deltas, signed
    assert png.stat().st_size > 10_000 and tables.stat().st_size > 0
    assert run_module("benchmarks.report", ["--db", ""]) == 2
    assert run_module("benchmarks.report", ["--db", "not a url"]) == 2
    assert "cannot open the metrics database" in capsys.readouterr().out
