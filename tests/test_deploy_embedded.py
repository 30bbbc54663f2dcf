"""The GPU node's server settings on the embedded CPU tritonserver (Triton 2.51.0, the release of the image).

One server runs the whole audio_search stack (ONNX stand-ins of tests/triton_stand_ins.py, a small catalog)
with the arguments of docker-compose.yml's `triton` command plus what deploy/triton-serve.sh adds from
secrets made by deploy/make_secrets.sh: explicit model control, restricted admin APIs, gRPC over TLS.
On it: admin calls need the header (HTTP and gRPC), gRPC needs TLS, inference stays open, the publisher
rolls catalogs in and back without a failed query, and the bench tools and dashboard fit the server.
In front of it, as compose runs them: the search API with the `api` service's arguments (TLS to Triton, the
generated keys file) and deploy/grpc-proxy.conf on Debian's nginx (inference RPCs only).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from api_stack import ApiServer, call as api_call, launch_api, search as api_search
from deploy_helpers import DEPLOY, REPO, flag_pairs, make_secrets, run_script, service, wrapper_args
from triton_stand_ins import build_embedder_stand_in, build_moss_stand_in
from tritonclient.utils import InferenceServerException

from common.cli import run_module
from export.repo_configs import load_serving_config
from export.repo_layout import lay_out_repository
from serving.catalog_index import build_index, sha256_file, write_catalog
from serving.publish_index import prune, versions
from serving.triton_runtime import EmbeddedTriton, free_ports

sys.path.insert(0, str(DEPLOY))
import bench_audio  # noqa: E402  (deploy/ is not a package: it is mounted into the bench containers)

# EmbeddedTriton picks the repository and free ports itself.
OWN_FLAGS = {"model-repository", "http-port", "grpc-port", "metrics-port"}
TRACKS = 12


@dataclass
class Node:
    server: EmbeddedTriton
    repository: Path
    root: Path
    secrets: Path
    header: str
    key: str

    @property
    def http(self) -> str:
        return f"http://{self.server.http_url}"

    def grpc(self, **options: object) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.server.grpc_url, ssl=True, root_certificates=str(self.secrets / "grpc_root_cert"), **options)


def compose_server_args() -> list[str]:
    """The `triton` service's tritonserver arguments, its internal metrics address replaced by loopback."""
    args = []
    for key, value in flag_pairs(service("triton")["command"][1:]):
        if key not in OWN_FLAGS:
            args.append(f"--{key}={'127.0.0.1' if key == 'metrics-address' else value}")
    return args


