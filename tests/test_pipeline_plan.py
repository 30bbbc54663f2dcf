"""The pipeline's plan, parameters and settings without Airflow: what the DAG and the step CLI share."""
from __future__ import annotations

import pytest

from common.cli import run_module
from pipelines.plan import STEPS, RunParams, safe_run_id, step_command
from pipelines.settings import load_settings
from pipelines.steps import STEP_FUNCTIONS


def test_every_planned_step_has_an_implementation_in_order() -> None:
    assert tuple(STEP_FUNCTIONS) == STEPS
    assert STEPS.index("evaluate") < STEPS.index("gate") < STEPS.index("publish") < STEPS.index("smoke")


def test_airflow_run_ids_become_folder_names() -> None:
    assert safe_run_id("manual__2026-11-26T01:21:58.081570+00:00") == "manual__2026-11-26T01_21_58.081570_00_00"
    assert safe_run_id("../../etc") == "etc"
    with pytest.raises(ValueError, match="usable"):
        safe_run_id("///")


def test_run_params_refuse_contradictions() -> None:
    assert RunParams("reuse", "a.pt").argv() == ["--mode", "reuse", "--checkpoint", "a.pt"]
    assert RunParams("train", epochs=3).argv() == ["--mode", "train", "--epochs", "3"]
    for bad, match in ((dict(mode="retrain"), "mode"), (dict(mode="train", checkpoint="a.pt"), "reuse"), (dict(epochs=0), "epochs")):
        with pytest.raises(ValueError, match=match):
            RunParams(**bad)


def test_step_command_runs_the_project_cli() -> None:
    command = step_command("/venv/bin/python", "gate", "c.yaml", "manual__x:y", RunParams("reuse"))
    assert command == ["/venv/bin/python", "-m", "pipelines", "step", "gate", "--config", "c.yaml", "--run-id", "manual__x_y", "--mode", "reuse"]
    with pytest.raises(ValueError, match="unknown step"):
        step_command("python", "deploy", "c.yaml", "r", RunParams())


def test_shipped_settings_load_and_bad_keys_fail(tmp_path) -> None:
    settings = load_settings("configs/pipeline.yaml")
    assert settings.gate.max_recall_drop > 0 and settings.metrics_db.startswith("sqlite:///")
    (tmp_path / "bad.yaml").write_text("gate:\n  max_recal_drop: 0.1\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="max_recal_drop"):
        load_settings(tmp_path / "bad.yaml")
    with pytest.raises(SystemExit, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


def test_step_cli_refuses_bad_parameters() -> None:
    with pytest.raises(SystemExit, match="reuse"):
        run_module("pipelines.step", ["train", "--run-id", "r", "--mode", "train", "--checkpoint", "x.pt"])
