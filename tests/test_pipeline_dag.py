"""The catalog-refresh DAG run by `airflow dags test` against the real embedded tritonserver.

Bootstrap publishes version 1; new audio arrives; DAG run 1 reuses the published embedder and publishes
the bigger catalog through the repository API; DAG run 2 is fed a collapsed embedder and the gate blocks it.
Then: steps are idempotent on rerun, a new embedder is swapped in with its catalog, the report shows the runs.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from common.cli import run_module
from common.metrics_db import connect, run_query
from common.yaml_config import save_yaml
from pipelines.airflow_run import DAG_ID, DEFAULT_AIRFLOW, DagRunResult, airflow_environment, dag_test, ensure_metadata_db
from pipelines.demo import collapsed_checkpoint, served, synth_audio
from pipelines.embedder_swap import deployed_embedder_sha256
from pipelines.plan import STEPS, RunParams
from pipelines.settings import PipelineSettings, load_settings
from serving.catalog_index import load_catalog, sha256_file
from serving.publish_index import versions
from serving.triton_runtime import EmbeddedTriton
from training.audio_io import SAMPLE_RATE, load_audio

pytestmark = pytest.mark.slow
TRACKS, NEW_TRACKS, SECONDS = 40, 8, 10.0

needs_airflow = pytest.mark.skipif(not DEFAULT_AIRFLOW.is_file(), reason="Airflow's environment is missing: make airflow-setup")


@dataclass
class Refresh:
    settings: PipelineSettings
    config: Path
    server: EmbeddedTriton
    first: DagRunResult
    worse: DagRunResult
    versions_after_first: list[int]
    sha_after_first: str

    @property
    def repository(self) -> Path:
        return Path(self.settings.serving.model_repository)

    def run_dir(self, result: DagRunResult) -> Path:
        assert result.run_id is not None
        return self.settings.run_dir(result.run_id)

    def search_top1(self, track_id: str) -> str:
        """The served top-1 for a track's opening 5 s: these tests check what is served (versions, swaps,
        gates), and the tiny RANDOM tokenizer they run reproduces a catalog window's codes only where the
        query starts where the window does (queries at random offsets are the evaluation's and the smoke
        step's job, with a trained tokenizer)."""
        from client import AudioSearchClient

        audio = load_audio(Path(self.settings.audio_root) / f"{track_id}.wav")[: 5 * SAMPLE_RATE]
        with AudioSearchClient(self.server.grpc_url, protocol="grpc") as client:
            return client.search(audio, top_k=3)[0][0]


def tiny_settings(root: Path) -> PipelineSettings:
    settings = load_settings("configs/pipeline.yaml")
    serving = dataclasses.replace(settings.serving, model_repository=str(root / "model_repository"), admin_key_file=str(root / "secrets" / "key"))
    # The tests keep the tiny random tokenizer (the trained one tokenizes ~10x slower on CI's CPUs), whose
    # codes carry no audio: its smoke queries at random offsets hit at chance, so no minimum hit rate here.
    smoke = dataclasses.replace(settings.smoke, min_top1_rate=0.0)
    return dataclasses.replace(settings, moss_config="tiny", work_root=str(root), audio_root=str(root / "incoming"), epochs=6,
                               metrics_db=f"sqlite:///{root / 'metrics.sqlite'}", serving=serving, smoke=smoke)


@pytest.fixture(scope="module")
def refresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refresh]:
    if not DEFAULT_AIRFLOW.is_file():
        pytest.skip("Airflow's environment is missing: make airflow-setup")
    root = tmp_path_factory.mktemp("pipeline")
    settings = tiny_settings(root)
    save_yaml(settings, root / "pipeline.yaml")
    synth_audio(settings, TRACKS, SECONDS)
    assert run_module("pipelines.bootstrap", ["--config", str(root / "pipeline.yaml")]) == 0
    synth_audio(settings, TRACKS + NEW_TRACKS, SECONDS)
    with served(settings, root / "tritonserver.log") as (server, config):
        assert run_module("pipelines.step", ["smoke", "--run-id", "bootstrap", "--config", str(config)]) == 0
        first = dag_test(DEFAULT_AIRFLOW, root / "airflow", config, RunParams("reuse"), root / "dag-1.log")
        repository = Path(settings.serving.model_repository)
        after_first = versions(repository / "faiss_topk")
        sha = deployed_embedder_sha256(repository)
        collapsed = collapsed_checkpoint(settings.run_dir("bootstrap") / "checkpoints" / "best.pt", root / "collapsed.pt")
        worse = dag_test(DEFAULT_AIRFLOW, root / "airflow", config, RunParams("reuse", checkpoint=str(collapsed)), root / "dag-2.log")
        yield Refresh(load_settings(config), config, server, first, worse, after_first, sha)


