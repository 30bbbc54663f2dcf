"""The committed model configs are exactly what configs/serving.yaml generates."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from export import repo_configs


def run(repository: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    repo_configs.add_arguments(parser)
    return repo_configs.main(parser.parse_args(["--model-repository", str(repository), *extra]))


def test_committed_configs_match_the_generator(capsys) -> None:
    assert run(repo_configs.DEFAULT_REPOSITORY, "--check") == 0, capsys.readouterr().out


def test_check_lists_edited_missing_and_stale_configs(tmp_path: Path, capsys) -> None:
    repository = tmp_path / "model_repository"
    assert run(repository) == 0
    edited = repository / "moss_encoder" / "config.pbtxt"
    edited.write_text(edited.read_text().replace("max_batch_size: 32", "max_batch_size: 8"))
    (repository / "faiss_topk" / "configs" / "cpu.pbtxt").unlink()
    shutil.copytree(repository / "audio_windows", repository / "old_model")
    capsys.readouterr()
    assert run(repository, "--check") == 1
    out = capsys.readouterr().out
    assert "differs: moss_encoder/config.pbtxt" in out and "+max_batch_size: 32" in out
    assert "missing: faiss_topk/configs/cpu.pbtxt" in out
    assert "not generated (stale?): old_model/config.pbtxt" in out


def test_production_runtime_is_selectable() -> None:
    config = repo_configs.load_serving_config()
    encoder = config.model("moss_encoder")
    plan = repo_configs.build_model_config(encoder, "production", config)
    assert (plan.platform, plan.default_model_filename) == ("tensorrt_plan", "model.plan")
    onnx_config = repo_configs.dataclasses.replace(config, production=repo_configs.Production(runtime="onnx-trt"))
    onnx = repo_configs.build_model_config(encoder, "production", onnx_config)
    accelerator = onnx.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert onnx.platform == "onnxruntime_onnx" and accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    embedded = repo_configs.build_model_config(encoder, "embedded", config)
    assert embedded.backend == "onnx_cpu" and "EXECUTION_ENV_PATH" in embedded.parameters
    assert not any(tensor.allow_ragged_batch for tensor in plan.input)
