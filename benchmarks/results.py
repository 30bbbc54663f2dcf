"""Where benchmark results go (benchmarks/results/<name>/) and how they are written."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path(__file__).resolve().parent / "results"
LATEST = "latest"


def results_root() -> Path:
    """benchmarks/results, or $BENCHMARK_RESULTS (tests write elsewhere)."""
    return Path(os.environ.get("BENCHMARK_RESULTS") or DEFAULT_ROOT)


def default_name(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def results_dir(name: str) -> Path:
    path = results_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {**{k: _jsonable(v) for k, v in dataclasses.asdict(value).items()},
                **{name: getattr(value, name) for name in _properties(type(value))}}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


def _properties(cls: type) -> list[str]:
    # Derived numbers (e.g. PerfPoint.server_compute_ms) belong in the JSON too.
    return [name for name, member in vars(cls).items() if isinstance(member, property)]


def write_summary(directory: Path, summary: dict[str, Any]) -> Path:
    path = directory / "summary.json"
    path.write_text(json.dumps(_jsonable(summary), indent=1), encoding="utf-8")
    return path


def publish_latest(directory: Path) -> Path:
    """Copy a run's summary and plots to results/latest/ (a plain folder: tools and humans read it alike)."""
    latest = results_root() / LATEST
    if directory.resolve() == latest.resolve():
        return latest
    shutil.rmtree(latest, ignore_errors=True)
    latest.mkdir(parents=True)
    for path in directory.iterdir():
        if path.is_file() and path.suffix in (".json", ".png", ".txt"):
            shutil.copy2(path, latest / path.name)
    return latest
