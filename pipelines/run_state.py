"""One run's folder and its step markers: what makes every task idempotent and restartable.

A step writes ``runs/<run_id>/steps/<step>.json`` (atomically) only after it succeeded; a rerun of the
task finds it and returns the recorded outputs without doing the work again. A step that died half way
left no marker and starts over (training resumes from its last.pt).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.plan import RunParams
from pipelines.settings import PipelineSettings


class StepFailed(RuntimeError):
    """The step ran and refused (e.g. the quality gate): the task fails with this message."""


@dataclass(frozen=True)
class RunContext:
    settings: PipelineSettings
    run_id: str
    params: RunParams

    @property
    def run_dir(self) -> Path:
        return self.settings.run_dir(self.run_id)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "best.pt"

    @property
    def embedder_onnx(self) -> Path:
        return self.run_dir / "onnx" / "token_embedder.onnx"

    @property
    def index_dir(self) -> Path:
        return self.run_dir / "index"

    @property
    def splits_dir(self) -> Path:
        return self.run_dir / "splits"

    def marker(self, step: str) -> Path:
        return self.run_dir / "steps" / f"{step}.json"

    def done(self, step: str) -> dict[str, Any] | None:
        path = self.marker(step)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def mark_done(self, step: str, outputs: dict[str, Any]) -> None:
        path = self.marker(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as handle:
            json.dump(outputs, handle, indent=1, default=str)
        os.replace(handle.name, path)
