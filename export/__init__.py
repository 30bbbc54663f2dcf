"""Export side: ONNX and TensorRT exports, the catalog index, generated Triton configs and the embedded server."""
