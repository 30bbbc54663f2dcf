"""`python -m export moss-onnx`: the MOSS encoder + quantizer as one ONNX graph, with a parity report.

Graph contract (docs/contracts.md): ``WAVEFORM`` FP32 [B, 1, S] and ``LENGTHS`` INT64 [B] in,
``CODES`` INT32 [B, Q, T] and ``FRAME_COUNTS`` INT64 [B] out; B and S are dynamic and S
need not be a multiple of the hop (the graph pads). Weight norm is constant-folded into
plain weights by the exporter and the quantizer levels are unrolled for a fixed Q.

The FP16 variant (for TensorRT) runs only the transformer matmuls in half precision, cast
in and out around each one; LayerNorm, softmax, RoPE, GELU, the residual stream and the
whole quantizer stay FP32, since codes are argmaxes that flip on small errors there.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from training.moss.config import MossSource, moss_source_arg
from training.moss.model import MossEncoder
from training.moss.weights import build_encoder
from training.synth import synthesize_track

INPUTS = ("WAVEFORM", "LENGTHS")
OUTPUTS = ("CODES", "FRAME_COUNTS")
# Initializers above this many bytes go to one external-data file: protobuf caps a model at 2 GiB.
_EXTERNAL_DATA_BYTES = 1 << 30
# Node-name scope of the transformer stages in the traced graph (the quantizer's is "/quantizer/").
_ENCODER_SCOPE = "/encoder."


class _CodesGraph(nn.Module):
    """What is traced: unchecked encode with a fixed level count and the contract's dtypes."""

    def __init__(self, encoder: MossEncoder, n_quantizers: int) -> None:
        super().__init__()
        self.moss = encoder
        self.n_quantizers = n_quantizers

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        codes, frame_counts = self.moss.encode(waveform, lengths, self.n_quantizers)
        return codes.to(torch.int32), frame_counts


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    """Save ``model``; large weights go to ``<name>.data`` beside it, which must travel with the .onnx."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    if weight_bytes > _EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    else:
        onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))
    return path


def export_moss_onnx(
    encoder: MossEncoder, path: str | Path, n_quantizers: int | None = None, opset: int = 17,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``encoder`` to ``path`` (FP32) and validate it with ``onnx.checker``; returns ``path``.

    The encoder is traced as it is (no copy: the official one is 3.5 GB), so it must be a
    float32 CPU model with a traceable attention backend such as the default.
    """
    path = Path(path)
    n_quantizers = encoder.check_n_quantizers(n_quantizers)
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in encoder.parameters()):
        raise ValueError("export_moss_onnx needs a float32 encoder on the CPU")
    graph = _CodesGraph(encoder.eval(), n_quantizers)
    hop = encoder.config.hop
    # Two hops and a ragged tail, so no size of the example can be mistaken for a constant.
    example = (torch.zeros(2, 1, 2 * hop + 7), torch.tensor([2 * hop + 7, hop + 1]))
    with tempfile.TemporaryDirectory() as scratch:
        traced = Path(scratch) / "model.onnx"  # large models come out as one file per tensor: re-saved below
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated but keeps S dynamic through shape arithmetic,
            # exports in seconds and names nodes by module scope (which the FP16 pass relies on).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                graph, example, str(traced), dynamo=False, opset_version=opset,
                input_names=list(INPUTS), output_names=list(OUTPUTS),
                dynamic_axes={"WAVEFORM": {0: "batch", 2: "samples"}, "LENGTHS": {0: "batch"},
                              "CODES": {0: "batch", 2: "frames"}, "FRAME_COUNTS": {0: "batch"}},
            )
        model = onnx.load(str(traced))
    properties = {
        "sampling_rate": str(encoder.config.sampling_rate), "hop": str(hop),
        "n_quantizers": str(n_quantizers), "codebook_size": str(encoder.config.quantizer.codebook_size),
        **(metadata or {}),
    }
    helper.set_model_props(model, properties)
    return save_onnx(model, path)