def make_catalog(path: Path, prefix: str, embedder_sha256: str, dim: int, seed: int) -> Path:
    vectors = np.random.default_rng(seed).standard_normal((2 * TRACKS, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = [{"track_id": f"{prefix}{i:02d}"} for i in range(TRACKS)]
    write_catalog(path, build_index(vectors), np.repeat(np.arange(TRACKS), 2), tracks, embedder_sha256, "flat")
    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("gpu-node")
    config = load_serving_config()
    n_quantizers = config.model("token_embedder").inputs[0].dims[0]
    dim = config.model("token_embedder").outputs[0].dims[-1]
    moss = build_moss_stand_in(root / "moss.onnx", n_quantizers)
    embedder = build_embedder_stand_in(root / "embedder.onnx", n_quantizers, dim)
    sha = sha256_file(embedder)
    for prefix, seed in (("a", 0), ("b", 1), ("c", 2)):
        make_catalog(root / f"catalog-{prefix}", prefix, sha, dim, seed)
    make_catalog(root / "catalog-other-embedder", "x", "0" * 64, dim, 3)
    repository = lay_out_repository(root, moss_onnx=moss, embedder_onnx=embedder, catalog_dir=root / "catalog-a")
    secrets = make_secrets(root / "secrets")
    wrapper = wrapper_args(secrets, root)
    assert wrapper.returncode == 0, wrapper.stderr
    security_args = wrapper.stdout.splitlines()[1:]  # after the caller's own argument
    server = EmbeddedTriton(repository, extra_args=[*compose_server_args(), *security_args], log_path=root / "triton.log")
    with server:
        yield Node(server, repository, root, secrets, service("triton")["environment"]["TRITON_ADMIN_HEADER"],
                   (secrets / "triton_admin_key").read_text(encoding="utf-8"))


def call(node: Node, method: str, path: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One HTTP call; ``body`` is sent as JSON unless it is bytes already."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{node.http}{path}", data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def search(node: Node, seconds: float = 3.0) -> tuple[int, list[str]]:
    """audio_search over HTTP with the bench tools' binary request (also checks that encoding)."""
    status, text = call(node, "POST", "/v2/models/audio_search/infer", *bench_audio.binary_infer_request(bench_audio.query_audio(seconds, seed=7)))
    if status != 200:
        return status, []
    return status, next(output["data"] for output in json.loads(text)["outputs"] if output["name"] == "TRACK_IDS")


def test_http_admin_calls_need_the_header_and_inference_does_not(node: Node) -> None:
    status, text = call(node, "POST", "/v2/repository/models/faiss_topk/unload", {})
    assert status == 403 and node.header in text
    assert call(node, "POST", "/v2/repository/models/faiss_topk/unload", {}, {node.header: "x" * 48})[0] == 403
    assert call(node, "POST", "/v2/logging", {"log_verbose_level": 1})[0] == 403
    assert call(node, "GET", "/v2/models/faiss_topk/ready")[0] == 200, "the refused unload left the model serving"
    status, text = call(node, "POST", "/v2/repository/index", {}, {node.header: node.key})
    assert status == 200
    assert {(m["name"], m["state"]) for m in json.loads(text)} == {(model.name, "READY") for model in load_serving_config().models}
    status, track_ids = search(node)
    assert status == 200 and len(track_ids) == 10
    assert call(node, "GET", "/v2/health/ready")[0] == 200


def test_grpc_needs_tls_and_the_header_for_admin_calls(node: Node) -> None:
    with node.grpc() as client:
        assert client.is_server_ready()
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("faiss_topk")
        assert client.is_model_ready("faiss_topk")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index(headers={node.header: node.key})
        # Triton 2.51 expects gRPC admin metadata under a prefixed name (README.md, "Deploy on a GPU node").
        admin = {f"triton-grpc-protocol-{node.header}": node.key}
        served = {model.name for model in client.get_model_repository_index(headers=admin).models}
        assert served == {model.name for model in load_serving_config().models}
        audio = np.frombuffer(bench_audio.query_audio(3.0, seed=7).tobytes(), dtype=np.float32)
        audio_input = grpcclient.InferInput("AUDIO", [audio.size], "FP32")
        audio_input.set_data_from_numpy(audio)
        assert len(client.infer("audio_search", [audio_input]).as_numpy("TRACK_IDS")) == 10
    with grpcclient.InferenceServerClient(node.server.grpc_url) as plaintext:
        with pytest.raises(InferenceServerException):
            plaintext.is_server_live(client_timeout=5)


def test_dashboard_queries_only_metrics_the_server_exports(node: Node) -> None:
    with urllib.request.urlopen(node.server.metrics_url, timeout=10) as response:
        exported = set(re.findall(r"^(nv_\w+)", response.read().decode(), re.MULTILINE))
    dashboard = json.loads((DEPLOY / "grafana" / "audio-search-dashboard.json").read_text(encoding="utf-8"))
    used = {name for panel in dashboard["panels"] for target in panel["targets"] for name in re.findall(r"nv_\w+", target["expr"])}
    # The CPU server has no GPU metrics; the GPU node's names come from Triton's metrics documentation.
    assert used - exported == {"nv_gpu_utilization", "nv_gpu_memory_used_bytes"}


def test_publish_and_roll_back_catalogs_without_a_failed_query(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = node.repository / "faiss_topk"
    key_file = node.secrets / "triton_admin_key"
    results: list[int] = []
    stop = threading.Event()

    def query_forever() -> None:
        while not stop.is_set():
            results.append(search(node)[0])

    def publisher(*args: str, key: Path = key_file) -> tuple[int, str]:
        code = run_module("serving.publish_index", [*args, "--model-repository", str(node.repository), "--url", node.http,
                                                   "--admin-header", node.header, "--admin-key-file", str(key)])
        out = capsys.readouterr()
        return code, out.out + out.err

    def served_prefix() -> str:
        status, track_ids = search(node)
        assert status == 200
        return {track_id[0] for track_id in track_ids}.pop()

    worker = threading.Thread(target=query_forever)
    worker.start()
    try:
        code, out = publisher("publish", "--index", str(node.root / "catalog-b"))
        assert code == 0, out
        assert json.loads(out) | {"pruned": []} == {"model": "faiss_topk", "version": 2, "previous": 1, "tracks": TRACKS,
                                                   "pruned": [], "server_ready": True}
        assert served_prefix() == "b"

        # Refused before the server or the repository is touched.
        (node.root / "wrong-key").write_text("k" * 48, encoding="utf-8")
        code, out = publisher("publish", "--index", str(node.root / "catalog-c"), key=node.root / "wrong-key")
        assert code == 1 and "HTTP 403" in out
        code, out = publisher("publish", "--index", str(node.root / "catalog-other-embedder"))
        assert code == 1 and "rebuild the index with the deployed embedder" in out
        assert versions(model_dir) == [1, 2] and served_prefix() == "b"

        # A version the server fails to load is replaced by the serving one: readiness comes back.
        source = model_dir / "1" / "model.py"
        good = source.read_text(encoding="utf-8")
        source.write_text("class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('broken build')\n")
        try:
            code, out = publisher("publish", "--index", str(node.root / "catalog-c"))
        finally:
            source.write_text(good, encoding="utf-8")
        assert code == 1 and "broken build" in out
        assert "version 3 serves the catalog of version 2 again (server ready: True)" in out
        assert served_prefix() == "b" and call(node, "GET", "/v2/health/ready")[0] == 200

        code, out = publisher("rollback", "--to", "1")
        assert code == 0 and json.loads(out) == {"model": "faiss_topk", "version": 4, "content_of": 1, "server_ready": True}
        assert served_prefix() == "a"

        code, out = publisher("publish", "--index", str(node.root / "catalog-c"), "--keep", "2")
        assert code == 0 and json.loads(out)["pruned"] == [2, 3]
        assert served_prefix() == "c" and versions(model_dir) == [1, 4, 5]
    finally:
        stop.set()
        worker.join()
    assert len(results) > 10 and set(results) == {200}, f"{results.count(200)} of {len(results)} queries answered"
    assert call(node, "GET", "/v2/health/ready")[0] == 200


def test_locust_searches_headless(node: Node, tmp_path: Path) -> None:
    locust = Path(sys.executable).parent / "locust"
    result = subprocess.run([str(locust), "-f", str(DEPLOY / "locustfile.py"), "--headless", "--users", "2", "--spawn-rate", "2",
                             "--run-time", "4s", "--host", node.http, "--csv", str(tmp_path / "locust"), "--only-summary"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "locust_stats.csv", newline="") as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0


def test_perf_script_measures_audio_search_over_tls(node: Node, tmp_path: Path) -> None:
    runtime = Path(next(p for p in map(Path, sys.path) if (p / "nvidia" / "cuda_runtime" / "lib").is_dir())) / "nvidia" / "cuda_runtime" / "lib"
    env = {
        "PERF_ANALYZER": str(Path(sys.executable).parent / "perf_analyzer"),
        "LD_LIBRARY_PATH": str(runtime),  # the tritonclient wheel's perf_analyzer links libcudart, even on CPU
        "TRITON_GRPC_URL": node.server.grpc_url,
        "SECRETS_DIR": str(node.secrets),
        "PERF_INPUT": str(tmp_path / "input.json"),
        "PERF_REPORT": str(tmp_path / "perf.csv"),
        "PERF_ARGS": "--concurrency-range=1:1 --request-count=6",
    }
    result = run_script("bench_perf.sh", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    inputs = json.loads((tmp_path / "input.json").read_text())["data"]
    assert [entry["AUDIO"]["shape"][0] for entry in inputs] == [round(s * bench_audio.SAMPLE_RATE) for s in bench_audio.DURATIONS_S]
    with open(tmp_path / "perf.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and float(rows[0]["Inferences/Second"]) > 0


def test_bench_queries_are_valid_service_input() -> None:
    from common.windowing import SAMPLE_RATE

    params = load_serving_config().model("audio_windows").parameters
    assert bench_audio.SAMPLE_RATE == SAMPLE_RATE
    assert all(float(params["MIN_SECONDS"]) <= s <= float(params["MAX_SECONDS"]) for s in bench_audio.DURATIONS_S)
    assert max(bench_audio.DURATIONS_S) == float(params["MAX_SECONDS"]), "the longest allowed query is measured"


def test_prune_keeps_the_newest_versions_and_the_source(tmp_path: Path) -> None:
    for version in (1, 3, 4, 7, 9):
        (tmp_path / str(version)).mkdir()
    (tmp_path / "configs").mkdir()
    assert prune(tmp_path, keep=2) == [3, 4]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["1", "7", "9", "configs"]


@pytest.fixture(scope="module")
def compose_api(node: Node) -> Iterator[ApiServer]:
    """The `api` service's command, with this node's secrets folder and Triton address and loopback ports."""
    port, metrics_port = free_ports(2)
    command = service("api")["command"]
    assert command[:4] == ["python", "-m", "api", "serve"]
    local = {"config": str(REPO / "configs" / "api.yaml"), "host": "127.0.0.1", "port": str(port), "triton-url": node.server.grpc_url,
             "metrics-host": "127.0.0.1", "metrics-port": str(metrics_port)}
    args = [f"--{key}={local.get(key, value.replace('/run/secrets', str(node.secrets)))}" for key, value in flag_pairs(command)]
    key = (node.secrets / "api_bench_key").read_text(encoding="utf-8")
    server = launch_api(node.root, args, port, metrics_port, {"bench": key})
    try:
        yield server
    finally:
        server.stop()


def test_the_compose_api_searches_over_tls_with_the_generated_key(node: Node, compose_api: ApiServer) -> None:
    assert "(TLS)" in compose_api.log()
    answer = api_search(compose_api, bench_audio_wav(3.0), key="bench")
    assert answer.status == 200 and len(answer.json()["matches"]) == 10, answer.body
    assert api_search(compose_api, bench_audio_wav(3.0), key=None).status == 401
    assert api_call(compose_api, "GET", "/v1/health").json()["ready"] is True


def test_locust_profile_of_the_api_searches_headless(compose_api: ApiServer, tmp_path: Path) -> None:
    locust = Path(sys.executable).parent / "locust"
    key_file = tmp_path / "key"
    key_file.write_text(compose_api.keys["bench"], encoding="utf-8")
    result = subprocess.run([str(locust), "-f", str(DEPLOY / "locustfile_api.py"), "--headless", "--users", "2", "--spawn-rate", "2",
                             "--run-time", "6s", "--stop-timeout", "60", "--host", compose_api.url, "--csv", str(tmp_path / "locust"),
                             "--only-summary"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "CLOUDTUNE_API_KEY_FILE": str(key_file)})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "locust_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    assert int(rows["Aggregated"]["Request Count"]) > 0 and int(rows["Aggregated"]["Failure Count"]) == 0
    assert {name for name in rows if name.startswith("/v1/search ")} <= {f"/v1/search {s:g}s" for s in bench_audio.DURATIONS_S}


def bench_audio_wav(seconds: float) -> bytes:
    return bench_audio.query_wav(seconds, seed=3)


@pytest.fixture(scope="module")
def grpc_proxy(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """deploy/grpc-proxy.conf on Debian's nginx: the container's paths, Triton's address and the port made local."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed: `make setup` installs setup/apt-packages.txt")
    folder = tmp_path_factory.mktemp("grpc-proxy")
    port = free_ports(1)[0]
    text = (DEPLOY / "grpc-proxy.conf").read_text(encoding="utf-8")
    for container, local in (("/tmp/", f"{folder}/"), ("/run/secrets/", f"{node.secrets}/"),
                             ("grpcs://triton:8001", f"grpcs://{node.server.grpc_url}"), ("listen 8443 ", f"listen 127.0.0.1:{port} ")):
        assert container in text
        text = text.replace(container, local)
    (folder / "nginx.conf").write_text(text, encoding="utf-8")
    # One process (no master/worker split): as root here the workers would otherwise switch to nobody.
    process = subprocess.Popen([nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", "stderr", "-g", "daemon off; master_process off;"],
                               stdout=subprocess.DEVNULL, stderr=open(folder / "nginx.log", "wb"))
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (folder / "nginx.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)


def test_the_grpc_proxy_passes_inference_and_health_only(node: Node, grpc_proxy: str) -> None:
    admin = {f"triton-grpc-protocol-{node.header}": node.key}
    with grpcclient.InferenceServerClient(grpc_proxy, ssl=True, root_certificates=str(node.secrets / "grpc_root_cert")) as client:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("audio_search")
        assert client.get_model_metadata("audio_search").name == "audio_search"
        audio = np.frombuffer(bench_audio.query_audio(3.0, seed=7).tobytes(), dtype=np.float32)
        audio_input = grpcclient.InferInput("AUDIO", [audio.size], "FP32")
        audio_input.set_data_from_numpy(audio)
        assert len(client.infer("audio_search", [audio_input]).as_numpy("TRACK_IDS")) == 10
        # Even with the admin key, nothing but inference and health gets through the proxy.
        for refused in (lambda: client.get_model_repository_index(headers=admin), lambda: client.unload_model("faiss_topk", headers=admin),
                        lambda: client.get_inference_statistics(), lambda: client.get_log_settings(headers=admin)):
            with pytest.raises(InferenceServerException, match="not exposed to clients"):
                refused()
    with grpcclient.InferenceServerClient(grpc_proxy) as plaintext:
        with pytest.raises(InferenceServerException):
            plaintext.is_server_live(client_timeout=5)
    with node.grpc() as direct:
        assert direct.is_model_ready("faiss_topk")


def test_a_trusted_client_through_the_proxy_and_curl_through_the_api_find_the_same_tracks(
        node: Node, grpc_proxy: str, compose_api: ApiServer, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(bench_audio_wav(5.0))
    cli = subprocess.run([sys.executable, "-m", "client", "search", str(clip), "--top-k", "5", "--json", "--url", grpc_proxy,
                          "--root-cert", str(node.secrets / "grpc_root_cert")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    curl = subprocess.run(["curl", "-sS", "-F", f"file=@{clip}", "-F", "top_k=5", "-H", f"X-API-Key: {compose_api.keys['bench']}",
                           f"{compose_api.url}/v1/search"], capture_output=True, text=True, timeout=120)
    assert curl.returncode == 0, curl.stderr
    by_client, by_api = json.loads(cli.stdout), json.loads(curl.stdout)["matches"]
    assert len(by_client) == 5 and [m["track_id"] for m in by_api] == [m["track_id"] for m in by_client]
