"""`python -m benchmarks soak --minutes 10 --rate R`: steady open-loop load on a running server.

Requests start on a fixed schedule (R per second) whatever the answers do, and latency counts from
the scheduled start, so a slow server shows up as latency instead of hiding in a slower client.
Reports failures by kind, latency percentiles and the resident memory of tritonserver and of each
Python-backend stub at the start and end (read from /proc: the server is found by its port). The
first minutes grow memory on any server (ONNX Runtime arenas, shared-memory pools): a leak shows as
growth after the warm-up fifth of the run, which is reported separately.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks.query_mix import MixSpec, load_mix
from benchmarks.results import default_name, results_dir, write_summary
from benchmarks.server_proc import memory_snapshot, pid_listening_on
from client.errors import SearchError
from client.sync_client import AudioSearchClient
from client.transport import PROTOCOLS, default_url


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.failures: Counter[str] = Counter()

    def record(self, scheduled: float, error: SearchError | None) -> None:
        took_ms = (time.monotonic() - scheduled) * 1000
        with self.lock:
            if error is None:
                self.latencies_ms.append(took_ms)
            else:
                self.failures[f"{type(error).__name__}: {' '.join(str(error).split())[:120]}"] += 1


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(max(values))}


def soak(client: AudioSearchClient, queries: list[np.ndarray], seconds: float, rate: float, server_pid: int | None,
         max_in_flight: int = 16, sample_every_s: float = 5.0) -> dict[str, Any]:
    tally = _Tally()
    memory: list[dict[str, Any]] = []

    def one(number: int, scheduled: float) -> None:
        try:
            client.search(queries[number % len(queries)], top_k=10)
            tally.record(scheduled, None)
        except SearchError as error:
            tally.record(scheduled, error)

    def sample(at: float) -> None:
        if server_pid is not None:
            memory.append({"t_s": round(at, 1), **memory_snapshot(server_pid)})

    start = time.monotonic()
    sample(0.0)
    next_sample = sample_every_s
    total = int(seconds * rate)
    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        for number in range(total):
            scheduled = start + number / rate
            time.sleep(max(0.0, scheduled - time.monotonic()))
            pool.submit(one, number, scheduled)
            if time.monotonic() - start >= next_sample:
                sample(time.monotonic() - start)
                next_sample += sample_every_s
    sample(time.monotonic() - start)
    warmed = next((m for m in memory if m["t_s"] >= seconds / 5), memory[-1]) if memory else None
    return {
        "requests": total,
        "ok": len(tally.latencies_ms),
        "failed": sum(tally.failures.values()),
        "failures": dict(tally.failures),
        "seconds": time.monotonic() - start,
        "rate_per_s": rate,
        "latency": _percentiles(tally.latencies_ms),
        "memory_start": memory[0] if memory else None,
        "memory_end": memory[-1] if memory else None,
        "memory_after_warmup": warmed,
        "growth_after_warmup_bytes": memory[-1]["total"] - warmed["total"] if warmed else None,
        "memory_samples": memory,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5.0, help="requests started per second (default: %(default)s)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    parser.add_argument("--url", help="default: localhost:8001 (grpc) / localhost:8000 (http)")
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--queries", type=int, default=16, help="excerpts of the query mix (default: %(default)s)")
    parser.add_argument("--name", help="results folder under benchmarks/results (default: soak-<time>)")


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def main(args: argparse.Namespace) -> int:
    url = args.url or default_url(args.protocol)
    server_pid = pid_listening_on(int(url.rsplit(":", 1)[1]))
    if server_pid is None:
        print(f"warning: no local process listens on {url}: memory is not reported")
    queries = [query.audio for query in load_mix(MixSpec(queries=args.queries))]
    with AudioSearchClient(url, protocol=args.protocol, retries=0) as client:
        report = soak(client, queries, args.minutes * 60, args.rate, server_pid, args.max_in_flight)
    out_dir = results_dir(args.name or default_name("soak"))
    write_summary(out_dir, {"soak": report, "url": url, "protocol": args.protocol, "server_pid": server_pid})
    print(json.dumps({key: report[key] for key in ("requests", "ok", "failed", "failures", "latency")}, indent=1))
    start, warmed, end = report["memory_start"], report["memory_after_warmup"], report["memory_end"]
    if start and end:
        print(f"rss (MiB){'':<28}{'start':>9} {'warm':>9} {'end':>9}")
        for key in start:
            if key != "t_s":
                print(f"rss {key:<32} {_mib(start[key]):>9} {_mib(warmed.get(key, 0)):>9} {_mib(end.get(key, 0)):>9}")
    print(f"results: {out_dir}")
    return 0 if report["failed"] == 0 else 1
