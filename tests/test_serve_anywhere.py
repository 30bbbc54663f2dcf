"""A model repository in any folder: `export publish` lays it out, `serving serve` serves it and `client search`
answers from it, each run as a user runs it (its own process, working folder outside the project). The
embedded server finds the Python environment itself; a repository holds none, and a server given an unusable
environment says what is missing before tritonserver starts."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import soundfile as sf

from common.paths import REPO_ROOT
from common.windowing import SAMPLE_RATE
from export.repo_configs import load_serving_config
from serving.triton_runtime import free_ports


def cli(cwd: Path, package: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", package, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def publish(folder: Path, artifacts: Any, repository: Path) -> None:
    published = cli(folder, "export", "publish", "--model-repository", str(repository), "--moss-onnx", str(artifacts.moss_onnx),
                    "--embedder-onnx", str(artifacts.embedder_onnx), "--index", str(artifacts.catalog_dir))
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["repository"] == str(repository)


def test_publish_serve_and_search_a_repository_outside_the_project(tmp_path: Path, serving_artifacts: Any) -> None:
    # A release folder of its own: no environment next to it, none two levels up.
    repository = tmp_path / "releases" / "2026-12-01"
    assert REPO_ROOT not in repository.parents
    publish(tmp_path, serving_artifacts, repository)
    assert {p.name for p in repository.iterdir()} == {model.name for model in load_serving_config().models}
    query = tmp_path / "query.wav"
    sf.write(query, serving_artifacts.track_audio["track-09"][: 8 * SAMPLE_RATE], SAMPLE_RATE)
    http, grpc, metrics = free_ports(3)
    command = [sys.executable, "-m", "serving", "serve", "--model-repository", str(repository), "--http-port", str(http),
               "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--log-file", str(tmp_path / "serve.log"),
               "--startup-timeout", "180"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as server:
        try:
            # serve exits by itself after --startup-timeout, so this loop ends.
            output = []
            while not (output and output[-1].startswith("ready")) and (line := server.stdout.readline()):
                output.append(line.strip())
            assert output and output[-1].startswith("ready"), "\n".join(output)
            assert all(f"{name:<16} version 1   READY" in "\n".join(output) for name in ("audio_search", "faiss_topk")), output
            found = cli(tmp_path, "client", "search", str(query), "--url", f"127.0.0.1:{grpc}", "--top-k", "3", "--json", timeout=120)
            assert found.returncode == 0, found.stderr
            assert [hit["track_id"] for hit in json.loads(found.stdout)][0] == "track-09"
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    assert server.returncode == 0


def test_serve_names_what_the_python_environment_lacks_before_starting(tmp_path: Path, serving_artifacts: Any) -> None:
    repository = tmp_path / "repository"
    publish(tmp_path, serving_artifacts, repository)
    bare = tmp_path / "bare-env"
    venv.create(bare, with_pip=False)  # bin/activate and a python, but neither NumPy nor this project
    not_a_venv = tmp_path / "plain-folder"
    not_a_venv.mkdir()
    cases = {
        tmp_path / "missing-env": "does not exist",
        not_a_venv: f"no virtual environment: the Python backend activates it with {not_a_venv / 'bin' / 'activate'}, which is missing",
        bare: f"the Python environment {bare} lacks numpy, serving, common, which the repository's models import",
    }
    for environment, reason in cases.items():
        log = tmp_path / f"{environment.name}.log"
        served = cli(tmp_path, "serving", "serve", "--model-repository", str(repository), "--http-port", "0", "--grpc-port", "0",
                     "--metrics-port", "0", "--log-file", str(log), "--python-env", str(environment), timeout=120)
        assert served.returncode == 1, served.stdout
        error = served.stdout.strip().splitlines()[-1]
        assert error.startswith("error: ") and reason in error and "make setup" in error, served.stdout
        assert not log.exists(), "tritonserver was started"


def test_the_old_export_serve_forwards_to_serving_with_a_note(tmp_path: Path) -> None:
    served = cli(tmp_path, "export", "serve", "--model-repository", str(tmp_path), "--http-port", "0", "--grpc-port", "0",
                 "--metrics-port", "0", "--log-file", str(tmp_path / "serve.log"), "--python-env", str(tmp_path / "missing-env"))
    assert served.returncode == 1, served.stdout
    assert "`python -m export serve` is now `python -m serving serve`" in served.stderr
    assert "does not exist" in served.stdout.strip().splitlines()[-1]
