"""perf_analyzer over a list of concurrency levels, and recording the curves: what `python -m benchmarks perf`
measures for one model and the CPU suite (benchmarks/suite.py) for each of its configurations."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from benchmarks.perf_analyzer import PerfPoint, PerfSettings, run_perf_analyzer
from benchmarks.server_stats import model_counts
from common.metrics_target import metrics_target

SINGLE_WINDOW_MS = 5000
SUITE_WINDOW_MS = 3000


def measure_levels(model: str, input_file: Path, levels: list[int], settings: PerfSettings, out_dir: Path) -> list[PerfPoint]:
    points = []
    for level in levels:
        stable = True
        before = model_counts(settings.protocol, settings.url, model)
        point = run_perf_analyzer(model, input_file, level, settings, out_dir / "perf_analyzer")
        if point is None:
            stable, before = False, model_counts(settings.protocol, settings.url, model)
            point = run_perf_analyzer(model, input_file, level, settings.accepting_any(), out_dir / "perf_analyzer")
        if point is None:
            print(f"  {model} c={level}: no measurement (see {out_dir / 'perf_analyzer'})", flush=True)
            continue
        counts = model_counts(settings.protocol, settings.url, model)
        point = dataclasses.replace(point, average_batch=counts.average_batch_since(before), stable=stable)
        print(f"  {model:<26} c={level:<3} {point.throughput:8.1f} infer/s  p50 {point.p50_ms:7.1f}  p95 {point.p95_ms:7.1f} ms  "
              f"queue {point.server_queue_ms:6.1f}  compute {point.server_compute_ms:6.1f} ms  batch {point.average_batch or 0:4.1f}"
              + ("" if stable else "  (unstable: windows disagreed)"), flush=True)
        points.append(point)
    return points


def record_curves(args: argparse.Namespace, curves: dict[str, dict]) -> None:
    """Each configuration's points into the run-metrics database, when one is given."""
    target = metrics_target(args)
    if target is None:
        return
    from common.metrics_db import LatencyPoint, MetricsDatabaseError, record_benchmark

    for label, entry in curves.items():
        points = [LatencyPoint(p.concurrency, p.throughput, p.p50_ms, p.p95_ms, p.p99_ms) for p in entry["points"]]
        try:
            record_benchmark(target, "perf_analyzer", entry["model"], label, args.protocol, points)
        except MetricsDatabaseError as error:
            raise SystemExit(f"the results are in summary.json, but recording them failed: {error}") from error
    print(f"recorded {len(curves)} configurations for run {target.run_id}")


def perf_settings(args: argparse.Namespace, url: str) -> PerfSettings:
    window_ms = args.measurement_interval or (SUITE_WINDOW_MS if args.suite else SINGLE_WINDOW_MS)
    return PerfSettings(url=url, protocol=args.protocol, measurement_interval_ms=window_ms,
                        stability_percentage=args.stability_percentage, max_trials=args.max_trials)
