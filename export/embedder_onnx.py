"""`python -m export embedder-onnx`: the TokenEmbedder as ONNX (dynamic batch and length), FP32 + FP16,
with an ONNX Runtime vs PyTorch parity report (max abs error, cosine similarity)."""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from export.moss_onnx import export_fp16_variant
from training.embedder import EmbedderFromCounts, TokenEmbedder
from training.train import load_embedder

# Only the transformer blocks' matmuls go to FP16; embeddings, norms, softmax and pooling stay FP32.
FP16_SCOPE = "/embedder/blocks."
INPUT_NAMES = ["CODES", "FRAME_COUNTS"]
OUTPUT_NAMES = ["EMBEDDING"]


def export_embedder_onnx(model: TokenEmbedder, path: Path, n_quantizers: int, opset: int = 17) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = EmbedderFromCounts(model.eval())
    codes = torch.randint(0, model.cfg.codebook_size, (2, n_quantizers, 40), dtype=torch.int32)
    counts = torch.tensor([40, 23], dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that keeps T dynamic here (as in export/moss_onnx.py).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper,
            (codes, counts),
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={"CODES": {0: "batch", 2: "frames"}, "FRAME_COUNTS": {0: "batch"}, "EMBEDDING": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    # Tracing leaves D symbolic; serving configs and the catalog check read it from the graph.
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value = model.cfg.embedding_dim
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    return path


def parity_inputs(n_quantizers: int, codebook_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unequal lengths in one batch (1 s .. 30 s of frames), so masking is part of what is compared."""
    rng = np.random.default_rng(seed)
    counts = np.array([12, 62, 125, 375, 7, 200], dtype=np.int64)
    codes = rng.integers(0, codebook_size, (len(counts), n_quantizers, int(counts.max())), dtype=np.int32)
    return codes, counts


def onnx_parity(model: TokenEmbedder, onnx_path: Path, n_quantizers: int) -> dict[str, float]:
    import onnxruntime as ort

    codes, counts = parity_inputs(n_quantizers, model.cfg.codebook_size)
    with torch.no_grad():
        reference = EmbedderFromCounts(model.eval())(torch.from_numpy(codes), torch.from_numpy(counts)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(OUTPUT_NAMES, {"CODES": codes, "FRAME_COUNTS": counts})[0].astype(np.float32)
    cosine = np.sum(got * reference, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    return {"max_abs_error": float(np.max(np.abs(got - reference))), "min_cosine_similarity": float(cosine.min())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="FP32 model path (.onnx)")
    parser.add_argument("--fp16", type=Path, default=None, help="also write an FP16 variant here (for TensorRT)")
    parser.add_argument("--n-quantizers", type=int, default=32, help="RVQ levels the CODES input carries")
    parser.add_argument("--opset", type=int, default=17)


def main(args: argparse.Namespace) -> int:
    model = load_embedder(args.checkpoint)
    export_embedder_onnx(model, args.output, args.n_quantizers, args.opset)
    report = {"fp32": onnx_parity(model, args.output, args.n_quantizers)}
    if args.fp16 is not None:
        export_fp16_variant(args.output, args.fp16, scope=FP16_SCOPE)
        report["fp16"] = onnx_parity(model, args.fp16, args.n_quantizers)
    report_path = args.output.with_suffix(".parity.json")
    report_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report))
    return 0
