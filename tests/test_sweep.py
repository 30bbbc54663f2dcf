"""`python -m training sweep` on a small generated set: one run per change, compared on val recall@1, resumable."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.cli import run_module
from common.yaml_config import load_yaml, save_yaml
from training.sweep import parse_vary, variants, with_override
from training.train import TrainConfig


def small_base(path: Path) -> Path:
    cfg = load_yaml(TrainConfig, "configs/train.yaml")
    cfg.model.d_model, cfg.model.embedding_dim, cfg.views.per_track, cfg.optim.batch_size = 32, 16, 2, 4
    save_yaml(cfg, path)
    return path


def test_sweep_trains_the_base_and_each_change_and_reads_finished_runs_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "sweep.json"
    argv = ["--corpus", str(tmp_path / "no-corpus"), "--moss-config", "tiny", "--tracks", "10", "--seconds", "6", "--work-dir", str(tmp_path / "work"),
            "--report", str(report), "--epochs", "1", "--device", "cpu", "--train-config", str(small_base(tmp_path / "base.yaml")),
            "--vary", "model.d_model=16", "--vary", "views.per_track=3"]
    assert run_module("training.sweep", argv) == 0
    result = json.loads(report.read_text())
    runs = {row["run"]: row for row in result["runs"]}
    assert list(runs) == ["base", "model.d_model=16", "views.per_track=3"]
    assert runs["model.d_model=16"]["parameters"] < runs["base"]["parameters"]
    assert [runs[name]["own_val_views"] for name in runs] == [False, False, True]
    assert all(row["epochs"] == 1 and 0.0 <= row["best_val_recall@1"] <= 1.0 for row in runs.values())
    assert report.with_suffix(".png").stat().st_size > 0
    # The variant trained with its change: its saved config says so, the base's does not.
    work = next((tmp_path / "work").glob("*/sweep"))
    assert load_yaml(TrainConfig, work / "model.d_model=16" / "checkpoints" / "train.yaml").model.d_model == 16
    # The width changes nothing the val views depend on, so base and width share one set; views.per_track has its own.
    views_of = {name: load_yaml(TrainConfig, work / name / "checkpoints" / "train.yaml").data.views_root for name in runs}
    assert views_of["base"] == views_of["model.d_model=16"] != views_of["views.per_track=3"]
    assert sorted(p.name for p in (work / "views").iterdir()) == sorted({Path(v).name for v in views_of.values()})
    capsys.readouterr()
    assert run_module("training.sweep", argv) == 0
    assert "== train" not in capsys.readouterr().out  # finished runs are read back, not retrained
    assert json.loads(report.read_text())["runs"] == result["runs"]


def test_bad_variations_are_one_line_errors_before_any_training() -> None:
    base = TrainConfig()
    assert parse_vary(["model.n_levels=4, 16"]) == [("model.n_levels", ["4", "16"])]
    assert with_override(base, "optim.lr", "5e-4").optim.lr == pytest.approx(5e-4)
    assert with_override(base, "model.pooling", "mean").model.pooling == "mean"
    assert with_override(base, "online.enabled", "true").online.enabled is True
    assert set(variants(base, [("model.d_model", ["64", "128"])])) == {"base", "model.d_model=64", "model.d_model=128"}
    for item, message in (("model.n_levels", "expected KEY=V1,V2"), ("model.widht=3", "no such key"), ("modle.width=3", "not a section"),
                          ("seed=3", "set by the data chain"), ("optim.epochs=3", "set by the data chain"), ("model.n_levels=four", "expected a int"),
                          ("online.enabled=maybe", "expected a bool")):
        with pytest.raises(SystemExit, match=message):
            [with_override(base, key, value) for key, values in parse_vary([item]) for value in values]
