"""Triton Python model `audio_windows`: AUDIO [N] -> WAVEFORM [W, 1, S], LENGTHS [W] (common/windowing.py)."""
from __future__ import annotations

import json
from typing import Any

import triton_python_backend_utils as pb_utils

from common.windowing import InvalidAudio, WindowParams, make_windows
from serving.triton_model_utils import error_response, parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.params = WindowParams.from_parameters(parameters(json.loads(args["model_config"])))

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._window(request) for request in requests]

    def _window(self, request: Any) -> Any:
        audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
        try:
            waveform, lengths = make_windows(audio, self.params)
        except InvalidAudio as error:
            return error_response(str(error))
        return pb_utils.InferenceResponse([pb_utils.Tensor("WAVEFORM", waveform), pb_utils.Tensor("LENGTHS", lengths)])
