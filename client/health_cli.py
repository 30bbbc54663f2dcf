"""`python -m client health`: server liveness/readiness and every model's state; exit 0 only when ready.

Readiness alone misses a model whose Python-backend stub died (Triton 2.51 keeps reporting it
ready, see benchmarks/stub_kill.py): `--probe` also runs one short search, so a container health
check with it fails until the model is reloaded.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from client.cli_common import EXIT_CODES, add_connection_arguments, client_options, run_reporting_errors
from common.audio import SAMPLE_RATE

PROBE_SECONDS = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--probe", action="store_true", help=f"also search {PROBE_SECONDS:g} s of silence end to end")
    parser.add_argument("--json", action="store_true", help="print the health report as JSON")


def main(args: argparse.Namespace) -> int:
    from client.sync_client import AudioSearchClient

    def health() -> int:
        with AudioSearchClient(**client_options(args)) as client:
            report = client.health()
            if args.probe:
                started = time.perf_counter()
                client.search(np.zeros(round(PROBE_SECONDS * SAMPLE_RATE), np.float32), top_k=1)
                report["probe_ms"] = round((time.perf_counter() - started) * 1000, 1)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(f"server   live={report['live']} ready={report['ready']}")
            print(f"searched {report['model']} ready={report['model_ready']}"
                  + (f", probe search {report['probe_ms']} ms" if "probe_ms" in report else ""))
            for name, model in sorted(report["models"].items()):
                states = ", ".join(f"v{v} {s}" for v, s in model["states"].items()) or "no versions"
                reason = f" ({model['reason']})" if model["reason"] else ""
                print(f"model    {name:<24} {states}{reason}")
        # A health check (compose, k8s) needs the server ready *and* the searched model ready.
        return 0 if report["ready"] and report["model_ready"] else EXIT_CODES["ModelNotReady"]

    return run_reporting_errors(health)
