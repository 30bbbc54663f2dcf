"""`python -m benchmarks kill-stub`: SIGKILL a Python-backend stub under load and record what Triton does.

Measured on Triton 2.51 (embedded CPU server): the stub is NOT restarted; every request reaching
that model fails with INTERNAL "Stub process '<instance>' is not healthy", while /v2/health/ready
and the model's ready endpoint keep answering 200 (readiness does not see it). A plain `load` of
the unchanged model is a no-op (200, still broken). Recovery: `unload` then `load` the model
(explicit model control; Triton unloads and reloads the dependent ensemble with it): a new stub
serves within ~2-3 s. The old instance never finishes unloading (its stub is a zombie), so the next
shutdown ends at --exit-timeout-secs; restart the server when convenient to clean up, or instead of
the reload. A health check that sees the outage must run an inference: `python -m client health --probe`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.query_mix import MixSpec, load_mix
from benchmarks.server_proc import pid_listening_on, python_stubs
from client.errors import SearchError
from client.sync_client import AudioSearchClient


@dataclass
class LoadLog:
    """(seconds since start, "ok" or the error) per finished request, filled by the load threads."""

    started: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, outcome: str, took_s: float) -> None:
        with self.lock:
            self.events.append((self.now(), outcome, took_s))

    def between(self, start: float, stop: float) -> Counter[str]:
        with self.lock:
            return Counter(outcome for at, outcome, _ in self.events if start <= at < stop)

    def slowest_failure_s(self, start: float) -> float:
        with self.lock:
            return max((took for at, outcome, took in self.events if at >= start and outcome != "ok"), default=0.0)


def _load(grpc_url: str, queries: list[np.ndarray], log: LoadLog, stop: threading.Event) -> None:
    with AudioSearchClient(grpc_url, retries=0, timeout_s=30) as client:
        number = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                client.search(queries[number % len(queries)], top_k=5)
                outcome = "ok"
            except SearchError as error:
                outcome = f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
            log.add(outcome, time.monotonic() - started)
            number += 1


def _status(http_url: str, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{http_url}{path}", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _repository_call(http_url: str, model: str, action: str) -> str:
    request = urllib.request.Request(f"http://{http_url}/v2/repository/models/{model}/{action}", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return str(response.status)
    except urllib.error.HTTPError as error:
        return f"{error.code}: {error.read().decode(errors='replace')[:200]}"


def reload_model(http_url: str, model: str) -> dict[str, str]:
    """Unload then load: a plain load of an unchanged model keeps the dead stub."""
    return {action: _repository_call(http_url, model, action) for action in ("unload", "load")}


def kill_stub_experiment(grpc_url: str, http_url: str, model: str, queries: list[np.ndarray], users: int = 2,
                         warm_s: float = 3.0, observe_s: float = 8.0, reload: bool = True) -> dict[str, Any]:
    server_pid = pid_listening_on(int(http_url.rsplit(":", 1)[1]))
    if server_pid is None:
        raise RuntimeError(f"no process of ours listens on {http_url}")
    victims = [stub for stub in python_stubs(server_pid) if stub.model == model]
    if not victims:
        raise RuntimeError(f"model {model!r} has no Python-backend stub under server pid {server_pid}")
    log, stop = LoadLog(), threading.Event()
    threads = [threading.Thread(target=_load, args=(grpc_url, queries, log, stop), daemon=True) for _ in range(users)]
    for thread in threads:
        thread.start()
    time.sleep(warm_s)
    killed_at = log.now()
    os.kill(victims[0].pid, signal.SIGKILL)
    timeline = []
    while log.now() < killed_at + observe_s:
        time.sleep(1.0)
        stubs = [stub.pid for stub in python_stubs(server_pid) if stub.model == model]
        timeline.append({"t_s": round(log.now() - killed_at, 1), "stub_pids": stubs,
                         "server_ready": _status(http_url, "/v2/health/ready"),
                         "model_ready": _status(http_url, f"/v2/models/{model}/ready")})
    report: dict[str, Any] = {
        "model": model, "killed_pid": victims[0].pid, "server_pid": server_pid,
        "before_kill": dict(log.between(0, killed_at)),
        "after_kill": dict(log.between(killed_at, log.now())),
        "slowest_failure_s": round(log.slowest_failure_s(killed_at), 2),
        "stub_restarted_by_triton": any(entry["stub_pids"] for entry in timeline),
        "timeline": timeline,
    }
    if reload:
        reload_started = log.now()
        report["reload_status"] = reload_model(http_url, model)
        while log.now() < reload_started + 30 and not log.between(reload_started, log.now() + 1).get("ok"):
            time.sleep(0.2)
        report["recovered_after_reload_s"] = round(log.now() - reload_started, 2)
        time.sleep(1.0)
        report["after_reload"] = dict(log.between(reload_started, log.now()))
        report["stub_pids_after_reload"] = [stub.pid for stub in python_stubs(server_pid) if stub.model == model]
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="faiss_topk", help="a Python-backend model (default: %(default)s)")
    parser.add_argument("--grpc-url", default="localhost:8001")
    parser.add_argument("--http-url", default="localhost:8000")
    parser.add_argument("--users", type=int, default=2, help="closed-loop clients (default: %(default)s)")
    parser.add_argument("--observe", type=float, default=8.0, help="seconds watched after the kill (default: %(default)s)")
    parser.add_argument("--no-reload", action="store_true", help="do not reload the model afterwards (needs explicit model control)")


def main(args: argparse.Namespace) -> int:
    queries = [query.audio for query in load_mix(MixSpec(queries=8))]
    report = kill_stub_experiment(args.grpc_url, args.http_url, args.model, queries, args.users,
                                  observe_s=args.observe, reload=not args.no_reload)
    print(json.dumps(report, indent=1))
    return 0
