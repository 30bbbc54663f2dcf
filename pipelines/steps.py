"""The pipeline's steps: each calls the project's CLIs (or their functions) for one run, idempotently.

`python -m pipelines step <name> --run-id ID` runs one; the Airflow DAG (pipelines/dags/) runs them in
the order of pipelines.plan.STEPS. Artifacts of a run live under <work_root>/runs/<run_id>/; tokens and
training views are shared across runs because they depend only on the audio and the tokenizer.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.cli import run_module
from common.metrics_db import connect, ensure_run, mark_published, run_query
from common.metrics_target import MetricsTarget
from common.yaml_config import load_yaml, save_yaml
from pipelines.run_state import RunContext, StepFailed
from serving.catalog_index import sha256_file
from training.token_files import list_track_ids


def run_cli(module: str, argv: list[str]) -> None:
    print(f"$ python -m {module} {' '.join(argv)}", flush=True)
    if run_module(module, argv) != 0:
        raise StepFailed(f"python -m {module} failed")


def _target(ctx: RunContext) -> MetricsTarget:
    return MetricsTarget(ctx.settings.metrics_db, ctx.run_id)


def _evaluation_scope(ctx: RunContext) -> dict[str, str]:
    from training.evaluate import QUERY_ALIGNMENT

    e = ctx.settings.evaluate
    return {"split": e.split, "protocol": e.protocol, "query_alignment": QUERY_ALIGNMENT}


def last_published(ctx: RunContext) -> tuple[str, float, int] | None:
    """(run id, pooled recall@1, served version) of the newest published run, from the metrics database."""
    _, rows = run_query(connect(ctx.settings.metrics_db), "last_published_recall", run_id=ctx.run_id, **_evaluation_scope(ctx))
    return rows[0] if rows else None


def tokenize(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    ensure_run(connect(s.metrics_db), ctx.run_id, mode=ctx.params.mode)
    run_cli("training.tokenize", ["--input-root", s.audio_root, "--output-root", str(s.tokens_root), *s.moss_argv()])
    tracks = list_track_ids(s.tokens_root)
    if not tracks:
        raise StepFailed(f"no tokenized tracks under {s.tokens_root}: is {s.audio_root} empty?")
    return {"tracks": len(tracks)}


def splits(ctx: RunContext) -> dict[str, Any]:
    sp = ctx.settings.splits
    run_cli("training.splits", ["--tokens-root", str(ctx.settings.tokens_root), "--output-root", str(ctx.splits_dir), "--method", "hash",
                             "--val-ratio", str(sp.val_ratio), "--test-ratio", str(sp.test_ratio), "--seed", str(sp.seed)])
    return json.loads((ctx.splits_dir / "summary.json").read_text(encoding="utf-8"))


def train(ctx: RunContext) -> dict[str, Any]:
    from training.train import TrainConfig

    s, p = ctx.settings, ctx.params
    ctx.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if p.mode == "reuse":
        source = Path(p.checkpoint) if p.checkpoint else None
        if source is None:
            reference = last_published(ctx)
            if reference is None:
                raise StepFailed("mode 'reuse' without a checkpoint needs a published run to reuse; none is recorded")
            source = s.run_dir(reference[0]) / "checkpoints" / "best.pt"
        if not source.is_file():
            raise StepFailed(f"the checkpoint to reuse, {source}, does not exist")
        shutil.copy2(source, ctx.checkpoint)
        ensure_run(connect(s.metrics_db), ctx.run_id, checkpoint=str(source))
        return {"mode": "reuse", "checkpoint": str(source)}
    cfg = load_yaml(TrainConfig, s.train_config)
    cfg.output_dir, cfg.data.views_root = str(ctx.checkpoint.parent), str(s.views_root)
    cfg.data.splits_root, cfg.data.tokens_root = str(ctx.splits_dir), str(s.tokens_root)
    cfg.data.tokenizer, cfg.data.audio_root = s.tokenizer(), s.audio_root
    cfg.views.per_track, cfg.seed = s.views_per_track, s.splits.seed
    epochs = p.epochs or s.epochs
    if epochs is not None:
        cfg.optim.epochs = epochs
    save_yaml(cfg, ctx.run_dir / "train.yaml")
    run_cli("training.views", ["--config", str(ctx.run_dir / "train.yaml"), "--device", s.device])
    last = ctx.checkpoint.parent / "last.pt"  # a task restarted mid-training continues where it stopped
    run_cli("training.train", ["--config", str(ctx.run_dir / "train.yaml"), "--device", s.device, *(["--resume", str(last)] if last.is_file() else [])])
    return {"mode": "train", "checkpoint": str(ctx.checkpoint), "epochs": cfg.optim.epochs}


def evaluate(ctx: RunContext) -> dict[str, Any]:
    s, e = ctx.settings, ctx.settings.evaluate
    report = ctx.run_dir / "quality.json"
    run_cli("training.evaluate", [
        "--checkpoint", str(ctx.checkpoint), "--split", e.split, "--output-json", str(report),
        "--tokens-root", str(s.tokens_root), "--splits-root", str(ctx.splits_dir), "--audio-root", s.audio_root,
        "--protocol", e.protocol, "--query-seconds", *map(str, e.query_seconds),
        "--conditions", *e.conditions, "--seed", str(e.seed), *(["--max-tracks", str(e.max_tracks)] if e.max_tracks else []),
        *s.moss_argv(), "--db", s.metrics_db, "--run-id", ctx.run_id,
    ])
    result = json.loads(report.read_text(encoding="utf-8"))
    return {"recall@1": result["recall@1"], "queries": result["queries"], "report": str(report)}


def gate(ctx: RunContext) -> dict[str, Any]:
    """Fails the run when its recall@1 falls below the floor set by the last published run."""
    g = ctx.settings.gate
    recall = json.loads((ctx.run_dir / "quality.json").read_text(encoding="utf-8"))["recall@1"]
    reference = last_published(ctx)
    floor = max(g.min_recall, reference[1] - g.max_recall_drop) if reference else g.min_recall
    decision = {"recall@1": recall, "floor": floor, "reference_run": reference[0] if reference else None,
                "reference_recall@1": reference[1] if reference else None, "passed": recall >= floor}
    (ctx.run_dir / "gate.json").write_text(json.dumps(decision, indent=1), encoding="utf-8")
    ensure_run(connect(ctx.settings.metrics_db), ctx.run_id, status="gate_passed" if decision["passed"] else "gate_failed",
               note=f"gate: recall@1 {recall:.4f} vs floor {floor:.4f}")
    if not decision["passed"]:
        raise StepFailed(f"quality gate: recall@1 {recall:.4f} is below the floor {floor:.4f} "
                         f"(last published run {decision['reference_run']}: {decision['reference_recall@1']:.4f}, "
                         f"allowed drop {g.max_recall_drop}); nothing is published")
    return decision


def export(ctx: RunContext) -> dict[str, Any]:
    run_cli("export.embedder_onnx", ["--checkpoint", str(ctx.checkpoint), "--output", str(ctx.embedder_onnx),
                                  "--n-quantizers", str(ctx.settings.n_quantizers)])
    return {"embedder_onnx": str(ctx.embedder_onnx), "sha256": sha256_file(ctx.embedder_onnx)}


def index(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    run_cli("export.index", ["--checkpoint", str(ctx.checkpoint), "--embedder-onnx", str(ctx.embedder_onnx), "--tokens-root", str(s.tokens_root),
                          "--output", str(ctx.index_dir), "--n-quantizers", str(s.n_quantizers), "--db", s.metrics_db, "--run-id", ctx.run_id])
    manifest = json.loads((ctx.index_dir / "manifest.json").read_text(encoding="utf-8"))
    return {"index": str(ctx.index_dir), "tracks": manifest["n_tracks"], "vectors": manifest["n_vectors"]}


def publish(ctx: RunContext) -> dict[str, Any]:
    from serving.publish_index import ModelFolder, PublishError, TritonAdmin, publish as publish_catalog, publish_lock, read_admin_key
    from pipelines.embedder_swap import restore_embedder, swap_embedder

    sv = ctx.settings.serving
    repository = Path(sv.model_repository)
    try:
        triton = TritonAdmin(sv.http_url, sv.admin_header, read_admin_key(Path(sv.admin_key_file)), sv.load_timeout_s)
        triton.check_admin()
        backup = ctx.run_dir / "previous_embedder"
        swapped = swap_embedder(triton, repository, ctx.embedder_onnx, ctx.checkpoint, backup)
        try:
            model = ModelFolder.from_server(triton, repository, "faiss_topk")
            with publish_lock(model.path):
                result = publish_catalog(triton, model, ctx.index_dir, sv.keep_versions)
        except PublishError:
            if swapped:
                restore_embedder(triton, repository, backup)
            raise
    except PublishError as error:
        raise StepFailed(str(error)) from error
    mark_published(connect(ctx.settings.metrics_db), ctx.run_id, result["version"])
    return {**result, "embedder_swapped": swapped}


def smoke(ctx: RunContext) -> dict[str, Any]:
    from pipelines.smoke import smoke_queries

    published = ctx.done("publish")
    if published is None:
        raise StepFailed("smoke needs the publish step of this run to have succeeded")
    return smoke_queries(ctx.settings, _target(ctx), ctx.index_dir, int(published["version"]))


STEP_FUNCTIONS: dict[str, Callable[[RunContext], dict[str, Any]]] = {
    "tokenize": tokenize, "splits": splits, "train": train, "evaluate": evaluate, "gate": gate,
    "export": export, "index": index, "publish": publish, "smoke": smoke,
}


def run_step(ctx: RunContext, step: str) -> dict[str, Any]:
    """The step's outputs: recorded ones if it already succeeded in this run, else fresh ones."""
    recorded = ctx.done(step)
    if recorded is not None:
        print(f"step {step} of run {ctx.run_id} already done: {json.dumps(recorded)}")
        return recorded
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    outputs = STEP_FUNCTIONS[step](ctx)
    ctx.mark_done(step, outputs)
    print(json.dumps({"step": step, "run_id": ctx.run_id, **outputs}, default=str))
    return outputs
