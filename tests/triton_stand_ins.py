"""Small ONNX models that obey docs/contracts.md, for serving tests before the real exports exist.

moss stand-in: WAVEFORM [B,1,S] -> CODES [B,Q,T] from sign bits of random projections of each 1920-sample
frame (deterministic, far from float ties), FRAME_COUNTS = LENGTHS // 1920.
embedder stand-in: CODES, FRAME_COUNTS -> EMBEDDING [B,D], the L2-normalised sum of code embeddings over
valid frames. A reference pipeline runs them with ONNX Runtime, exactly as the server's models should.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from common.windowing import FRAME_SAMPLES, WindowParams, make_windows
from serving.catalog_index import Catalog, SearchResult

CODEBOOK = 1024
BITS = 10  # 2**BITS == CODEBOOK
OPSET = 17


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(value, name)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_moss_stand_in(path: Path, n_quantizers: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    initializers = [
        _const("frame", np.array(FRAME_SAMPLES, np.int64)),
        _const("two", np.array(2, np.int64)),
        _const("zero_pads", np.zeros(5, np.int64)),
        _const("axis0", np.array([0], np.int64)),
        _const("frames_shape", np.array([0, -1, FRAME_SAMPLES], np.int64)),
        _const("projection", rng.standard_normal((FRAME_SAMPLES, n_quantizers * BITS)).astype(np.float32)),
        _const("zero", np.array(0.0, np.float32)),
        _const("bits_shape", np.array([0, 0, n_quantizers, BITS], np.int64)),
        _const("powers", (2 ** np.arange(BITS)).astype(np.int32)),
        _const("last", np.array([-1], np.int64)),
    ]
    nodes = [
        helper.make_node("Shape", ["WAVEFORM"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["samples"]),
        helper.make_node("Mod", ["samples", "frame"], ["rest"]),
        helper.make_node("Sub", ["frame", "rest"], ["missing"]),
        helper.make_node("Mod", ["missing", "frame"], ["pad"]),
        helper.make_node("Unsqueeze", ["pad", "axis0"], ["pad1"]),
        helper.make_node("Concat", ["zero_pads", "pad1"], ["pads"], axis=0),
        helper.make_node("Pad", ["WAVEFORM", "pads"], ["padded"]),
        helper.make_node("Reshape", ["padded", "frames_shape"], ["frames"]),
        helper.make_node("MatMul", ["frames", "projection"], ["projected"]),
        helper.make_node("Greater", ["projected", "zero"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["bits"], to=TensorProto.INT32),
        helper.make_node("Reshape", ["bits", "bits_shape"], ["bits4"]),
        helper.make_node("Mul", ["bits4", "powers"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "last"], ["codes_btq"], keepdims=0),
        helper.make_node("Transpose", ["codes_btq"], ["CODES"], perm=[0, 2, 1]),
        helper.make_node("Div", ["LENGTHS", "frame"], ["FRAME_COUNTS"]),
    ]
    graph = helper.make_graph(
        nodes,
        "moss_stand_in",
        [helper.make_tensor_value_info("WAVEFORM", TensorProto.FLOAT, ["batch", 1, "samples"]),
         helper.make_tensor_value_info("LENGTHS", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("CODES", TensorProto.INT32, ["batch", n_quantizers, "frames"]),
         helper.make_tensor_value_info("FRAME_COUNTS", TensorProto.INT64, ["batch"])],
        initializers,
    )
    return _save(graph, path)


def build_embedder_stand_in(path: Path, n_quantizers: int, dim: int, seed: int = 1) -> Path:
    # Centred rows: sums over many random codes then point in unrelated directions for unrelated audio.
    table = np.random.default_rng(seed).standard_normal((CODEBOOK, dim)).astype(np.float32)
    initializers = [
        _const("offsets", (np.arange(n_quantizers, dtype=np.int32) * 37).reshape(1, n_quantizers, 1)),
        _const("codebook", np.array(CODEBOOK, np.int32)),
        _const("table", table - table.mean(axis=0)),
        _const("axis0", np.array([0], np.int64)),
        _const("axis1", np.array([1], np.int64)),
        _const("axis_last", np.array([-1], np.int64)),
        _const("two", np.array(2, np.int64)),
        _const("start", np.array(0, np.int64)),
        _const("step", np.array(1, np.int64)),
    ]
    nodes = [
        helper.make_node("Add", ["CODES", "offsets"], ["shifted"]),
        helper.make_node("Mod", ["shifted", "codebook"], ["rows"]),
        helper.make_node("Gather", ["table", "rows"], ["vectors"], axis=0),
        helper.make_node("ReduceSum", ["vectors", "axis1"], ["per_frame"], keepdims=0),
        helper.make_node("Shape", ["CODES"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["frames"]),
        helper.make_node("Range", ["start", "frames", "step"], ["positions"]),
        helper.make_node("Unsqueeze", ["positions", "axis0"], ["positions_row"]),
        helper.make_node("Unsqueeze", ["FRAME_COUNTS", "axis1"], ["counts_column"]),
        helper.make_node("Less", ["positions_row", "counts_column"], ["valid"]),
        helper.make_node("Cast", ["valid"], ["weights"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["weights", "axis_last"], ["weights3"]),
        helper.make_node("Mul", ["per_frame", "weights3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["pooled"], keepdims=0),
        helper.make_node("LpNormalization", ["pooled"], ["EMBEDDING"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "embedder_stand_in",
        [helper.make_tensor_value_info("CODES", TensorProto.INT32, ["batch", n_quantizers, "frames"]),
         helper.make_tensor_value_info("FRAME_COUNTS", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("EMBEDDING", TensorProto.FLOAT, ["batch", dim])],
        initializers,
    )
    return _save(graph, path)


@dataclass
class ReferencePipeline:
    """The audio_search ensemble computed in-process: windowing -> ORT encoder -> ORT embedder -> catalog."""

    moss_onnx: Path
    embedder_onnx: Path
    window_params: WindowParams

    def __post_init__(self) -> None:
        self.moss = ort.InferenceSession(str(self.moss_onnx), providers=["CPUExecutionProvider"])
        self.embedder = ort.InferenceSession(str(self.embedder_onnx), providers=["CPUExecutionProvider"])

    def encode(self, waveform: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes, counts = self.moss.run(["CODES", "FRAME_COUNTS"], {"WAVEFORM": waveform, "LENGTHS": lengths})
        return codes, counts

    def embed_codes(self, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.embedder.run(["EMBEDDING"], {"CODES": codes, "FRAME_COUNTS": counts})[0]

    def embed(self, audio: np.ndarray) -> np.ndarray:
        return self.embed_codes(*self.encode(*make_windows(audio, self.window_params)))

    def search(self, catalog: Catalog, audio: np.ndarray, k: int) -> SearchResult:
        return catalog.search(self.embed(audio), k)
