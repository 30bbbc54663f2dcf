"""`python -m pipelines bootstrap`: the first served repository, before any server runs.

The DAG publishes into a running Triton; something has to be running first. Bootstrap runs the same
steps as a DAG run (without the gate: nothing is published yet to compare with), lays out a complete
repository at the settings' serving.model_repository with the MOSS encoder exported from the settings'
tokenizer, and records the run as published version 1 (its `smoke` step can run once a server is up).
Idempotent like the steps it runs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.metrics_db import connect, mark_published
from pipelines.step import add_run_arguments, run_context

STEPS = ("tokenize", "splits", "train", "evaluate", "export", "index")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", default="bootstrap")
    add_run_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from export.repo_layout import lay_out_repository
    from pipelines.steps import run_cli, run_step

    ctx = run_context(args)
    repository = Path(ctx.settings.serving.model_repository)
    if repository.name != "model_repository":
        raise SystemExit(f"serving.model_repository must end in a folder named model_repository, got {repository}")
    if (repository / "faiss_topk").exists():
        print(f"{repository} exists: nothing to bootstrap")
        return 0
    for step in STEPS:
        run_step(ctx, step)
    moss_onnx = Path(ctx.settings.work_root) / f"moss_encoder-{ctx.settings.tokenizer_tag}.onnx"
    if not moss_onnx.is_file():
        run_cli("export.moss_onnx", ["--moss-config", ctx.settings.tokenizer(), "--output", str(moss_onnx),
                                  "--n-quantizers", str(ctx.settings.n_quantizers)])
    lay_out_repository(repository.parent, moss_onnx=moss_onnx, embedder_onnx=ctx.embedder_onnx, catalog_dir=ctx.index_dir)
    mark_published(connect(ctx.settings.metrics_db), ctx.run_id, 1)
    ctx.mark_done("publish", {"model": "faiss_topk", "version": 1, "offline": True})  # so its smoke step can run once served
    print(json.dumps({"repository": str(repository), "run_id": ctx.run_id, "published_version": 1}))
    return 0
