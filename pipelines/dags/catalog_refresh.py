"""Airflow DAG `cloudtune_catalog_refresh`: new audio in, a new catalog version served by Triton out.

tokenize (incremental) -> splits -> train (or reuse a checkpoint) -> evaluate -> gate -> export ->
index -> publish (repository API, no downtime) -> smoke (queries through the served ensemble).

This file runs inside Airflow's own environment (its pins differ from the project's); each task runs
`python -m pipelines step <task> ...` in the project's environment, so Airflow never imports torch.
Airflow's run id is the pipeline's run id: artifacts go to <work_root>/runs/<run id>/, and a task
cleared and rerun finds its finished work there instead of redoing it.

Environment: CLOUDTUNE_PYTHON (the project's interpreter; default <repo>/.venv/bin/python),
CLOUDTUNE_PIPELINE_CONFIG (default <repo>/configs/pipeline.yaml), CLOUDTUNE_REFRESH_SCHEDULE (a cron
expression or preset; default: none, runs are triggered).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pendulum
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk import Param, chain, dag, get_current_context, task

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # pipelines.plan: standard library only
from pipelines.plan import MODES, STEPS, RunParams, step_command  # noqa: E402

PROJECT_PYTHON = os.environ.get("CLOUDTUNE_PYTHON", str(REPO_ROOT / ".venv" / "bin" / "python"))
DEFAULT_CONFIG = os.environ.get("CLOUDTUNE_PIPELINE_CONFIG", str(REPO_ROOT / "configs" / "pipeline.yaml"))
REFUSED = 3  # `python -m pipelines step` exit status when a step ran and refused (the gate): not worth a retry


def run_step(step: str) -> None:
    context = get_current_context()
    params = context["params"]
    command = step_command(PROJECT_PYTHON, step, params["config"], context["run_id"],
                           RunParams(params["mode"], params["checkpoint"] or "", params["epochs"]))
    print("$", " ".join(command), flush=True)
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
    if process.returncode == REFUSED:
        raise AirflowFailException(f"step {step} refused (see its log above)")
    if process.returncode != 0:
        raise RuntimeError(f"step {step} exited with {process.returncode}")


def step_task(step: str):
    @task(task_id=step)
    def run() -> None:
        run_step(step)

    return run()


@dag(
    dag_id="cloudtune_catalog_refresh",
    schedule=os.environ.get("CLOUDTUNE_REFRESH_SCHEDULE") or None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs share the token cache and publish to one server
    tags=["cloudtune"],
    params={
        "mode": Param("train", enum=list(MODES), description="train a new embedder, or reuse a checkpoint"),
        "checkpoint": Param("", type="string", description="reuse: this checkpoint (empty: the last published run's)"),
        "epochs": Param(None, type=["null", "integer"], minimum=1, description="train: epochs instead of the settings'"),
        "config": Param(DEFAULT_CONFIG, type="string", description="pipeline settings YAML"),
    },
)
def cloudtune_catalog_refresh() -> None:
    chain(*[step_task(step) for step in STEPS])


cloudtune_catalog_refresh()
