"""The committed model configs are exactly what configs/serving.yaml generates."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

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


def test_embedded_overrides_reach_only_the_embedded_configs() -> None:
    config = repo_configs.load_serving_config()
    encoder = config.model("moss_encoder")
    delays = {target: repo_configs.build_model_config(encoder, target, config).dynamic_batching.max_queue_delay_microseconds
              for target in ("production", "embedded", "gpu")}
    assert delays["embedded"] == encoder.embedded_queue_delay_microseconds == 2000
    assert delays["production"] == delays["gpu"] == encoder.dynamic_batching.max_queue_delay_microseconds > delays["embedded"]
    topk = config.model("faiss_topk")
    params = {target: repo_configs.build_model_config(topk, target, config).parameters for target in ("production", "embedded", "gpu")}
    assert params["embedded"]["SEARCH_THREADS"].string_value == "1"
    assert "SEARCH_THREADS" not in params["production"] and "SEARCH_THREADS" not in params["gpu"]


def test_an_embedded_queue_delay_without_batching_is_refused(tmp_path: Path) -> None:
    text = Path("configs/serving.yaml").read_text(encoding="utf-8")
    broken = text.replace("    embedded: {kind: KIND_CPU, count: 1}\n    gpu: {kind: KIND_CPU, count: 2}",
                          "    embedded: {kind: KIND_CPU, count: 1}\n    gpu: {kind: KIND_CPU, count: 2}\n    embedded_queue_delay_microseconds: 0", 1)
    assert broken != text
    (tmp_path / "serving.yaml").write_text(broken, encoding="utf-8")
    with pytest.raises(ValueError, match="audio_windows: embedded_queue_delay_microseconds without dynamic_batching"):
        repo_configs.load_serving_config(tmp_path / "serving.yaml")


def test_overrides_change_one_field_typed_like_it_and_reach_the_rendered_configs() -> None:
    config = repo_configs.load_serving_config()
    changed = repo_configs.with_override(config, "moss_encoder.gpu_queue_delay_microseconds=20000")
    changed = repo_configs.with_override(changed, "faiss_topk.gpu.count=1")
    changed = repo_configs.with_override(changed, "moss_encoder.dynamic_batching.preferred_batch_size=16,32")
    changed = repo_configs.with_override(changed, "moss_encoder.gpu_parameters.BATCH_BUCKETS=8,16,32")
    encoder = changed.model("moss_encoder")
    gpu = repo_configs.build_model_config(encoder, "gpu", changed)
    assert gpu.dynamic_batching.max_queue_delay_microseconds == 20000
    assert list(gpu.dynamic_batching.preferred_batch_size) == [16, 32]
    assert gpu.parameters["BATCH_BUCKETS"].string_value == "8,16,32" and gpu.parameters["PRECISION"].string_value == "fp16"
    # The gpu delay reaches only the gpu config; the committed config is untouched.
    assert repo_configs.build_model_config(encoder, "production", changed).dynamic_batching.max_queue_delay_microseconds == 5000
    assert config.model("moss_encoder").gpu_queue_delay_microseconds is None
    assert repo_configs.build_model_config(changed.model("faiss_topk"), "gpu", changed).instance_group[0].count == 1
    everywhere = repo_configs.with_override(config, "*.gpu.kind=KIND_CPU")
    assert {model.gpu.kind for model in everywhere.models} == {"KIND_CPU"}


@pytest.mark.parametrize("override, message", [
    ("moss_encoder.gpu.count", "expected MODEL.FIELD=VALUE"),
    ("nosuch.gpu.count=1", "no model 'nosuch'"),
    ("moss_encoder.gpu.cuont=1", "no such key 'cuont'; Instances has"),
    ("moss_encoder.gpu=1", "'gpu' is a section: name a key inside it"),
    ("moss_encoder.gpu.count=two", "count=two: expected a int"),
    ("moss_encoder.dynamic_batching.preferred_batch_size=8,x", "expected ints separated by commas"),
    ("moss_encoder.inputs=1", "'inputs' holds sections: not settable"),
    ("audio_windows.gpu_queue_delay_microseconds=100", "gpu_queue_delay_microseconds without dynamic_batching"),
])
def test_bad_overrides_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        repo_configs.with_override(repo_configs.load_serving_config(), override)


def test_window_embedder_is_an_ensemble_except_on_the_gpu_where_one_model_runs_both_steps() -> None:
    config = repo_configs.load_serving_config()
    assert [step.model for step in config.model("audio_search").steps] == ["audio_windows", "window_embedder", "faiss_topk"]
    files = repo_configs.render_repository(config)
    assert Path("window_embedder", "configs", "cpu.pbtxt") not in files  # the CPU server falls back to the ensemble
    production = text_format.Parse(files[Path("window_embedder", "config.pbtxt")], mc.ModelConfig())
    assert production.platform == "ensemble"
    assert [step.model_name for step in production.ensemble_scheduling.step] == ["moss_encoder", "token_embedder"]
    fused = text_format.Parse(files[Path("window_embedder", "configs", "gpu.pbtxt")], mc.ModelConfig())
    assert fused.backend == "torch_gpu" and fused.max_batch_size == config.model("moss_encoder").max_batch_size
    assert [t.name for t in fused.input] == ["WAVEFORM", "LENGTHS"] and [t.name for t in fused.output] == ["EMBEDDING"]
    assert fused.dynamic_batching.max_queue_delay_microseconds == config.model("window_embedder").gpu_queue_delay_microseconds
    # its instances are the ensemble's (the encoder's own gpu config keeps its own)
    assert [(group.kind, group.count) for group in fused.instance_group] == [
        (mc.ModelInstanceGroup.Kind.Value(config.model("window_embedder").gpu.kind), config.model("window_embedder").gpu.count)]
    three = repo_configs.render_repository(repo_configs.with_override(config, "window_embedder.gpu.count=3"))
    assert text_format.Parse(three[Path("window_embedder", "configs", "gpu.pbtxt")], mc.ModelConfig()).instance_group[0].count == 3
    assert three[Path("moss_encoder", "configs", "gpu.pbtxt")] == files[Path("moss_encoder", "configs", "gpu.pbtxt")]
    assert {key: fused.parameters[key].string_value for key in ("ENCODER_DIR", "EMBEDDER_DIR", "N_QUANTIZERS")} == {
        "ENCODER_DIR": "moss_encoder/1", "EMBEDDER_DIR": "token_embedder/1", "N_QUANTIZERS": "8"}
    two_steps = repo_configs.render_repository(repo_configs.with_override(config, "window_embedder.gpu_fused=false"))
    assert Path("window_embedder", "configs", "gpu.pbtxt") not in two_steps
    for override, message in (("audio_search.gpu_fused=true", "two described steps"),):
        with pytest.raises(ValueError, match=message):
            repo_configs.with_override(config, override)
