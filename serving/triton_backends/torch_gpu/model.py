"""Python-based Triton backend `torch_gpu`: the project's PyTorch models on the instance's GPU.

Used by the `gpu` model configs (`--model-config-name gpu`, generated from configs/serving.yaml) for
`moss_encoder` (FastMossEncoder: fused kernels, CUDA graphs, PRECISION fp16 by default) and `token_embedder`
(TokenEmbedder, FP32), or both as one model (`export.repo_configs.with_fused_steps`). Which one is decided by
the config's first input and output (WAVEFORM, CODES; WAVEFORM -> EMBEDDING for the fused one); the runners
and their version-folder artifacts are described in serving/torch_serving.py. With dynamic batching, the
requests of one execute() are padded to a common shape and run as one batch by the runner's `run_requests`
(the contracts carry lengths and counts, so padding is harmless), as in the `onnx_cpu` backend. Without a
usable GPU it runs on CPU.

`TORCH_GPU_TIMING_EVERY=N` in the server's environment logs, every N executions, where an execution's time
went (reading the requests, the runner, building the responses; the encoder's GPU time by CUDA events): the
GPU benchmark's way to split Triton's compute_infer (benchmarks/gpu_e2e.py).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.torch_serving import (EmbedderRunner, EncoderRunner, ExecutionTimes, FusedRunner, pick_device, runner_options,
                                   timing_every)
from serving.triton_model_utils import error_response, parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        device = pick_device(args["model_instance_kind"], args["model_instance_device_id"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]
        options = runner_options(params)
        if self.inputs[0] == "WAVEFORM" and self.outputs[0] == "EMBEDDING":
            root = Path(args["model_repository"]).parent  # the model folder's parent: the repository
            self.runner = FusedRunner(root / params["ENCODER_DIR"], root / params["EMBEDDER_DIR"], device, int(params["N_QUANTIZERS"]), **options)
            self.dtypes = (np.float32, np.int64)
        elif self.inputs[0] == "WAVEFORM":
            codes = next(tensor for tensor in config["output"] if tensor["name"] == "CODES")
            self.runner = EncoderRunner(version_dir, device, int(codes["dims"][0]), **options)
            self.dtypes = (np.float32, np.int64)
        elif self.inputs[0] == "CODES":
            self.runner = EmbedderRunner(version_dir, device, verify_onnx=options.get("verify_onnx", True))
            self.dtypes = (np.int32, np.int64)
        else:
            raise ValueError(f"torch_gpu serves moss_encoder (WAVEFORM), token_embedder (CODES) or both fused (WAVEFORM -> EMBEDDING), "
                             f"not inputs {self.inputs}")
        pb_utils.Logger.log_info(f"{config['name']}: PyTorch on {device}; parity with model.onnx: {self.runner.parity}")
        self.name = config["name"]
        every = timing_every(os.environ)
        self.times = ExecutionTimes(every, getattr(self.runner, "encoder_runner", None)) if every > 0 else None

    def _read(self, request: Any) -> list[np.ndarray] | str:
        arrays = []
        for name, dtype in zip(self.inputs, self.dtypes):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return f"input {name} is missing"
            array = tensor.as_numpy()
            if array.dtype != dtype:
                return f"input {name} must be {np.dtype(dtype).name}, got {array.dtype}"
            arrays.append(array)
        primary, counts = arrays
        counts = counts.reshape(-1)
        if primary.ndim != 3 or counts.shape[0] != primary.shape[0]:
            return f"{self.inputs[0]} must be [B, C, N] with one {self.inputs[1]} per row, got {list(primary.shape)} and {list(counts.shape)}"
        return [primary, counts]

    def execute(self, requests: list[Any]) -> list[Any]:
        began = time.perf_counter()
        parsed = [self._read(request) for request in requests]
        responses: list[Any] = [error_response(item) if isinstance(item, str) else None for item in parsed]
        good = [index for index, item in enumerate(parsed) if not isinstance(item, str)]
        if not good:
            return responses
        read = time.perf_counter()
        try:
            outputs = self.runner.run_requests([parsed[index][0] for index in good], [parsed[index][1] for index in good])
        except Exception as error:  # noqa: BLE001 - becomes the failed requests' error
            for index in good:
                responses[index] = error_response(f"{type(error).__name__}: {error}")
            return responses
        ran = time.perf_counter()
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        row = 0
        for index in good:
            size = parsed[index][0].shape[0]
            frames = parsed[index][0].shape[-1]
            tensors = []
            for name, value in zip(self.outputs, outputs):
                part = value[row:row + size]
                if name == "CODES":  # this request's own frames (others in the batch may be longer)
                    part = part[:, :, : -(-frames // self.runner.hop)]
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(part)))
            responses[index] = pb_utils.InferenceResponse(tensors)
            row += size
        if self.times is not None:
            report = self.times.add(len(requests), row, read - began, ran - read, time.perf_counter() - ran)
            if report:
                pb_utils.Logger.log_info(f"{self.name} timing: {report}")
        return responses
