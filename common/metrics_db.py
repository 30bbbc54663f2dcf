"""Run metrics in SQL: one schema for every run's quality, speed and index numbers.

SQLite by default (a file next to the artifacts), any SQLAlchemy URL in production (PostgreSQL).
Writers are idempotent per run: a rerun of the same step replaces that step's rows instead of adding
more, so a restarted pipeline task never double-counts. Queries live in ``common/sql/*.sql`` as plain SQL
so an analyst can run them in any client; they use only what SQLite and PostgreSQL share.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text, create_engine, delete,
                        insert, select, text, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError

from common.metrics_target import MetricsTarget

SQL_DIR = Path(__file__).resolve().parent / "sql"
ALL_CONDITIONS = "all"  # the quality row that pools every condition (query_seconds NULL pools every length)
RUN_STATUSES = ("running", "evaluated", "gate_failed", "gate_passed", "published")

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("status", String(32), nullable=False),
    Column("mode", String(32)),
    Column("checkpoint", Text),
    Column("embedder_sha256", String(64)),
    Column("published_version", Integer),
    Column("published_at", DateTime(timezone=True)),
    Column("note", Text),
)

quality_metrics = Table(
    "quality_metrics", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("split", String(32), nullable=False),
    Column("protocol", String(32), nullable=False),
    Column("query_alignment", String(32), nullable=False),
    Column("condition", String(32), nullable=False),
    Column("query_seconds", Float),
    Column("queries", Integer, nullable=False),
    Column("recall_at_1", Float, nullable=False),
    Column("recall_at_10", Float),
    Column("recall_at_100", Float),
    Column("mrr", Float),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

benchmark_results = Table(
    "benchmark_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("source", String(32), nullable=False),  # perf_analyzer | smoke
    Column("model", String(64), nullable=False),
    Column("config", String(128), nullable=False),
    Column("protocol", String(16), nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("throughput_rps", Float),
    Column("p50_ms", Float),
    Column("p95_ms", Float),
    Column("p99_ms", Float),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

index_builds = Table(
    "index_builds", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("path", Text, nullable=False),
    Column("index_type", String(32), nullable=False),
    Column("dim", Integer, nullable=False),
    Column("n_vectors", Integer, nullable=False),
    Column("n_tracks", Integer, nullable=False),
    Column("embedder_sha256", String(64), nullable=False),
    Column("build_seconds", Float),
    Column("built_at", DateTime(timezone=True), nullable=False),
)


class MetricsDatabaseError(RuntimeError):
    """The metrics database URL cannot be parsed or opened."""


def connect(url: str) -> Engine:
    """An engine with the schema in place (created if missing); SQLite's folder is created too."""
    try:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        metadata.create_all(engine)
    except (ArgumentError, OperationalError, ImportError, OSError) as error:
        raise MetricsDatabaseError(f"cannot open the metrics database {url!r}: {error}") from error
    return engine


def _now() -> datetime:
    return datetime.now(timezone.utc)


def ensure_run(engine: Engine, run_id: str, **fields: Any) -> None:
    """Create the run if it is new; given fields update it either way."""
    unknown = set(fields) - {c.name for c in runs.columns}
    if unknown:
        raise ValueError(f"unknown run fields {sorted(unknown)}")
    if "status" in fields and fields["status"] not in RUN_STATUSES:
        raise ValueError(f"run status {fields['status']!r} is not one of {RUN_STATUSES}")
    with engine.begin() as connection:
        exists = connection.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
        if exists is None:
            connection.execute(insert(runs).values(run_id=run_id, started_at=_now(), status="running", **fields))
        elif fields:
            connection.execute(update(runs).where(runs.c.run_id == run_id).values(**fields))


def mark_published(engine: Engine, run_id: str, version: int) -> None:
    ensure_run(engine, run_id, status="published", published_version=version, published_at=_now())


