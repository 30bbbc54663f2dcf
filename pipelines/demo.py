"""`python -m pipelines demo` (make pipeline): the catalog refresh end to end on this machine.

Generated audio -> bootstrap (the first published repository) -> the embedded tritonserver with
explicit model control and a restricted repository API -> new audio arrives -> DAG run 1 reuses the
published embedder and publishes a bigger catalog -> DAG run 2 is fed a collapsed embedder and the
quality gate blocks it -> the run-metrics report (tables with run-over-run deltas, a PNG).

Why a collapsed embedder and not a briefly trained one: a collapse (every input maps to one point) is a
failure the gate must stop whatever the tokenizer, while how much worse a briefly trained embedder is
depends on how much the tokenizer's codes carry (nothing, with the tiny RANDOM-weight fallback).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.cli import run_module
from common.yaml_config import save_yaml
from pipelines.airflow_run import DEFAULT_AIRFLOW, DagRunResult, dag_test
from pipelines.plan import RunParams
from pipelines.settings import PipelineSettings, load_settings
from serving.triton_runtime import EmbeddedTriton


def write_admin_key(path: Path) -> str:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(36), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def synth_audio(settings: PipelineSettings, tracks: int, seconds: float) -> None:
    """The catalog's audio folder holds ``tracks`` generated tracks (only missing ones are rendered)."""
    if run_module("training.synth", ["--out", settings.audio_root, "--tracks", str(tracks), "--seconds", str(seconds), "--seed", "11"]) != 0:
        raise SystemExit("synth failed")


def collapsed_checkpoint(source: Path, target: Path) -> Path:
    """``source`` with its head's weights zeroed: every input maps to one point, the failure of a collapsed
    contrastive training, which the quality gate exists to stop."""
    import torch

    state = torch.load(source, map_location="cpu", weights_only=False)
    state["model"]["head.weight"].zero_()
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return target


@contextmanager
def served(settings: PipelineSettings, log_path: Path) -> Iterator[tuple[EmbeddedTriton, Path]]:
    """The embedded server on the settings' repository, and a copy of the settings pointing at it."""
    sv = settings.serving
    key = write_admin_key(Path(sv.admin_key_file))
    args = ["--model-control-mode=explicit", "--load-model=*", f"--http-restricted-api=model-repository:{sv.admin_header}={key}"]
    with EmbeddedTriton(sv.model_repository, extra_args=args, log_path=log_path) as server:
        live = dataclasses.replace(settings, serving=dataclasses.replace(sv, http_url=f"http://{server.http_url}", grpc_url=server.grpc_url))
        config = Path(settings.work_root) / "pipeline.served.yaml"
        save_yaml(live, config)
        yield server, config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("configs/pipeline.yaml"))
    parser.add_argument("--airflow", type=Path, default=DEFAULT_AIRFLOW)
    parser.add_argument("--tracks", type=int, default=60, help="generated tracks before the bootstrap")
    parser.add_argument("--new-tracks", type=int, default=12, help="tracks that arrive before the first DAG run")
    parser.add_argument("--seconds", type=float, default=12.0)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    work = Path(settings.work_root)
    synth_audio(settings, args.tracks, args.seconds)
    if run_module("pipelines.bootstrap", ["--config", str(args.config)]) != 0:
        raise SystemExit("bootstrap failed")
    synth_audio(settings, args.tracks + args.new_tracks, args.seconds)
    runs: list[tuple[str, DagRunResult]] = []
    worse = collapsed_checkpoint(settings.run_dir("bootstrap") / "checkpoints" / "best.pt", work / "collapsed.pt")
    with served(settings, work / "tritonserver.log") as (_, config):
        if run_module("pipelines.step", ["smoke", "--run-id", "bootstrap", "--config", str(config)]) != 0:
            raise SystemExit("the bootstrap repository does not answer queries")
        for label, params in (("reuse the published embedder, bigger catalog", RunParams("reuse")),
                              ("a collapsed embedder", RunParams("reuse", checkpoint=str(worse)))):
            print(f"== DAG run: {label}", flush=True)
            runs.append((label, dag_test(args.airflow, work / "airflow", config, params, work / "airflow" / f"dags-test-{len(runs) + 1}.log")))
    report = run_module("benchmarks.report", ["--db", settings.metrics_db, "--png", str(work / "run_metrics.png")])
    summary = [{"run": label, "run_id": r.run_id, "state": r.state, "log": str(r.log)} for label, r in runs]
    print(json.dumps(summary, indent=1))
    expected = ["success", "failed"]
    return 0 if [r.state for _, r in runs] == expected and report == 0 else 1