def convert_matmuls_to_fp16(model: onnx.ModelProto, scope: str = _ENCODER_SCOPE) -> int:
    """Run the MatMuls whose node name contains ``scope`` in FP16, in place; returns how many.

    Weight initializers used only there are stored in FP16; activations are cast to FP16
    before and back to FP32 after each MatMul, so everything else keeps its FP32 type.
    """
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    initializers = {t.name: t for t in model.graph.initializer}
    halves: set[str] = set()
    nodes: list[onnx.NodeProto] = []
    converted = 0
    for node in model.graph.node:
        if node.op_type != "MatMul" or scope not in node.name:
            nodes.append(node)
            continue
        inputs = []
        for name in node.input:
            weight = initializers.get(name)
            if weight is not None and weight.data_type == TensorProto.FLOAT and uses[name] == 1:
                weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight).astype(np.float16), name))
                inputs.append(name)
                continue
            half = f"{name}__fp16"
            if half not in halves:
                halves.add(half)
                nodes.append(helper.make_node("Cast", [name], [half], to=TensorProto.FLOAT16, name=f"{half}__cast"))
            inputs.append(half)
        output = node.output[0]
        node.input[:] = inputs
        node.output[0] = f"{output}__fp16"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [node.output[0]], [output], to=TensorProto.FLOAT, name=f"{output}__cast"))
        converted += 1
    if not converted:
        raise ValueError(f"no MatMul node under scope {scope!r}: the graph's node names changed")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return converted


def export_fp16_variant(fp32_path: str | Path, fp16_path: str | Path, scope: str = _ENCODER_SCOPE) -> Path:
    model = onnx.load(str(fp32_path))
    converted = convert_matmuls_to_fp16(model, scope)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                   "precision": f"fp16 matmuls ({converted}), fp32 elsewhere"})
    return save_onnx(model, Path(fp16_path))


@dataclass(frozen=True)
class ParityCase:
    name: str
    waveform: np.ndarray  # float32 [B, 1, S], zeros beyond each clip's length
    lengths: np.ndarray  # int64 [B]


