"""`python -m benchmarks waterfall`: where one query's time goes, stage by stage, on a running server.

Queries go one at a time (concurrency 1: the latency one user meets) to `audio_search`; Triton's statistics of
every model, read before and after, give each ensemble step's queue wait and its compute (input, infer, output)
per request, in the ensemble's own step order, beside the client's total (what is left is the client, the
protocol and the ensemble's hops between steps). Queries: excerpts of `--seconds` at random sample offsets of the WAVs under
`--audio-root` (real music where the corpus is installed), else of the generated query mix. Writes
summary.json, table.md and waterfall.png under benchmarks/results/<name>/.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.query_mix import MixSpec, load_mix
from benchmarks.results import default_name, results_dir, write_summary
from client.errors import SearchError
from client.sync_client import AudioSearchClient
from common.audio import SAMPLE_RATE, load_audio

ENSEMBLE = "audio_search"
PARTS = ("queue", "compute_input", "compute_infer", "compute_output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="localhost:8001", help="the server's gRPC address (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="query length (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=60, help="queries sent, one at a time (default: %(default)s)")
    parser.add_argument("--audio-root", type=Path, default=None, help="WAVs to cut the queries from (default: the generated query mix)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="results folder under benchmarks/results (default: waterfall-<time>)")


def excerpts(audio_root: Path | None, seconds: float, count: int, seed: int) -> list[np.ndarray]:
    """``count`` excerpts of ``seconds`` at random sample offsets: of the WAVs under ``audio_root``, else of the query mix."""
    samples = int(round(seconds * SAMPLE_RATE))
    if audio_root is not None:
        paths = sorted(audio_root.glob("*.wav"))
        if not paths:
            raise SystemExit(f"--audio-root {audio_root}: no .wav files")
        tracks = [load_audio(path) for path in paths[:count]]
    else:
        tracks = [query.audio for query in load_mix(MixSpec(queries=max(count, 24)))]
    tracks = [track for track in tracks if track.size >= samples]
    if not tracks:
        raise SystemExit(f"no track or mix query is {seconds:g} s long")
    rng = np.random.default_rng(seed)
    picks = [tracks[i % len(tracks)] for i in range(count)]
    starts = [int(rng.integers(0, track.size - samples + 1)) for track in picks]
    return [track[start : start + samples] for track, start in zip(picks, starts)]


def statistics(triton: Any) -> dict[str, dict[str, int]]:
    """Per model: request count, summed nanoseconds in the server ("total") and of each of ``PARTS``."""
    stats = triton.get_inference_statistics(as_json=True)["model_stats"]
    return {entry["name"]: {"count": int(entry["inference_stats"].get("success", {}).get("count", 0)),
                            "total": int(entry["inference_stats"].get("success", {}).get("ns", 0)),
                            **{part: int(entry["inference_stats"].get(part, {}).get("ns", 0)) for part in PARTS}}
            for entry in stats}


def settled_statistics(triton: Any, before: dict[str, dict[str, int]], steps: list[str], requests: int,
                       timeout_s: float = 2.0) -> dict[str, dict[str, int]]:
    """Statistics once every step has counted its requests: a step records one after releasing it, which can
    come a moment after the client has its answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = statistics(triton)
        if all(after[model]["count"] - before[model]["count"] >= requests for model in steps) or time.monotonic() > deadline:
            return after
        time.sleep(0.02)


def ensemble_steps(triton: Any, name: str = ENSEMBLE) -> list[str]:
    """The models that compute, in order: a step that is itself an ensemble (window_embedder on the CPU) gives its
    steps, since an ensemble's statistics restate theirs."""
    config = triton.get_model_config(name, as_json=True)["config"]
    if config.get("platform") != "ensemble":
        return [name]
    return [model for step in config["ensemble_scheduling"]["step"] for model in ensemble_steps(triton, step["model_name"])]


def per_request(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], model: str, requests: int) -> dict[str, float]:
    """Milliseconds per query in the model ("total") and in each of ``PARTS``."""
    count = after[model]["count"] - before[model]["count"]
    if count != requests:
        raise SystemExit(f"{model} served {count} requests while {requests} queries were sent: is another client using this server?")
    return {part: (after[model][part] - before[model][part]) / requests / 1e6 for part in ("total", *PARTS)}


