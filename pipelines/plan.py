"""The catalog-refresh tasks in order and how each is invoked, shared by the Airflow DAG and `python -m pipelines`.

Standard library only: the DAG imports this inside Airflow's own environment, which does not have the
project's dependencies (torch, onnx, faiss); every task runs in the project's environment through its CLI.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

STEPS: tuple[str, ...] = ("tokenize", "splits", "train", "evaluate", "gate", "export", "index", "publish", "smoke")
MODES = ("train", "reuse")


@dataclass(frozen=True)
class RunParams:
    """What a DAG run may change: train a new embedder or reuse a checkpoint (default: the last published one)."""

    mode: str = "train"
    checkpoint: str = ""
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "train" and self.checkpoint:
            raise ValueError("a checkpoint is reused, not trained: give mode 'reuse' with it")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")

    def argv(self) -> list[str]:
        args = ["--mode", self.mode]
        if self.checkpoint:
            args += ["--checkpoint", self.checkpoint]
        if self.epochs is not None:
            args += ["--epochs", str(self.epochs)]
        return args


def safe_run_id(run_id: str) -> str:
    """A run id usable as a folder name (Airflow's look like manual__2026-11-26T01:21:58.081570+00:00)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    if not cleaned:
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return cleaned[:200]


def step_command(python: str, step: str, config: str, run_id: str, params: RunParams) -> list[str]:
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; the steps are {STEPS}")
    return [python, "-m", "pipelines", "step", step, "--config", config, "--run-id", safe_run_id(run_id), *params.argv()]
