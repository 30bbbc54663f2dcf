import sys

from common.cli import Command, dispatch

# Commands that left `python -m export` (the serving runtime and the demo are packages of their own): still
# accepted for one release, with a note naming the new command.
MOVED = {
    "serve": ("serving.serve", "python -m serving serve"),
    "publish-index": ("serving.publish_index", "python -m serving publish-index"),
    "demo": ("demo.run", "python -m demo"),
}

COMMANDS = {
    "moss-onnx": Command("export.moss_onnx", "export the MOSS encoder + quantizer to ONNX (dynamic batch and length)"),
    "embedder-onnx": Command("export.embedder_onnx", "export the TokenEmbedder to ONNX (FP32 + FP16) with a parity report"),
    "trt": Command("export.trt", "build TensorRT FP16 engines from the ONNX exports, where TensorRT is present"),
    "index": Command("export.index", "embed the catalog and build the FAISS index with its manifest"),
    "configs": Command("export.repo_configs", "generate every config.pbtxt of model_repository/ from one source"),
    "publish": Command("export.publish", "copy exported models and the index into model_repository/"),
    **{name: Command(module, f"moved to `{new}` (this alias goes in the next release)") for name, (module, new) in MOVED.items()},
}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in MOVED:
        print(f"note: `python -m export {sys.argv[1]}` is now `{MOVED[sys.argv[1]][1]}`; "
              "this alias goes in the next release", file=sys.stderr, flush=True)
    sys.exit(dispatch("python -m export", "CloudTune export: ONNX and TensorRT exports, the catalog index, the repository's configs and artifacts", COMMANDS))