def _metric_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {"queries": int(metrics["queries"]), "recall_at_1": float(metrics["recall@1"]),
            "recall_at_10": metrics.get("recall@10"), "recall_at_100": metrics.get("recall@100"), "mrr": metrics.get("mrr")}


def quality_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of one `training evaluate` result: pooled, per condition, per length, per condition and length."""
    rows = [{"condition": ALL_CONDITIONS, "query_seconds": None, **_metric_row(result)}]
    rows += [{"condition": c, "query_seconds": None, **_metric_row(m)} for c, m in result["by_condition"].items()]
    rows += [{"condition": ALL_CONDITIONS, "query_seconds": float(s), **_metric_row(m)} for s, m in result["by_length"].items()]
    rows += [{"condition": c, "query_seconds": float(s), **_metric_row(m)}
             for c, by_length in result["by_condition_length"].items() for s, m in by_length.items()]
    return rows


def record_quality(target: MetricsTarget, result: Mapping[str, Any]) -> int:
    engine = connect(target.url)
    ensure_run(engine, target.run_id, checkpoint=str(result.get("checkpoint")))
    scope = {"split": result["split"], "protocol": result["protocol"], "query_alignment": result["query_alignment"]}
    rows = [{"run_id": target.run_id, **scope, **row, "recorded_at": _now()} for row in quality_rows(result)]
    with engine.begin() as connection:
        connection.execute(delete(quality_metrics).where(
            quality_metrics.c.run_id == target.run_id, *(quality_metrics.c[k] == v for k, v in scope.items())))
        connection.execute(insert(quality_metrics), rows)
    with engine.begin() as connection:
        status = connection.execute(select(runs.c.status).where(runs.c.run_id == target.run_id)).scalar_one()
    if status == "running":
        ensure_run(engine, target.run_id, status="evaluated")
    return len(rows)


@dataclass(frozen=True)
class LatencyPoint:
    concurrency: int
    throughput_rps: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def record_benchmark(target: MetricsTarget, source: str, model: str, config: str, protocol: str, points: Iterable[LatencyPoint]) -> int:
    engine = connect(target.url)
    ensure_run(engine, target.run_id)
    rows = [{"run_id": target.run_id, "source": source, "model": model, "config": config, "protocol": protocol,
             "concurrency": p.concurrency, "throughput_rps": p.throughput_rps, "p50_ms": p.p50_ms, "p95_ms": p.p95_ms,
             "p99_ms": p.p99_ms, "recorded_at": _now()} for p in points]
    with engine.begin() as connection:
        connection.execute(delete(benchmark_results).where(
            benchmark_results.c.run_id == target.run_id, benchmark_results.c.source == source, benchmark_results.c.model == model,
            benchmark_results.c.config == config, benchmark_results.c.protocol == protocol))
        if rows:
            connection.execute(insert(benchmark_results), rows)
    return len(rows)


def record_index_build(target: MetricsTarget, path: str, manifest: Mapping[str, Any], build_seconds: float | None) -> None:
    engine = connect(target.url)
    ensure_run(engine, target.run_id, embedder_sha256=manifest["embedder_sha256"])
    row = {"run_id": target.run_id, "path": path, "index_type": manifest["index_type"], "dim": int(manifest["dim"]),
           "n_vectors": int(manifest["n_vectors"]), "n_tracks": int(manifest["n_tracks"]),
           "embedder_sha256": manifest["embedder_sha256"], "build_seconds": build_seconds, "built_at": _now()}
    with engine.begin() as connection:
        connection.execute(delete(index_builds).where(index_builds.c.run_id == target.run_id, index_builds.c.path == path))
        connection.execute(insert(index_builds).values(**row))


def sql_text(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no query {name!r} under {SQL_DIR}")
    return path.read_text(encoding="utf-8")


def run_query(engine: Engine, name: str, **params: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``common/sql/<name>.sql``."""
    with engine.connect() as connection:
        result = connection.execute(text(sql_text(name)), params)
        return list(result.keys()), [tuple(row) for row in result]
