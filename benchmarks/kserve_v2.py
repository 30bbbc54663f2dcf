"""KServe v2 inference requests over plain HTTP: a JSON body, or the binary tensor extension.

Binary extension: the body is a JSON header followed by the raw tensor bytes; the header's length
travels in `Inference-Header-Content-Length` and each input declares its `binary_data_size`. The
answers are asked for as JSON (`binary_data: false`), so decoding them is plain JSON.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
WIRE_DTYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int32): "INT32",
               np.dtype(np.int64): "INT64", np.dtype(np.int16): "INT16", np.dtype(np.uint8): "UINT8"}

Request = tuple[bytes, dict[str, str]]


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def _outputs(names: list[str]) -> list[dict[str, Any]]:
    return [{"name": name, "parameters": {"binary_data": False}} for name in names]


def binary_request(inputs: dict[str, np.ndarray], outputs: list[str]) -> Request:
    header = {
        "inputs": [{"name": name, "shape": list(array.shape), "datatype": WIRE_DTYPES[array.dtype],
                    "parameters": {"binary_data_size": array.nbytes}} for name, array in inputs.items()],
        "outputs": _outputs(outputs),
    }
    head = json.dumps(header).encode()
    body = head + b"".join(np.ascontiguousarray(array).tobytes() for array in inputs.values())
    return body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def json_request(inputs: dict[str, np.ndarray], outputs: list[str]) -> Request:
    body = {
        "inputs": [{"name": name, "shape": list(array.shape), "datatype": WIRE_DTYPES[array.dtype],
                    "data": array.reshape(-1).tolist()} for name, array in inputs.items()],
        "outputs": _outputs(outputs),
    }
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


def json_outputs(body: bytes) -> dict[str, list[Any]]:
    """{output name: flat data} of a JSON answer."""
    return {output["name"]: output["data"] for output in json.loads(body)["outputs"]}
