"""PNG charts of benchmark results (matplotlib, no display)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
from matplotlib.ticker import NullFormatter  # noqa: E402

from benchmarks.perf_analyzer import PerfPoint  # noqa: E402


def plot_throughput_latency(curves: dict[str, list[PerfPoint]], path: Path, title: str) -> Path:
    """Throughput vs p95 latency, one curve per configuration, points labelled with their concurrency."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, points in curves.items():
        points = sorted(points, key=lambda p: p.concurrency)
        if not points:
            continue
        axis.plot([p.p95_ms for p in points], [p.throughput for p in points], marker="o", label=label)
        for point in points:
            axis.annotate(f"c{point.concurrency}", (point.p95_ms, point.throughput), textcoords="offset points",
                          xytext=(4, 4), fontsize=7)
    axis.set_xlabel("p95 latency (ms)")
    axis.set_ylabel("throughput (infer/s)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_ann(rows: list[dict], path: Path) -> Path:
    """Recall@10 vs queries/s per index type, one panel per catalog size."""
    sizes = sorted({row["n_vectors"] for row in rows})
    figure, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for axis, size in zip(axes[0], sizes):
        for row in (r for r in rows if r["n_vectors"] == size):
            axis.scatter(row["queries_per_s"], row["recall_at_10"], s=40)
            axis.annotate(row["index"], (row["queries_per_s"], row["recall_at_10"]), textcoords="offset points",
                          xytext=(4, 4), fontsize=8)
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short log ranges
        axis.set_xlabel("queries/s (one query per search call)")
        axis.set_ylabel("recall@10 vs exact")
        axis.set_title(f"{size:,} vectors")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
