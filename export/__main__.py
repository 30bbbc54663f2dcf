import sys

from common.cli import Command, dispatch

COMMANDS = {
    "moss-onnx": Command("export.moss_onnx", "export the MOSS encoder + quantizer to ONNX (dynamic batch and length)"),
    "embedder-onnx": Command("export.embedder_onnx", "export the TokenEmbedder to ONNX (FP32 + FP16) with a parity report"),
    "trt": Command("export.trt", "build TensorRT FP16 engines from the ONNX exports, where TensorRT is present"),
    "index": Command("export.index", "embed the catalog and build the FAISS index with its manifest"),
    "configs": Command("export.repo_configs", "generate every config.pbtxt of model_repository/ from one source"),
    "publish": Command("export.publish", "copy exported models and the index into model_repository/"),
    "publish-index": Command("export.publish_index", "publish a new catalog index version into a running server without downtime"),
    "serve": Command("export.serve", "start the embedded tritonserver (CPU) on model_repository/"),
    "demo": Command("export.demo", "the main job end to end: artifacts, server, one noisy query"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m export", "CloudTune export and serving tools", COMMANDS))
