"""Export side, the artifact makers: ONNX and TensorRT exports, the catalog index, generated Triton configs, publishing into a repository."""
