"""Python-based Triton backend `onnx_cpu`: runs `<model>/<version>/model.onnx` with ONNX Runtime on CPU.

The embedded tritonserver has no onnxruntime backend; models whose config says `backend: "onnx_cpu"` run
here. Input/output names and types come from the model config. With dynamic batching, the requests of one
execute() are concatenated along the batch axis (other axes zero-padded to the largest request: the
contracts carry valid lengths/counts, so padding is harmless) and run in one ONNX Runtime call.
Model parameter INTRA_OP_THREADS sets ONNX Runtime's thread count (default 0: its own choice).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from serving.ragged import pad_concat
from serving.triton_model_utils import error_response, parameters

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    rank: int  # batch axis included: inputs as the ONNX graph takes them, outputs as the config declares


def _config_rank(tensor: dict[str, Any], batching: bool) -> int:
    shape = tensor["reshape"].get("shape", []) if "reshape" in tensor else tensor["dims"]
    return len(shape) + batching


def _specs(config_tensors: list[dict[str, Any]], graph_tensors: list[Any], kind: str, batching: bool) -> list[TensorSpec]:
    graph = {tensor.name: tensor for tensor in graph_tensors}
    specs = []
    for tensor in config_tensors:
        name = tensor["name"]
        if name not in graph:
            raise ValueError(f"config {kind} {name!r} is not in the ONNX graph, which has {sorted(graph)}")
        dtype = np.dtype(pb_utils.triton_string_to_numpy(tensor["data_type"]))
        graph_dtype = ORT_TYPES.get(graph[name].type)
        if graph_dtype is None or np.dtype(graph_dtype) != dtype:
            raise ValueError(f"{kind} {name!r}: config says {tensor['data_type']}, the ONNX graph says {graph[name].type}")
        rank = len(graph[name].shape) if kind == "input" else _config_rank(tensor, batching)
        specs.append(TensorSpec(name, dtype, rank))
    return specs


def _fit_rank(array: np.ndarray, rank: int) -> np.ndarray:
    """[B, 1] <-> [B]: Triton needs a per-item dim where the graph has none (and the reverse)."""
    if array.ndim == rank + 1 and array.shape[-1] == 1:
        return array.reshape(array.shape[:-1])
    if array.ndim + 1 == rank:
        return array[..., np.newaxis]
    return array


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / (config.get("default_model_filename") or "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters(config).get("INTRA_OP_THREADS", "0"))
        # Spinning threads would steal CPU from the other models' instances on the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.batching = config["max_batch_size"] > 0
        self.inputs = _specs(config["input"], self.session.get_inputs(), "input", self.batching)
        self.outputs = _specs(config["output"], self.session.get_outputs(), "output", self.batching)
        missing = {t.name for t in self.session.get_inputs()} - {spec.name for spec in self.inputs}
        if missing:
            raise ValueError(f"the ONNX graph needs inputs {sorted(missing)} that the config does not declare")

    def _read(self, request: Any) -> dict[str, np.ndarray] | str:
        feeds = {}
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                return f"input {spec.name} is missing"
            array = _fit_rank(tensor.as_numpy(), spec.rank)
            if array.dtype != spec.dtype or array.ndim != spec.rank:
                return f"input {spec.name} must be {spec.dtype} of rank {spec.rank}, got {array.dtype} {list(array.shape)}"
            feeds[spec.name] = array
        if self.batching and len({array.shape[0] for array in feeds.values()}) > 1:
            return f"inputs disagree on the batch size: { {name: a.shape[0] for name, a in feeds.items()} }"
        return feeds

    def _run(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        names = [spec.name for spec in self.outputs]
        if len(feeds) == 1:  # as is: without batching, outputs need not share the inputs' first axis
            return [dict(zip(names, self.session.run(names, feeds[0])))]
        merged = {spec.name: pad_concat([feed[spec.name] for feed in feeds]) for spec in self.inputs}
        outputs = dict(zip(names, self.session.run(names, merged)))
        bounds = np.cumsum([0] + [next(iter(feed.values())).shape[0] for feed in feeds])
        return [{name: value[a:b] for name, value in outputs.items()} for a, b in zip(bounds[:-1], bounds[1:])]

    def _response(self, outputs: dict[str, np.ndarray]) -> Any:
        return pb_utils.InferenceResponse([
            pb_utils.Tensor(spec.name, np.ascontiguousarray(_fit_rank(outputs[spec.name], spec.rank)))
            for spec in self.outputs
        ])

    def _run_group(self, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
        try:
            return [self._response(outputs) for outputs in self._run(feeds)]
        except Exception as error:  # noqa: BLE001 - ONNX Runtime errors become per-request errors
            if len(feeds) == 1:
                return [error_response(f"ONNX Runtime failed: {error}")]
            # Find the request ONNX Runtime rejected: the others still get their results.
            return [self._run_group([feed])[0] for feed in feeds]

    def execute(self, requests: list[Any]) -> list[Any]:
        parsed = [self._read(request) for request in requests]
        responses = [error_response(item) if isinstance(item, str) else None for item in parsed]
        good = [index for index, item in enumerate(parsed) if not isinstance(item, str)]
        groups = ([good] if good else []) if self.batching else [[index] for index in good]
        for group in groups:
            for index, response in zip(group, self._run_group([parsed[index] for index in group])):
                responses[index] = response
        return responses
