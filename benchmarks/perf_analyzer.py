"""Run Triton's perf_analyzer (from the tritonclient 2.50 wheel) for one model and concurrency, and read its CSV.

The binary links libb64 (Debian package libb64-0d, in setup/apt-packages.txt) and libcudart.so.12 even
without a GPU; the CUDA runtime comes from the nvidia-cuda-runtime-cu12 wheel, whose folder we put on
LD_LIBRARY_PATH.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common.system_libs import missing_libraries_error, shared_libraries


class PerfAnalyzerUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class PerfSettings:
    url: str
    protocol: str = "grpc"
    measurement_interval_ms: int = 5000
    # Shared, busy CPUs never give perf_analyzer's default 10 % agreement of 3 windows: accept up to
    # max/min = 2 and report what was measured rather than abort.
    stability_percentage: int = 100
    max_trials: int = 5

    def accepting_any(self) -> PerfSettings:
        """Settings under which any 3 windows count as stable: a number (flagged) instead of none."""
        return dataclasses.replace(self, stability_percentage=100_000, max_trials=3)


@dataclass(frozen=True)
class PerfPoint:
    """One concurrency level; latencies in ms (client side), server times are averages per request."""

    concurrency: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    server_queue_ms: float
    server_compute_input_ms: float
    server_compute_infer_ms: float
    server_compute_output_ms: float
    # Requests per model execution while measured (from the server's counters), when known.
    average_batch: float | None = None
    # False: the windows never agreed within the stability limit; these are 3 windows' numbers.
    stable: bool = True

    @property
    def server_compute_ms(self) -> float:
        return self.server_compute_input_ms + self.server_compute_infer_ms + self.server_compute_output_ms


def _cuda_runtime_lib() -> Path:
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise PerfAnalyzerUnavailable("libcudart.so.12 is missing: pip install nvidia-cuda-runtime-cu12 (the bench extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def perf_analyzer_binary() -> Path:
    found = Path(sys.prefix) / "bin" / "perf_analyzer"
    if found.is_file():
        return found
    which = shutil.which("perf_analyzer")
    if which is None:
        raise PerfAnalyzerUnavailable(
            "perf_analyzer not found: install tritonclient==2.50.0 from its manylinux1 wheel "
            "(pip install --only-binary=:all: 'tritonclient[all]==2.50.0'); newer wheels do not ship it")
    return Path(which)


def perf_library_environment() -> dict[str, str]:
    """The environment perf_analyzer starts in: the CUDA runtime wheel's folder on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(_cuda_runtime_lib()), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def perf_environment() -> dict[str, str]:
    """perf_analyzer's environment; raises naming the library and its Debian package when one does not resolve."""
    env = perf_library_environment()
    binary = perf_analyzer_binary()
    problem = missing_libraries_error("perf_analyzer", binary, shared_libraries(binary, env))
    if problem:
        raise PerfAnalyzerUnavailable(problem)
    return env


def perf_command(model: str, input_data: Path, concurrency: int, settings: PerfSettings, csv_path: Path) -> list[str]:
    return [
        str(perf_analyzer_binary()), "-m", model, "-u", settings.url, "-i", settings.protocol,
        "--input-data", str(input_data), "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(settings.measurement_interval_ms),
        "--stability-percentage", str(settings.stability_percentage), "--max-trials", str(settings.max_trials),
        "-f", str(csv_path), "--verbose-csv",
    ]


def run_perf_analyzer(model: str, input_data: Path, concurrency: int, settings: PerfSettings, out_dir: Path) -> PerfPoint | None:
    """Measure one level; None when perf_analyzer found no stable measurement (its log says why)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{model}-c{concurrency}.csv"
    log_path = csv_path.with_suffix(".log")
    csv_path.unlink(missing_ok=True)
    # Each trial is one window, plus a first one perf_analyzer discards; a hung server must not hang us.
    timeout_s = (settings.max_trials + 2) * settings.measurement_interval_ms / 1000 + 120
    with open(log_path, "wb") as log:
        completed = subprocess.run(perf_command(model, input_data, concurrency, settings, csv_path), stdout=log,
                                   stderr=subprocess.STDOUT, env=perf_environment(), timeout=timeout_s, check=False)
    points = parse_perf_csv(csv_path) if csv_path.is_file() else []
    if completed.returncode != 0 and not points:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        if not any("stable measurement" in line for line in tail):
            raise RuntimeError(f"perf_analyzer failed on {model} (exit {completed.returncode}):\n" + "\n".join(tail))
    return points[0] if points else None


def _ms(row: dict[str, str], column: str) -> float:
    return float(row[column]) / 1000.0


def parse_perf_csv(path: Path) -> list[PerfPoint]:
    """The rows of ``perf_analyzer -f FILE --verbose-csv`` (times in microseconds there)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        PerfPoint(
            concurrency=int(row["Concurrency"]), throughput=float(row["Inferences/Second"]),
            p50_ms=_ms(row, "p50 latency"), p90_ms=_ms(row, "p90 latency"), p95_ms=_ms(row, "p95 latency"),
            p99_ms=_ms(row, "p99 latency"), avg_ms=_ms(row, "Avg latency"),
            server_queue_ms=_ms(row, "Server Queue"), server_compute_input_ms=_ms(row, "Server Compute Input"),
            server_compute_infer_ms=_ms(row, "Server Compute Infer"), server_compute_output_ms=_ms(row, "Server Compute Output"),
        )
        for row in rows
        if row.get("Concurrency", "").strip().isdigit()
    ]
