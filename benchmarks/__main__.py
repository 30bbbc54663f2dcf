import sys

from common.cli import Command, dispatch

COMMANDS = {
    "perf": Command("benchmarks.perf", "run perf_analyzer on a served model and summarise it (--suite cpu: make bench)"),
    "ann": Command("benchmarks.ann", "exact vs approximate FAISS indexes on synthetic catalogs"),
    "soak": Command("benchmarks.soak", "steady open-loop load on a running server: failures, latency, server memory"),
    "faults": Command("benchmarks.faults", "malformed-request barrage, then check the server still answers correctly"),
    "kill-stub": Command("benchmarks.stub_kill", "kill a Python-backend stub under load and record what Triton does"),
    "milvus-agreement": Command("benchmarks.milvus_agreement", "top-1 agreement of the Milvus catalog with FAISS through the served ensemble, on test-track queries"),
    "waterfall": Command("benchmarks.waterfall", "one query at a time on a running server: its latency split by ensemble step (queue, compute) from Triton's statistics"),
    "gpu": Command("benchmarks.gpu", "GPU encoder / top-K / end-to-end benchmark (run on a GPU machine)"),
    "report": Command("benchmarks.report", "run-over-run trend tables and a PNG from the run-metrics database (--db URL)"),
    "check-libs": Command("benchmarks.check_libs", "check that tritonserver and perf_analyzer resolve every shared library"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m benchmarks", "CloudTune benchmarks", COMMANDS))
