"""`python -m export trt` where TensorRT is absent (this machine) and the profile file it shares with compose."""
from __future__ import annotations

import subprocess
import sys

from export.trt import NO_TENSORRT, read_profiles
from export.repo_configs import load_serving_config


def test_without_tensorrt_it_says_so_and_exits_3(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "export", "trt", "--model-repository", str(tmp_path)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == NO_TENSORRT
    assert "TensorRT is not available here" in result.stdout and "build-engines" in result.stdout


def test_profiles_cover_every_onnx_input_of_the_serving_config() -> None:
    config = load_serving_config()
    profiles = read_profiles()
    for model in ("moss_encoder", "token_embedder"):
        names = {p.input for p in profiles if p.model == model}
        assert names == {t.name for t in config.model(model).inputs}
    for p in profiles:
        assert len(p.min) == len(p.opt) == len(p.max)
        assert all(lo <= mid <= hi for lo, mid, hi in zip(p.min, p.opt, p.max)), p
