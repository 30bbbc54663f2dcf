"""`python -m pipelines step NAME --run-id ID`: run one step of the catalog refresh (what each DAG task does)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipelines.plan import MODES, STEPS, RunParams, safe_run_id
from pipelines.run_state import RunContext, StepFailed
from pipelines.settings import load_settings

CONFIG_ENV = "CLOUDTUNE_PIPELINE_CONFIG"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path(os.environ.get(CONFIG_ENV, "configs/pipeline.yaml")),
                        help=f"pipeline settings (default: ${CONFIG_ENV} or %(default)s)")
    parser.add_argument("--mode", choices=MODES, default="train", help="train a new embedder, or reuse a checkpoint (default: %(default)s)")
    parser.add_argument("--checkpoint", default="", help="reuse: this checkpoint (default: the last published run's)")
    parser.add_argument("--epochs", type=int, default=None, help="train: epochs instead of the settings' (default: the settings')")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--run-id", required=True, help="the run's id; its artifacts go under <work_root>/runs/<run id>/")
    add_run_arguments(parser)


def run_params(args: argparse.Namespace) -> RunParams:
    """The parameters of ``add_run_arguments``, refused with a clear message when they contradict each other."""
    try:
        return RunParams(args.mode, args.checkpoint, args.epochs)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error


def run_context(args: argparse.Namespace) -> RunContext:
    return RunContext(load_settings(args.config), safe_run_id(args.run_id), run_params(args))


def main(args: argparse.Namespace) -> int:
    from pipelines.steps import run_step

    try:
        run_step(run_context(args), args.step)
    except StepFailed as error:
        print(f"step {args.step} failed: {error}", flush=True)
        return 3
    return 0
