"""The search API as a real uvicorn process (`python -m api serve`) in front of a real tritonserver, for tests/test_api_*.

Test settings: the production limits (configs/api.yaml) with short timeouts and a small queue, so slow clients
and floods are refused within seconds on a shared 2-core machine.
"""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from api.keys import entry_line, new_key
from common.paths import REPO_ROOT
from serving.triton_runtime import free_ports

TEST_SETTINGS = {
    "limits": {"header_timeout_s": 2.0, "body_timeout_s": 2.0},
    "queue": {"max_uploads": 16, "max_in_flight": 2, "max_waiting": 8, "wait_timeout_s": 5.0, "retry_after_s": 2, "max_connections": 256},
    "rate_limit": {"requests_per_minute": 600, "burst": 20},
}
# Key name -> requests per minute (None: the configured default).
# The flood has a rate-limited key of its own: the API server is shared by the session, and a drained
# bucket would refuse test_api_search's rate-limit test from its first request.
TEST_KEYS = {"tester": None, "limited": 1.0, "flood-limited": 1.0, "load": 1_000_000.0}


@dataclass
class ApiServer:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_settings(folder: Path, overrides: dict[str, Any] | None = None) -> Path:
    settings = yaml.safe_load((REPO_ROOT / "configs" / "api.yaml").read_text(encoding="utf-8"))
    for section, values in {**TEST_SETTINGS, **(overrides or {})}.items():
        settings[section] = {**settings[section], **values}
    path = folder / f"api-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def start_api(folder: Path, triton_grpc_url: str, overrides: dict[str, Any] | None = None, wait_ready: bool = True) -> ApiServer:
    """`python -m api serve` with the test keys and settings, searching through ``triton_grpc_url``."""
    keys = {name: new_key() for name in TEST_KEYS}
    keys_file = folder / f"keys-{uuid.uuid4().hex[:8]}"
    keys_file.write_text("".join(entry_line(name, keys[name], rate) + "\n" for name, rate in TEST_KEYS.items()), encoding="utf-8")
    port, metrics_port = free_ports(2)
    args = ["--config", str(write_settings(folder, overrides)), "--port", str(port), "--metrics-port", str(metrics_port),
            "--triton-url", triton_grpc_url, "--keys-file", str(keys_file)]
    return launch_api(folder, args, port, metrics_port, keys, wait_ready)


def launch_api(folder: Path, args: list[str], port: int, metrics_port: int, keys: dict[str, str], wait_ready: bool = True) -> ApiServer:
    """`python -m api serve ARGS` listening on ``port``; waits until it answers (and, with ``wait_ready``, is ready)."""
    log_path = folder / f"api-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "api", "serve", *args], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = ApiServer(process, port, metrics_port, log_path, keys)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode}:\n{server.log()}")
        status = health_status(server)
        if status == 200 or (status is not None and not wait_ready):
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the API did not become ready:\n{server.log()}")


def health_status(server: ApiServer) -> int | None:
    try:
        with urllib.request.urlopen(f"{server.url}/v1/health", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data form."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode() for name, value in fields.items()]
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(server: ApiServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 60) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def search(server: ApiServer, data: bytes, filename: str = "clip.wav", top_k: int | None = None, key: str | None = "tester",
           headers: dict[str, str] | None = None) -> Answer:
    body, content_type = multipart({} if top_k is None else {"top_k": str(top_k)}, {"file": (filename, data)})
    sent = {"Content-Type": content_type, **({"X-API-Key": server.keys[key]} if key else {}), **(headers or {})}
    return call(server, "POST", "/v1/search", body, sent)
