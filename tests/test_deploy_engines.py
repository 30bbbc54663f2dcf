"""TensorRT engine building: deploy/engine_profiles.txt against configs/serving.yaml, and deploy/build_engines.sh
run with stand-ins for trtexec and nvidia-smi (the real ones need a GPU node: README.md, "Deploy on a GPU node")."""
from __future__ import annotations

import math
import shlex
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, run_script, service, write_executable

from common.windowing import FRAME_SAMPLES, SAMPLE_RATE, WindowParams, padded_length
from export.repo_configs import load_serving_config

PROFILES = DEPLOY / "engine_profiles.txt"
# Which axis of which input carries the audio length, in samples or in frames (docs/contracts.md).
LENGTH_AXES = {"WAVEFORM": ("samples", 2), "CODES": ("frames", 2)}


def profiles() -> dict[str, dict[str, tuple[list[int], list[int], list[int]]]]:
    """model -> input -> (min, opt, max) shapes."""
    table: dict[str, dict[str, tuple[list[int], list[int], list[int]]]] = {}
    for line in PROFILES.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            model, name, *shapes = line.split()
            table.setdefault(model, {})[name] = tuple([int(n) for n in shape.split("x")] for shape in shapes)
    return table


def test_profiles_fit_the_serving_configs() -> None:
    config = load_serving_config()
    table = profiles()
    onnx_models = {model.name for model in config.models if model.kind == "onnx"}
    assert set(table) == onnx_models, "every ONNX model gets an engine, and only those"
    for model_name, inputs in table.items():
        model = config.model(model_name)
        assert set(inputs) == {tensor.name for tensor in model.inputs}, model_name
        for tensor in model.inputs:
            low, opt, high = inputs[tensor.name]
            dims = list(tensor.reshape if tensor.reshape is not None else tensor.dims)
            for shape in (low, opt, high):
                assert len(shape) == 1 + len(dims), f"{model_name}.{tensor.name}: rank"
                assert all(n == d for n, d in zip(shape[1:], dims) if d != -1), f"{model_name}.{tensor.name}: fixed dims"
            assert all(a <= b <= c for a, b, c in zip(low, opt, high)), f"{model_name}.{tensor.name}: min <= opt <= max"
            assert low[0] == 1 and high[0] == model.max_batch_size, f"{model_name}: batch 1..max_batch_size"
            assert opt[0] in model.dynamic_batching.preferred_batch_size, f"{model_name}: opt batch is a preferred batch"


def test_profiles_cover_every_window_audio_windows_emits() -> None:
    params = WindowParams.from_parameters(load_serving_config().model("audio_windows").parameters)
    samples = (padded_length(round(params.min_seconds * SAMPLE_RATE)), padded_length(params.window_samples))
    needed = {"samples": samples, "frames": tuple(math.ceil(n / FRAME_SAMPLES) for n in samples)}
    for inputs in profiles().values():
        for name, (low, opt, high) in inputs.items():
            if name in LENGTH_AXES:
                unit, axis = LENGTH_AXES[name]
                assert low[axis] <= needed[unit][0] and high[axis] >= needed[unit][1], f"{name} {unit}"
                assert opt[axis] == needed[unit][1], f"{name}: tuned for full windows, the common case"


@pytest.fixture()
def gpu_node(tmp_path: Path) -> dict[str, str]:
    """A PATH with nvidia-smi and trtexec stand-ins; trtexec logs its arguments and writes the engine file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_executable(bin_dir / "nvidia-smi", '#!/usr/bin/env bash\necho "${FAKE_GPU:-NVIDIA H100 80GB HBM3}"\n')
    trtexec = write_executable(bin_dir / "trtexec", f"""#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100500] # trtexec $*"