@needs_airflow
def test_dag_has_the_plans_tasks(tmp_path: Path) -> None:
    env = airflow_environment(tmp_path / "airflow", Path("configs/pipeline.yaml"))
    ensure_metadata_db(DEFAULT_AIRFLOW, env)
    listed = subprocess.run([str(DEFAULT_AIRFLOW), "tasks", "list", DAG_ID], env=env, capture_output=True, text=True, check=True)
    assert listed.stdout.split()[-len(STEPS):] == sorted(STEPS)


def test_dag_run_publishes_a_catalog_version_that_answers_queries(refresh: Refresh) -> None:
    assert (refresh.first.returncode, refresh.first.state) == (0, "success"), refresh.first.log.read_text()[-3000:]
    assert refresh.versions_after_first == [1, 2]
    published = json.loads((refresh.run_dir(refresh.first) / "steps" / "publish.json").read_text())
    assert published["version"] == 2 and published["embedder_swapped"] is False  # reuse: the served embedder
    served_catalog = load_catalog(refresh.repository / "faiss_topk" / "2" / "index")
    assert len(served_catalog.track_ids) == TRACKS + NEW_TRACKS
    new_track = f"track_{TRACKS + NEW_TRACKS - 1:05d}"  # arrived after the bootstrap: only version 2 has it
    assert new_track not in load_catalog(refresh.repository / "faiss_topk" / "1" / "index").track_ids
    assert refresh.search_top1(new_track) == new_track
    smoke = json.loads((refresh.run_dir(refresh.first) / "steps" / "smoke.json").read_text())
    assert smoke["version"] == 2 and smoke["queries"] == refresh.settings.smoke.queries and smoke["p95_ms"] > 0
    tokenize = json.loads((refresh.run_dir(refresh.first) / "steps" / "tokenize.json").read_text())
    assert tokenize["tracks"] == TRACKS + NEW_TRACKS


def test_quality_gate_blocks_a_worse_checkpoint(refresh: Refresh) -> None:
    assert refresh.worse.state == "failed" and refresh.worse.returncode != 0
    run_dir = refresh.run_dir(refresh.worse)
    decision = json.loads((run_dir / "gate.json").read_text())
    reference = json.loads((refresh.run_dir(refresh.first) / "quality.json").read_text())["recall@1"]
    assert decision["passed"] is False and decision["reference_run"] == refresh.first.run_id
    assert decision["recall@1"] < decision["floor"] == pytest.approx(reference - refresh.settings.gate.max_recall_drop)
    assert (run_dir / "checkpoints" / "best.pt").is_file()  # it ran up to the gate...
    assert not (run_dir / "steps" / "gate.json").exists() and not (run_dir / "index").exists()  # ...and stopped at the gate
    assert versions(refresh.repository / "faiss_topk") == refresh.versions_after_first
    assert deployed_embedder_sha256(refresh.repository) == refresh.sha_after_first
    assert refresh.server.is_ready()
    _, runs = run_query(connect(refresh.settings.metrics_db), "run_summary")
    assert [(run, status) for run, status, *_ in runs] == [("bootstrap", "published"), (refresh.first.run_id, "published"),
                                                          (refresh.worse.run_id, "gate_failed")]