def _batch(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    waveform = np.zeros((len(clips), 1, int(lengths.max())), dtype=np.float32)
    for i, clip in enumerate(clips):
        waveform[i, 0, : len(clip)] = clip
    return waveform, lengths


def parity_cases(seconds: float, sampling_rate: int, seed: int = 0) -> list[ParityCase]:
    """Noise and generated music, single clips and padded batches of unequal, hop-unaligned lengths."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sampling_rate)
    noise = [(0.3 * rng.standard_normal(size)).astype(np.float32) for size in (n + 37, n * 2 // 3 + 5, n // 3 + 1)]
    music = [synthesize_track(i, seconds, seed, sampling_rate)[:size] for i, size in enumerate((n, n // 2 + 123))]
    cases = [
        ("noise x1", noise[:1]), ("noise x3 unequal", noise),
        ("music x1", music[:1]), ("music x2 unequal", music),
    ]
    return [ParityCase(name, *_batch(clips)) for name, clips in cases]


def code_agreement(reference: np.ndarray, other: np.ndarray, frame_counts: np.ndarray) -> dict[str, float | int]:
    """Share of identical codes over valid frames only, over all levels and at level 0."""
    valid = np.arange(reference.shape[-1])[None, :] < frame_counts[:, None]  # [B, T]
    same = reference == other  # [B, Q, T]
    frames = int(valid.sum())
    return {
        "valid_frames": frames,
        "all_levels": float(same[np.broadcast_to(valid[:, None, :], same.shape)].mean()) if frames else 1.0,
        "level0": float(same[:, 0][valid].mean()) if frames else 1.0,
    }


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, case: ParityCase) -> tuple[np.ndarray, np.ndarray]:
    codes, counts = session.run(list(OUTPUTS), {"WAVEFORM": case.waveform, "LENGTHS": case.lengths})
    return codes, counts


def _pooled(results: list[dict]) -> dict[str, float | int]:
    frames = sum(r["valid_frames"] for r in results)
    pooled = {"valid_frames": frames}
    for key in ("all_levels", "level0"):
        pooled[key] = sum(r[key] * r["valid_frames"] for r in results) / frames if frames else 1.0
    return pooled


def onnx_parity(encoder: MossEncoder, onnx_path: str | Path, cases: list[ParityCase], n_quantizers: int) -> dict:
    """ONNX Runtime vs PyTorch: identical-code shares per case and pooled; frame counts must match exactly."""
    session = _session(Path(onnx_path))
    results = []
    for case in cases:
        with torch.inference_mode():
            expected, expected_counts = encoder(torch.from_numpy(case.waveform), torch.from_numpy(case.lengths), n_quantizers)
        codes, counts = _run(session, case)
        if not np.array_equal(counts, expected_counts.numpy()):
            raise AssertionError(f"{case.name}: FRAME_COUNTS {counts} != PyTorch {expected_counts.numpy()}")
        results.append({"case": case.name, **code_agreement(expected.numpy(), codes, counts)})
    return {"cases": results, **_pooled(results)}


def fp16_agreement(fp32_path: str | Path, fp16_path: str | Path, cases: list[ParityCase]) -> dict:
    """FP16 graph vs FP32 graph, both in ONNX Runtime: identical-code shares per case and pooled."""
    reference, half = _session(Path(fp32_path)), _session(Path(fp16_path))
    results = []
    for case in cases:
        expected, counts = _run(reference, case)
        codes, _ = _run(half, case)
        results.append({"case": case.name, **code_agreement(expected, codes, counts)})
    return {"cases": results, **_pooled(results)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--moss-config", type=moss_source_arg, required=True,
                        help="'tiny' or 'official' (RANDOM weights) or a folder with config.json + *.safetensors")
    parser.add_argument("--output", type=Path, required=True, help="FP32 model path, e.g. artifacts/moss_encoder.onnx")
    parser.add_argument("--n-quantizers", type=int, default=None, help="RVQ levels in the graph (default: all, 32)")
    parser.add_argument("--fp16", type=Path, default=None, help="also write the FP16-matmul variant here")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--check-seconds", type=float, default=3.0,
                        help="clip length of the parity check (0 skips it)")


def main(args: argparse.Namespace) -> int:
    source: MossSource = args.moss_config
    encoder = build_encoder(source)
    n_quantizers = encoder.check_n_quantizers(args.n_quantizers)
    report: dict = {**source.metadata(), "n_quantizers": n_quantizers, "opset": args.opset}
    print(f"MOSS encoder {source.name}: {source.weights_label}")

    start = time.perf_counter()
    export_moss_onnx(encoder, args.output, n_quantizers, args.opset, metadata=source.metadata())
    report["fp32"] = {"path": str(args.output), "export_seconds": round(time.perf_counter() - start, 2)}
    print(f"exported {args.output} in {report['fp32']['export_seconds']} s")
    if args.fp16 is not None:
        start = time.perf_counter()
        export_fp16_variant(args.output, args.fp16)
        report["fp16"] = {"path": str(args.fp16), "convert_seconds": round(time.perf_counter() - start, 2)}
        print(f"wrote {args.fp16} in {report['fp16']['convert_seconds']} s")

    if args.check_seconds > 0:
        cases = parity_cases(args.check_seconds, source.config.sampling_rate)
        report["fp32"]["vs_pytorch"] = onnx_parity(encoder, args.output, cases, n_quantizers)
        print(f"FP32 ONNX vs PyTorch, identical codes: {report['fp32']['vs_pytorch']['all_levels']:.2%}")
        if args.fp16 is not None:
            report["fp16"]["vs_fp32"] = agreement = fp16_agreement(args.output, args.fp16, cases)
            print(f"FP16 vs FP32 ONNX, identical codes: level 0 {agreement['level0']:.2%}, "
                  f"all levels {agreement['all_levels']:.2%}")
    report_path = args.output.with_suffix(".parity.json")
    report_path.write_text(json.dumps(report, indent=2))
    print(f"report: {report_path}")
    return 0