[[ $1 == --help ]] && exit 0
printf '%s\\n' "$*" >> {tmp_path}/trtexec.log
for arg; do [[ $arg == --saveEngine=* ]] && echo engine > "${{arg#--saveEngine=}}"; done
exit 0
""")
    for model in profiles():
        version = tmp_path / "repo" / model / "1"
        version.mkdir(parents=True)
        (version / "model.onnx").write_bytes(model.encode())
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "TRTEXEC": str(trtexec)}


def build(tmp_path: Path, env: dict[str, str]):
    return run_script("build_engines.sh", str(tmp_path / "repo"), str(PROFILES), env=env)


def trtexec_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "trtexec.log"
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_build_engines_passes_the_profiles_and_fp16(gpu_node: dict[str, str], tmp_path: Path) -> None:
    result = build(tmp_path, gpu_node)
    assert result.returncode == 0, result.stderr
    calls = {Path(next(a for a in call if a.startswith("--onnx=")).split("=", 1)[1]).parts[-3]: call for call in trtexec_calls(tmp_path)}
    assert set(calls) == set(profiles())
    moss = calls["moss_encoder"]
    assert "--minShapes=WAVEFORM:1x1x24960,LENGTHS:1" in moss
    assert "--optShapes=WAVEFORM:16x1x240000,LENGTHS:16" in moss
    assert "--maxShapes=WAVEFORM:32x1x240000,LENGTHS:32" in moss
    assert "--fp16" in moss and "--skipInference" in moss
    for model in profiles():
        version = tmp_path / "repo" / model / "1"
        assert (version / "model.plan").read_text() == "engine\n" and not (version / ".model.plan.tmp").exists()
        stamp = (version / "model.plan.stamp").read_text()
        assert "gpu=NVIDIA H100 80GB HBM3\ntensorrt=100500\nprecision=fp16\n" in stamp and "model.onnx" in stamp


def test_build_engines_skips_current_plans_and_rebuilds_stale_ones(gpu_node: dict[str, str], tmp_path: Path) -> None:
    assert build(tmp_path, gpu_node).returncode == 0
    first = len(trtexec_calls(tmp_path))
    again = build(tmp_path, gpu_node)
    assert again.returncode == 0 and len(trtexec_calls(tmp_path)) == first and "2 already current" in again.stdout
    assert build(tmp_path, {**gpu_node, "FAKE_GPU": "NVIDIA L4"}).returncode == 0
    assert len(trtexec_calls(tmp_path)) == 2 * first, "another GPU model needs its own plans"
    (tmp_path / "repo" / "token_embedder" / "1" / "model.onnx").write_bytes(b"new export")
    assert build(tmp_path, {**gpu_node, "FAKE_GPU": "NVIDIA L4"}).returncode == 0
    assert len(trtexec_calls(tmp_path)) == 2 * first + 1, "only the changed ONNX model is rebuilt"
    assert build(tmp_path, {**gpu_node, "FAKE_GPU": "NVIDIA L4", "ENGINE_PRECISION": "fp32"}).returncode == 0
    assert not any("--fp16" in call for call in trtexec_calls(tmp_path)[-first:])


def test_build_engines_fails_without_onnx_or_with_a_bad_precision(gpu_node: dict[str, str], tmp_path: Path) -> None:
    assert build(tmp_path, {**gpu_node, "ENGINE_PRECISION": "int8"}).returncode == 64
    (tmp_path / "repo" / "moss_encoder" / "1" / "model.onnx").unlink()
    result = build(tmp_path, gpu_node)
    assert result.returncode == 66 and "moss_encoder" in result.stderr


def test_compose_builds_engines_with_the_profiles_in_the_image() -> None:
    command = service("build-engines")["command"]
    dockerfile = (DEPLOY.parent / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert command[0] == "/opt/cloudtune/bin/build_engines.sh" and command[2] == "/opt/cloudtune/engine_profiles.txt"
    assert service("build-engines")["network_mode"] == "none"
    assert "deploy/build_engines.sh" in dockerfile and "deploy/engine_profiles.txt /opt/cloudtune/" in dockerfile
