"""ONNX export of the tiny MOSS encoder through the CLI: contract, checker, FP32 parity, FP16 report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from common.cli import dispatch
from export.__main__ import COMMANDS
from export.moss_onnx import ParityCase, code_agreement, onnx_parity
from training.moss import TINY_CONFIG, build_encoder

CHECK_SECONDS = 1.5


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("moss_onnx")
    fp32, fp16 = folder / "moss_encoder.onnx", folder / "moss_encoder_fp16.onnx"
    argv = ["moss-onnx", "--moss-config", "tiny", "--output", str(fp32), "--fp16", str(fp16),
            "--check-seconds", str(CHECK_SECONDS)]
    assert dispatch("python -m export", "", COMMANDS, argv) == 0
    return fp32, fp16, json.loads((folder / "moss_encoder.parity.json").read_text())


def test_graph_contract(exported: tuple[Path, Path, dict]) -> None:
    fp32, _, _ = exported
    model = onnx.load(str(fp32))
    onnx.checker.check_model(model)

    def signature(values: list[onnx.ValueInfoProto]) -> list[tuple[str, int, list[str | int]]]:
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    assert signature(model.graph.input) == [
        ("WAVEFORM", TensorProto.FLOAT, ["batch", 1, "samples"]), ("LENGTHS", TensorProto.INT64, ["batch"])]
    assert signature(model.graph.output) == [
        ("CODES", TensorProto.INT32, ["batch", 32, "frames"]), ("FRAME_COUNTS", TensorProto.INT64, ["batch"])]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["moss_source"] == "tiny-random" and "RANDOM WEIGHTS" in props["moss_weights"]
    assert props["hop"] == "1920" and props["n_quantizers"] == "32"
    # Weight norm is folded: no g / v tensors remain, only plain weights.
    assert not [t.name for t in model.graph.initializer if "original" in t.name]
    # The window is an additive bias: no NaN guard over the score matrices (what the boolean mask exported).
    assert "IsNaN" not in {node.op_type for node in model.graph.node}


def test_fp32_codes_identical_to_pytorch(exported: tuple[Path, Path, dict]) -> None:
    _, _, report = exported
    vs_pytorch = report["fp32"]["vs_pytorch"]
    names = [case["case"] for case in vs_pytorch["cases"]]
    assert names == ["noise x1", "noise x3 unequal", "music x1", "music x2 unequal"]
    assert all(case["all_levels"] == 1.0 and case["valid_frames"] > 0 for case in vs_pytorch["cases"])
    assert vs_pytorch["all_levels"] == 1.0 and report["fp32"]["export_seconds"] > 0


def test_fp32_odd_sizes(exported: tuple[Path, Path, dict]) -> None:
    """Exact hops, a clip shorter than one hop, and a batch that mixes them."""
    fp32, _, _ = exported
    rng = np.random.default_rng(3)
    waveform = (0.3 * rng.standard_normal((3, 1, 4 * 1920))).astype(np.float32)
    waveform[1, :, 1000:] = 0.0
    cases = [
        ParityCase("exact hops", waveform[:1], np.array([4 * 1920])),
        ParityCase("under one hop", waveform[1:2, :, :1000], np.array([1000])),
        ParityCase("mixed", waveform, np.array([4 * 1920, 1000, 3 * 1920 + 5])),
    ]
    report = onnx_parity(build_encoder("tiny"), fp32, cases, 32)
    assert report["all_levels"] == 1.0
    codes, counts = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(
        None, {"WAVEFORM": cases[1].waveform, "LENGTHS": cases[1].lengths})
    assert codes.shape == (1, 32, 1) and codes.dtype == np.int32 and counts.tolist() == [0]


def test_fp16_variant_and_its_agreement(exported: tuple[Path, Path, dict]) -> None:
    _, fp16, report = exported
    model = onnx.load(str(fp16))
    onnx.checker.check_model(model)
    half = [n for n in model.graph.node if n.op_type == "MatMul"]
    transformer = [n for n in half if "/encoder." in n.name]
    # Per stage: optional input projection, 6 matmuls per layer (qkv, q.k, p.v, out, ff1, ff2), output projection.
    expected = sum((stage.input_dim != stage.d_model) + 6 * stage.num_layers + 1 for _, stage in TINY_CONFIG.transformers)
    assert len(transformer) == expected
    assert {t.data_type for t in model.graph.initializer if t.dims and any(n.input[1] == t.name for n in transformer)} \
        == {TensorProto.FLOAT16}
    assert [v.type.tensor_type.elem_type for v in model.graph.output] == [TensorProto.INT32, TensorProto.INT64]
    for key in ("level0", "all_levels"):
        assert 0.0 <= report["fp16"]["vs_fp32"][key] <= 1.0
    assert [c["case"] for c in report["fp16"]["vs_fp32"]["cases"]] == [c["case"] for c in report["fp32"]["vs_pytorch"]["cases"]]


def test_code_agreement_counts_valid_frames_only() -> None:
    reference = np.zeros((2, 2, 3), dtype=np.int64)
    other = reference.copy()
    other[0, 1, 2] = 5  # junk frame of clip 0 (2 valid frames): ignored
    other[1, 1, 0] = 7  # valid frame of clip 1, level 1
    result = code_agreement(reference, other, np.array([2, 1]))
    assert result == {"valid_frames": 3, "all_levels": 5 / 6, "level0": 1.0}