def test_a_rerun_step_reuses_its_finished_work(refresh: Refresh, capsys: pytest.CaptureFixture[str]) -> None:
    engine = connect(refresh.settings.metrics_db)
    builds_before = run_query(engine, "index_trend")[1]
    for step in ("index", "publish"):
        assert run_module("pipelines.step", [step, "--run-id", str(refresh.first.run_id), "--config", str(refresh.config), "--mode", "reuse"]) == 0
        assert f"step {step} of run {refresh.first.run_id} already done" in capsys.readouterr().out
    assert run_query(engine, "index_trend")[1] == builds_before
    assert versions(refresh.repository / "faiss_topk") == refresh.versions_after_first


def test_a_new_embedder_is_served_with_its_catalog(refresh: Refresh) -> None:
    """Publishing a run with its own embedder swaps token_embedder, then loads the matching catalog."""
    run = ["--run-id", "swap", "--config", str(refresh.config), "--mode", "train", "--epochs", "1"]
    for step in ("tokenize", "splits", "train", "export", "index", "publish"):  # no gate: an operator's forced publish
        assert run_module("pipelines.step", [step, *run]) == 0, step
    exported = refresh.settings.run_dir("swap") / "onnx" / "token_embedder.onnx"
    assert deployed_embedder_sha256(refresh.repository) == sha256_file(exported) != refresh.sha_after_first
    assert versions(refresh.repository / "faiss_topk")[-1] == 3
    catalog = load_catalog(refresh.repository / "faiss_topk" / "3" / "index", expected_embedder_sha256=sha256_file(exported))
    assert refresh.search_top1(catalog.track_ids[-1]) in catalog.track_ids


def test_a_failed_publish_puts_the_previous_embedder_back(refresh: Refresh) -> None:
    """The new embedder goes in first; when its catalog is then refused, the old embedder is reloaded."""
    served_sha = deployed_embedder_sha256(refresh.repository)
    served_versions = versions(refresh.repository / "faiss_topk")
    bootstrap = refresh.settings.run_dir("bootstrap") / "checkpoints" / "best.pt"
    run = ["--run-id", "broken", "--config", str(refresh.config), "--mode", "reuse", "--checkpoint", str(bootstrap)]
    for step in ("tokenize", "splits", "train", "export", "index"):
        assert run_module("pipelines.step", [step, *run]) == 0, step
    with open(refresh.settings.run_dir("broken") / "index" / "tracks.json", "ab") as handle:
        handle.write(b" ")  # no longer the file its manifest's checksum describes
    assert run_module("pipelines.step", ["publish", *run]) == 3
    assert deployed_embedder_sha256(refresh.repository) == served_sha != sha256_file(refresh.settings.run_dir("broken") / "onnx" / "token_embedder.onnx")
    assert versions(refresh.repository / "faiss_topk") == served_versions
    assert not (refresh.settings.run_dir("broken") / "steps" / "publish.json").exists()
    assert refresh.server.is_ready()
    catalog = load_catalog(refresh.repository / "faiss_topk" / str(served_versions[-1]) / "index", expected_embedder_sha256=served_sha)
    assert refresh.search_top1(catalog.track_ids[0]) in catalog.track_ids  # the server answers with the restored pair


def test_report_shows_the_runs_with_deltas(refresh: Refresh, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "runs.png"
    assert run_module("benchmarks.report", ["--db", refresh.settings.metrics_db, "--png", str(png), "--json", str(tmp_path / "t.json")]) == 0
    tables = json.loads((tmp_path / "t.json").read_text())
    quality = tables["quality_trend"]
    runs = [row[0] for row in quality["rows"]]
    assert runs[:3] == ["bootstrap", refresh.first.run_id, refresh.worse.run_id]
    delta = quality["columns"].index("recall_at_1_delta")
    recall = quality["columns"].index("recall_at_1")
    rows = quality["rows"]
    assert rows[0][delta] is None
    assert rows[2][delta] == pytest.approx(rows[2][recall] - rows[1][recall]) and rows[2][delta] < 0
    latency = tables["latency_trend"]["rows"]
    assert [row[0] for row in latency if row[1] == "smoke"][:2] == ["bootstrap", refresh.first.run_id]
    assert png.stat().st_size > 10_000
    assert "== quality_trend" in capsys.readouterr().out
    assert np.isfinite(rows[1][recall])
