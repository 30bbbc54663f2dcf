"""Helpers for our Triton Python models; imported inside the Python-backend stub only."""
from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils


def parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """The config's `parameters` as plain strings."""
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


def error_response(message: str) -> pb_utils.InferenceResponse:
    """Fails one request with a client error (gRPC INVALID_ARGUMENT / HTTP 400); the others go on."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
