"""`python -m pipelines dag-test`: one run of the catalog-refresh DAG through `airflow dags test`.

Airflow lives in its own environment (`make airflow-setup`: .venv-airflow, pinned by
pipelines/requirements-airflow.txt) with a SQLite metadata database under --airflow-home; the DAG's
tasks call back into this environment's interpreter.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.plan import RunParams, safe_run_id
from pipelines.step import add_run_arguments, run_params

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO_ROOT / "pipelines" / "dags"
DAG_ID = "cloudtune_catalog_refresh"
DEFAULT_AIRFLOW = REPO_ROOT / ".venv-airflow" / "bin" / "airflow"
# Airflow's own structured log lines; everything else in the stream is the tasks' output.
AIRFLOW_LOG_LINE = re.compile(r"^\S+Z \[(debug|info)\s*\]")
FINISHED = re.compile(r"DagRun Finished: .*?run_id=([^,\s]+),.*?state=(\w+)")


@dataclass(frozen=True)
class DagRunResult:
    returncode: int
    run_id: str | None  # the pipeline's (folder-safe) run id
    state: str | None
    log: Path


def airflow_environment(airflow_home: Path, config: Path) -> dict[str, str]:
    return {**os.environ, "AIRFLOW_HOME": str(airflow_home.resolve()), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "CLOUDTUNE_PYTHON": sys.executable,
            "CLOUDTUNE_PIPELINE_CONFIG": str(config.resolve())}


def ensure_metadata_db(airflow: Path, env: dict[str, str]) -> None:
    home = Path(env["AIRFLOW_HOME"])
    stamp = home / ".db-migrated"
    if stamp.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    stamp.touch()


def dag_test(airflow: Path, airflow_home: Path, config: Path, params: RunParams, log: Path) -> DagRunResult:
    if not airflow.is_file():
        raise SystemExit(f"no Airflow at {airflow}: run `make airflow-setup` (or give --airflow)")
    env = airflow_environment(airflow_home, config)
    ensure_metadata_db(airflow, env)
    conf = {"mode": params.mode, "checkpoint": params.checkpoint, "epochs": params.epochs, "config": str(config.resolve())}
    command = [str(airflow), "dags", "test", DAG_ID, "--conf", json.dumps(conf)]
    print("$", " ".join(command), flush=True)
    run_id = state = None
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as sink, subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                                                  stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            sink.write(line)
            finished = FINISHED.search(line)
            if finished:
                run_id, state = safe_run_id(finished.group(1)), finished.group(2)
            if not AIRFLOW_LOG_LINE.match(line):
                print(line, end="", flush=True)
    return DagRunResult(process.returncode, run_id, state, log)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--airflow", type=Path, default=DEFAULT_AIRFLOW, help="the airflow executable (default: %(default)s)")
    parser.add_argument("--airflow-home", type=Path, default=None, help="Airflow's home with its SQLite database (default: <work_root>/airflow)")
    parser.add_argument("--log", type=Path, default=None, help="Airflow's full output (default: <airflow home>/dags-test.log)")
    add_run_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from pipelines.settings import load_settings

    params = run_params(args)
    home = args.airflow_home or Path(load_settings(args.config).work_root) / "airflow"
    result = dag_test(args.airflow, home, args.config, params, args.log or home / "dags-test.log")
    print(json.dumps({"dag_id": DAG_ID, "run_id": result.run_id, "state": result.state, "returncode": result.returncode, "log": str(result.log)}))
    return 0 if result.state == "success" and result.returncode == 0 else 1
