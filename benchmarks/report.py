"""`python -m benchmarks report --db URL`: run-over-run trend tables from the run-metrics database.

Every table is one plain SQL file under common/sql/ (window functions give the deltas), so the same
numbers can be had from psql or sqlite3. The PNG shows recall@1 and end-to-end p95 latency per run.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from common.metrics_db import MetricsDatabaseError, connect, run_query
from common.metrics_target import DB_ENV

REPORT_QUERIES = ("quality_trend", "quality_by_condition", "latency_trend", "index_trend")
SUMMARY_QUERY = "run_summary"


def is_delta(column: str) -> bool:
    return "delta" in column or column.endswith("_added")


def format_cell(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.4g}" if signed else f"{value:.4g}"
    if isinstance(value, int) and signed:
        return f"{value:+d}"
    return str(value)


def format_table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    signed = [is_delta(c) for c in columns]
    cells = [columns, *[[format_cell(v, s) for v, s in zip(row, signed)] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [f"== {title} ({len(rows)} rows)", "  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in cells[1:]]
    return "\n".join(lines)


def plot_runs(rows: list[tuple[Any, ...]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [row[0] for row in rows]
    x = list(range(len(runs)))
    figure, (recall_axis, latency_axis) = plt.subplots(2, 1, figsize=(max(6, 1.2 * len(runs) + 3), 6), sharex=True)
    recall = [row[2] for row in rows]
    colors = ["tab:green" if row[1] == "published" else "tab:red" if row[1] == "gate_failed" else "tab:gray" for row in rows]
    recall_axis.bar(x, [r or 0 for r in recall], color=colors)
    for i, value in enumerate(recall):
        recall_axis.annotate("-" if value is None else f"{value:.3f}", (i, value or 0), ha="center", va="bottom", fontsize=8)
    recall_axis.set_ylabel("recall@1 (pooled)")
    recall_axis.set_ylim(0, 1.1)
    recall_axis.set_title("recall@1 per run (green: published, red: blocked by the gate)", fontsize=10)
    latency = [row[3] for row in rows]
    latency_axis.plot([i for i, v in zip(x, latency) if v is not None], [v for v in latency if v is not None], marker="o")
    latency_axis.set_ylabel("audio_search p95 (ms)")
    latency_axis.set_title("end-to-end p95 per run (worst of its measurements)", fontsize=10)
    # Airflow run ids share their prefix (manual__<date>): their ends tell them apart.
    latency_axis.set_xticks(x, [run if len(run) <= 24 else "…" + run[-23:] for run in runs], rotation=20, ha="right", fontsize=8)
    for axis in (recall_axis, latency_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=os.environ.get(DB_ENV), help=f"SQLAlchemy URL (default: ${DB_ENV})")
    parser.add_argument("--png", type=Path, default=Path("reports/run_metrics.png"), help="picture of recall and p95 per run (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write every table as JSON here")


def main(args: argparse.Namespace) -> int:
    if not args.db:
        print(f"error: give --db or set ${DB_ENV}")
        return 2
    try:
        engine = connect(args.db)
    except MetricsDatabaseError as error:
        print(f"error: {error}")
        return 2
    tables: dict[str, dict[str, Any]] = {}
    for name in REPORT_QUERIES:
        columns, rows = run_query(engine, name)
        tables[name] = {"columns": columns, "rows": rows}
        print(format_table(name, columns, rows), end="\n\n")
    _, summary = run_query(engine, SUMMARY_QUERY)
    if not summary:
        print("no runs recorded yet")
        return 1
    print(f"picture: {plot_runs(summary, args.png)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(tables, indent=1, default=str), encoding="utf-8")
    return 0
