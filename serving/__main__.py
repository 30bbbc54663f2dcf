import sys

from common.cli import Command, dispatch

COMMANDS = {
    "serve": Command("serving.serve", "start the embedded tritonserver (CPU) on model_repository/"),
    "publish-index": Command("serving.publish_index", "publish a new catalog index version into a running server without downtime"),
    "milvus-lite": Command("serving.milvus_lite_server", "serve a Milvus Lite catalog folder on a loopback port (catalog backend milvus)"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m serving", "CloudTune serving: the embedded Triton server and index publishing", COMMANDS))
