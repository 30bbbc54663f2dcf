"""A short headless locust run (HTTP binary + JSON and gRPC users) against the real server."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from benchmarks.query_mix import MixSpec, load_mix
from serving.triton_runtime import EmbeddedTriton

LOCUSTFILE = Path(__file__).resolve().parents[1] / "benchmarks" / "locustfile.py"
MIX = MixSpec(queries=4, catalog_tracks=2, catalog_seconds=31.0)


def test_headless_locust_run_has_no_failures(triton_server: EmbeddedTriton, tmp_path: Path) -> None:
    # Locust's run time starts before its init hook builds the mix: render (and cache) it here first.
    load_mix(MIX)
    command = [
        str(Path(sys.executable).with_name("locust")), "-f", str(LOCUSTFILE), "--headless", "-u", "3", "-r", "3", "-t", "6s",
        "--host", f"http://{triton_server.http_url}", "--grpc-host", triton_server.grpc_url,
        "--mix-queries", str(MIX.queries), "--catalog-tracks", str(MIX.catalog_tracks), "--catalog-seconds", str(MIX.catalog_seconds),
        "--csv", str(tmp_path / "run"), "--html", str(tmp_path / "report.html"), "--only-summary",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    with open(tmp_path / "run_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0
    assert {name.split()[1] for name in rows if name != "Aggregated"} >= {"grpc", "http-binary"}
    assert (tmp_path / "report.html").stat().st_size > 0
