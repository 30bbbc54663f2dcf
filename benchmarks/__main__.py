import sys

from common.cli import Command, dispatch

COMMANDS = {
    "perf": Command("benchmarks.perf", "run perf_analyzer on a served model and summarise it"),
    "ann": Command("benchmarks.ann", "exact vs approximate FAISS indexes on synthetic catalogs"),
    "gpu": Command("benchmarks.gpu", "GPU encoder / top-K / end-to-end benchmark (run on a GPU machine)"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m benchmarks", "CloudTune benchmarks", COMMANDS))
