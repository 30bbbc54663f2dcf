"""The CPU comparison suite (`python -m benchmarks perf --suite cpu`, `make bench`).

On one embedded tritonserver over a throw-away copy of the published repository with extra model
configurations (benchmarks/variants.py), measured with perf_analyzer on the realistic query mix:
  - token_embedder with vs without dynamic batching, and with 2 instances, at concurrency 1, 8, 32;
  - faiss_topk and the audio_search ensemble;
  - the ensemble vs the same models chained from the client (p50 at concurrency 1);
  - ONNX Runtime's own batch scaling of the embedder (why batching helps as much as it does);
then exact vs approximate FAISS indexes at 100k and 1M vectors (benchmarks/ann.py).
Writes benchmarks/results/<name>/ and copies its summary to benchmarks/results/latest/.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.ann import INDEX_KINDS, ann_summary, run_ann
from benchmarks.batching import ort_batch_scaling
from benchmarks.chain import compare_ensemble_chain
from benchmarks.machine import machine_info
from benchmarks.perf_analyzer import PerfPoint
from benchmarks.perf_levels import measure_levels, perf_settings, record_curves
from benchmarks.plots import plot_ann, plot_throughput_latency
from benchmarks.real_inputs import query_tensors
from benchmarks.results import default_name, publish_latest, results_dir, write_summary
from benchmarks.variants import Variant, lay_out_variants, with_instances, without_dynamic_batching
from benchmarks.workload import Workload, mix_spec
from serving.triton_runtime import EmbeddedTriton

VARIANTS = [
    Variant("token_embedder_nobatch", "token_embedder", without_dynamic_batching, "dynamic batching off"),
    Variant("token_embedder_x2", "token_embedder", with_instances(2), "2 instances, dynamic batching on"),
]
# (curve label, served model, whose input data, concurrency levels)
PERF_PLAN = [
    ("token_embedder batching x1", "token_embedder", "token_embedder", (1, 8, 32)),
    ("token_embedder no batching x1", "token_embedder_nobatch", "token_embedder", (1, 8, 32)),
    ("token_embedder batching x2", "token_embedder_x2", "token_embedder", (1, 8, 32)),
    ("faiss_topk", "faiss_topk", "faiss_topk", (1, 8)),
    ("audio_search ensemble", "audio_search", "audio_search", (1, 4, 8)),
]
SPEEDUP_LEVEL = 8


def _at(points: list[PerfPoint], level: int) -> PerfPoint | None:
    return next((point for point in points if point.concurrency == level), None)


def _ratio(numerator: PerfPoint | None, denominator: PerfPoint | None) -> float | None:
    return numerator.throughput / denominator.throughput if numerator and denominator else None


def _table(summary: dict[str, Any]) -> str:
    machine = summary["machine"]
    lines = [f"machine: {machine['cpu_model']}, {machine['usable_cores']} cores, load {machine['load_average_1m']} at start; "
             f"suite took {summary['suite_seconds'] / 60:.1f} min",
             f"{'configuration':<32}" + "".join(f"{'c=' + str(c):>20}" for c in (1, 4, 8, 32)) + "   (infer/s | p95 ms)"]
    for label, entry in summary["perf"].items():
        cells = []
        for level in (1, 4, 8, 32):
            point = _at(entry["points"], level)
            cells.append(f"{point.throughput:9.1f} |{point.p95_ms:7.1f}{'' if point.stable else '*'}" if point else "")
        lines.append(f"{label:<32}" + "".join(f"{cell:>20}" for cell in cells))
    if any(not point.stable for entry in summary["perf"].values() for point in entry["points"]):
        lines.append("* perf_analyzer's windows disagreed by more than 2x (busy shared CPU): 3 windows' numbers")
    speedup, instances, chain = summary["dynamic_batching_speedup"], summary["instances_2_vs_1_at_c8"], summary["chain"]
    lines.append(f"dynamic batching speedup (token_embedder throughput at c=8): {speedup:.2f}x" if speedup else "dynamic batching speedup: n/a")
    lines.append(f"2 instances vs 1 (batching, c=8): {instances:.2f}x" if instances else "2 instances vs 1: n/a")
    lines.append(f"ensemble / client chain p50 at c=1: {summary['ensemble_vs_chain_p50_ratio']:.2f} "
                 f"(ensemble {chain.ensemble_p50_ms:.1f} ms, chain {chain.chain_p50_ms:.1f} ms, same answers: {chain.answers_match})")
    if summary["embedder_overhead_ms_per_execution"] is not None:
        lines.append(f"token_embedder per-execution overhead outside ONNX Runtime: {summary['embedder_overhead_ms_per_execution']:.2f} ms")
    lines.append("ORT token_embedder alone, ms per window (threads, batch): " + ", ".join(
        f"{row['windows']} {row['intra_op_threads']}t b{row['batch']} {row['ms_per_item']:.2f}" for row in summary["ort_batch_scaling"]))
    lines.append(f"{'ANN index':<12}{'vectors':>10}{'build s':>9}{'MB':>8}{'queries/s':>11}{'recall@10':>11}")
    for row in summary["ann_rows"]:
        lines.append(f"{row['index']:<12}{row['n_vectors']:>10,}{row['build_s']:>9.1f}{row['memory_mb']:>8.0f}"
                     f"{row['queries_per_s']:>11.0f}{row['recall_at_10']:>11.3f}")
    return "\n".join(lines)


def run_cpu_suite(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out_dir = results_dir(args.name or default_name("cpu"))
    machine = machine_info()
    spec = mix_spec(args)
    with tempfile.TemporaryDirectory(prefix="bench-repository-") as scratch:
        repository = lay_out_variants(Path(scratch), VARIANTS, args.model_repository)
        embedder_onnx = repository / "token_embedder" / "1" / "model.onnx"
        workload = Workload(spec, embedder_onnx, args.top_k)
        print(f"serving {len(VARIANTS)} extra configurations from {repository}", flush=True)
        with EmbeddedTriton(repository, log_path=out_dir / "tritonserver.log") as server:
            settings = perf_settings(args, server.grpc_url if args.protocol == "grpc" else server.http_url)
            curves = {label: {"model": model, "points": measure_levels(model, workload.input_file(base), list(levels), settings, out_dir)}
                      for label, model, base, levels in PERF_PLAN}
            print("ensemble vs client-side chain ...", flush=True)
            chain = compare_ensemble_chain(server.grpc_url, [q.audio for q in workload.queries[: args.chain_queries]], args.top_k)
        codes = [c for item in query_tensors(spec, workload.queries, embedder_onnx) for c in item.codes]
        scaling = ort_batch_scaling(embedder_onnx, codes)
    print("ANN indexes ...", flush=True)
    ann_rows = run_ann([int(size) for size in args.ann_sizes.split(",")], INDEX_KINDS, queries=500, budget_s=4.0, threads=args.ann_threads)
    points = {label: entry["points"] for label, entry in curves.items()}
    unbatched = _at(points["token_embedder no batching x1"], 1)
    # The served session uses every core (INTRA_OP_THREADS 0): compare with ORT's 2-thread batch-1 time.
    ort_single = next(row["ms_per_item"] for row in scaling
                      if row["windows"] == "mixed" and row["batch"] == 1 and row["intra_op_threads"] == max(r["intra_op_threads"] for r in scaling))
    summary = {
        "machine": machine,
        "dynamic_batching_speedup": _ratio(_at(points["token_embedder batching x1"], SPEEDUP_LEVEL),
                                           _at(points["token_embedder no batching x1"], SPEEDUP_LEVEL)),
        "ensemble_vs_chain_p50_ratio": chain.ensemble_vs_chain_p50_ratio,
        "instances_2_vs_1_at_c8": _ratio(_at(points["token_embedder batching x2"], SPEEDUP_LEVEL),
                                         _at(points["token_embedder batching x1"], SPEEDUP_LEVEL)),
        "ann": ann_summary(ann_rows),
        "chain": chain,
        "ort_batch_scaling": scaling,
        # Server compute per unbatched request minus ONNX Runtime's own time: Triton + Python backend + onnx_cpu.
        "embedder_overhead_ms_per_execution": unbatched.server_compute_ms - ort_single if unbatched else None,
        "perf": curves,
        "ann_rows": ann_rows,
        "mix": spec,
        "measurement_interval_ms": settings.measurement_interval_ms,
        "suite_seconds": time.monotonic() - started,
    }
    plot_throughput_latency({k: v for k, v in points.items() if k.startswith("token_embedder")},
                            out_dir / "token_embedder_throughput_vs_p95.png", "token_embedder: batching and instances (CPU)")
    plot_throughput_latency({k: v for k, v in points.items() if not k.startswith("token_embedder")},
                            out_dir / "ensemble_faiss_throughput_vs_p95.png", "audio_search ensemble and faiss_topk (CPU)")
    plot_ann(ann_rows, out_dir / "ann.png")
    table = _table(summary)
    (out_dir / "table.txt").write_text(table + "\n", encoding="utf-8")
    write_summary(out_dir, summary)
    record_curves(args, curves)
    publish_latest(out_dir)
    print(table)
    print(f"results: {out_dir} (copied to benchmarks/results/latest)")
    return 0
