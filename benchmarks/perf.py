"""`python -m benchmarks perf`: perf_analyzer on one served model, or the whole CPU suite (`--suite cpu`).

Without --url an embedded tritonserver is started on --model-repository for the run. Results:
benchmarks/results/<name>/summary.json (per concurrency: infer/s, p50/p90/p95/p99 ms, server
queue and compute ms) and throughput_vs_p95.png.

Concurrency: "A:B" doubles from A to B (1:32 -> 1,2,4,8,16,32), "A:B:S" steps by S, "1,8,32" lists.
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from benchmarks.machine import machine_info
from benchmarks.perf_analyzer import PerfAnalyzerUnavailable, PerfSettings, perf_environment
from benchmarks.perf_inputs import MODELS
from benchmarks.perf_levels import SINGLE_WINDOW_MS, SUITE_WINDOW_MS, measure_levels, perf_settings, record_curves
from benchmarks.plots import plot_throughput_latency
from benchmarks.results import default_name, results_dir, write_summary
from benchmarks.variants import RepositoryNotPublished, published_artifacts
from benchmarks.workload import Workload, add_mix_arguments, mix_spec
from common.metrics_target import add_metrics_arguments, metrics_target
from common.paths import DEFAULT_REPOSITORY

def parse_concurrency(text: str) -> list[int]:
    if "," in text:
        levels = [int(part) for part in text.split(",")]
    elif ":" in text:
        parts = [int(part) for part in text.split(":")]
        if len(parts) == 2:
            levels, level = [], parts[0]
            while level <= parts[1]:
                levels.append(level)
                level *= 2
        elif len(parts) == 3:
            levels = list(range(parts[0], parts[1] + 1, parts[2]))
        else:
            raise argparse.ArgumentTypeError(f"expected A:B or A:B:S, got {text!r}")
    else:
        levels = [int(text)]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be >= 1, got {text!r}")
    return levels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", choices=["cpu"], help="run the comparison suite instead of one model (make bench)")
    parser.add_argument("--model", choices=MODELS, default="audio_search")
    parser.add_argument("--concurrency", type=parse_concurrency, default=[1, 2, 4, 8], help="default: 1:8")
    parser.add_argument("--url", help="a running server (host:port of --protocol); default: start one on --model-repository")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY,
                        help="published repository (served without --url; its embedder makes the input data) (default: %(default)s)")
    parser.add_argument("--name", help="results folder under benchmarks/results (default: <perf|cpu>-<time>)")
    parser.add_argument("--measurement-interval", type=int, default=None,
                        help=f"ms per measurement window (default: {SINGLE_WINDOW_MS}; {SUITE_WINDOW_MS} in the suite, to fit 20 min on 2 cores)")
    parser.add_argument("--stability-percentage", type=int, default=PerfSettings.stability_percentage)
    parser.add_argument("--max-trials", type=int, default=PerfSettings.max_trials)
    add_mix_arguments(parser)
    add_metrics_arguments(parser)
    suite = parser.add_argument_group("suite")
    suite.add_argument("--ann-sizes", default="100000,1000000", help="catalog sizes of the ANN comparison (default: %(default)s)")
    suite.add_argument("--chain-queries", type=int, default=24, help="queries of the ensemble-vs-chain comparison")
    suite.add_argument("--ann-threads", type=int, default=1, help="FAISS threads of the ANN comparison (see benchmarks/ann.py)")


@contextlib.contextmanager
def server_urls(args: argparse.Namespace, out_dir: Path) -> Iterator[dict[str, str]]:
    """{"grpc": ..., "http": ...} of --url's server, or of an embedded server started on --model-repository."""
    if args.url:
        yield {args.protocol: args.url}
        return
    from serving.triton_runtime import EmbeddedTriton

    published_artifacts(args.model_repository)
    with EmbeddedTriton(args.model_repository, log_path=out_dir / "tritonserver.log") as server:
        yield {"grpc": server.grpc_url, "http": server.http_url}


def run_single(args: argparse.Namespace) -> int:
    out_dir = results_dir(args.name or default_name("perf"))
    # Codes and embeddings (for the composing models) come from the published embedder.
    embedder_onnx = None if args.model == "audio_search" else published_artifacts(args.model_repository)["embedder_onnx"]
    workload = Workload(mix_spec(args), embedder_onnx, args.top_k)
    input_file = workload.input_file(args.model)
    with server_urls(args, out_dir) as urls:
        points = measure_levels(args.model, input_file, args.concurrency, perf_settings(args, urls[args.protocol]), out_dir)
    curves = {args.model: {"model": args.model, "points": points}}
    write_summary(out_dir, {"machine": machine_info(), "protocol": args.protocol, "mix": workload.spec, "input_data": str(input_file),
                            "configs": curves})
    record_curves(args, curves)
    plot_throughput_latency({args.model: points}, out_dir / "throughput_vs_p95.png", f"{args.model} ({args.protocol})")
    print(f"results: {out_dir}")
    return 0


def main(args: argparse.Namespace) -> int:
    metrics_target(args)  # a --db without --run-id fails before the measurements, not after
    try:
        perf_environment()
        if args.suite == "cpu":
            from benchmarks.suite import run_cpu_suite

            return run_cpu_suite(args)
        return run_single(args)
    except (PerfAnalyzerUnavailable, RepositoryNotPublished) as error:
        print(f"error: {error}")
        return 1