def waterfall(url: str, queries: list[np.ndarray]) -> dict[str, Any]:
    """Send ``queries`` one at a time to the server at ``url`` (gRPC) and split their mean latency by stage."""
    import tritonclient.grpc as grpc

    triton = grpc.InferenceServerClient(url)
    with AudioSearchClient(url, retries=0) as client:
        return _measure(triton, client, queries)


def _measure(triton: Any, client: AudioSearchClient, queries: list[np.ndarray]) -> dict[str, Any]:
    for query in queries[:3]:  # warm-up: first executions allocate
        client.search(query)
    steps = ensemble_steps(triton)
    before = statistics(triton)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        client.search(query)
        latencies.append((time.perf_counter() - started) * 1e3)
    after = settled_statistics(triton, before, steps, len(queries))
    stages = {model: per_request(before, after, model, len(queries)) for model in steps}
    total = float(np.mean(latencies))
    # Queue and compute only: a model's own "total" runs on until its request is released, past the next
    # step's start, and the ensemble's total leaves parts of its steps out, so neither adds up.
    in_steps = sum(sum(parts[part] for part in PARTS) for parts in stages.values())
    return {"queries": len(queries), "steps": steps,
            "client_ms": {"mean": total, "p50": float(np.percentile(latencies, 50)), "p90": float(np.percentile(latencies, 90))},
            "stages_ms": stages, "outside_steps_ms": total - in_steps}


def markdown(report: dict[str, Any]) -> str:
    lines = ["| stage | queue ms | compute ms (input + infer + output) | total ms |", "|---|---:|---:|---:|"]
    for model, parts in report["stages_ms"].items():
        compute = parts["compute_input"] + parts["compute_infer"] + parts["compute_output"]
        lines.append(f"| {model} | {parts['queue']:.1f} | {compute:.1f} ({parts['compute_input']:.1f} + {parts['compute_infer']:.1f} + "
                     f"{parts['compute_output']:.1f}) | {parts['queue'] + compute:.1f} |")
    lines.append(f"| outside the steps: client, protocol, the ensemble's hops | | | {report['outside_steps_ms']:.1f} |")
    client = report["client_ms"]
    lines.append(f"| **client total** (mean; p50 {client['p50']:.1f}, p90 {client['p90']:.1f}) | | | **{client['mean']:.1f}** |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [*report["stages_ms"], "client, protocol, hops"]
    queue = [parts["queue"] for parts in report["stages_ms"].values()] + [0.0]
    compute = [sum(parts[p] for p in PARTS[1:]) for parts in report["stages_ms"].values()] + [report["outside_steps_ms"]]
    starts = np.concatenate([[0.0], np.cumsum(np.add(queue, compute))[:-1]])
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.5))
    ax.barh(labels, queue, left=starts, color="tab:orange", label="queue")
    ax.barh(labels, compute, left=starts + np.array(queue), color="tab:blue", label="compute")
    ax.invert_yaxis()
    ax.set_xlabel("ms per query (mean)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    if args.queries < 1 or args.seconds <= 0:
        raise SystemExit("--queries must be >= 1 and --seconds > 0")
    queries = excerpts(args.audio_root, args.seconds, args.queries, args.seed)
    from tritonclient.utils import InferenceServerException

    try:
        report = waterfall(args.url, queries)
    except (SearchError, InferenceServerException) as error:
        raise SystemExit(f"waterfall: the server at {args.url} did not answer: {error}") from None
    report.update({"url": args.url, "seconds": args.seconds, "audio_root": str(args.audio_root) if args.audio_root else "query mix"})
    out = results_dir(args.name or default_name("waterfall"))
    write_summary(out, report)
    (out / "table.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out / "waterfall.png", f"{args.seconds:g}-s queries, one at a time ({report['queries']} queries)")
    print(markdown(report))
    print(json.dumps({"results": str(out)}))
    return 0
