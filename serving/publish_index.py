"""Publish a new catalog version to a running Triton without downtime (`python -m serving.publish_index`).

Triton runs with explicit model control and serves the newest version folder of `faiss_topk`
(version_policy latest 1). A new catalog goes into the next version folder and is loaded through the
model-repository API: Triton keeps serving the old version until the new one is ready, then unloads it.
Verified on Triton 2.51 with queries running through `audio_search` during the swap: none failed.

A version that fails to load stays listed as UNAVAILABLE, and keeps the strict `/v2/health/ready` at 400,
until that version number loads successfully (also verified on 2.51; loading a later version does not
clear it). So a failure is rolled *forward*: the failed folder is replaced by a hard-linked copy of the
serving version and loaded again. Version numbers only grow; any version's content can come back that way.

The catalog is verified here first with the model's own loader (serving/catalog_index.py), so a catalog
built for another embedder never reaches the server. Version 1 is the source-controlled folder: its
model code is copied into every new version, and it is never pruned.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.cli import run_module
from serving.catalog_index import load_catalog

SOURCE_VERSION = 1
SETTLE_TIMEOUT_S = 120.0


class PublishError(RuntimeError):
    pass


@dataclass(frozen=True)
class TritonAdmin:
    """The few calls of Triton's HTTP API the publisher needs; admin calls carry the restricted-API header."""

    url: str
    admin_header: str
    admin_key: str
    load_timeout_s: float = 900.0

    def _call(self, method: str, path: str, body: Any = None, admin: bool = False, timeout: float = 30.0) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if admin:
            headers[self.admin_header] = self.admin_key
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(f"{self.url.rstrip('/')}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, text = response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError) as error:
            raise PublishError(f"cannot reach Triton at {self.url}: {error}") from error
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def check_admin(self) -> None:
        """Fails before anything changes when the header or key is wrong."""
        status, body = self._call("POST", "/v2/repository/index", {}, admin=True)
        if status != 200:
            raise PublishError(f"Triton refused the admin call: HTTP {status} {_error_text(body)}")

    def config(self, model: str) -> dict[str, Any]:
        status, body = self._call("GET", f"/v2/models/{model}/config")
        if status != 200:
            raise PublishError(f"the config of {model} (is it loaded?): HTTP {status} {_error_text(body)}")
        return body

    def load(self, model: str) -> None:
        """Blocks until Triton has loaded the model's current version set (or failed to)."""
        status, body = self._call("POST", f"/v2/repository/models/{model}/load", {}, admin=True, timeout=self.load_timeout_s)
        if status != 200:
            raise PublishError(f"loading {model} failed: HTTP {status} {_error_text(body)}")

    def version_ready(self, model: str, version: int) -> bool:
        return self._call("GET", f"/v2/models/{model}/versions/{version}/ready")[0] == 200

    def server_ready(self) -> bool:
        return self._call("GET", "/v2/health/ready")[0] == 200

    def infer(self, model: str, version: int, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        status, body = self._call("POST", f"/v2/models/{model}/versions/{version}/infer", {"inputs": inputs})
        if status != 200:
            raise PublishError(f"smoke query on {model} version {version}: HTTP {status} {_error_text(body)}")
        return {output["name"]: output["data"] for output in body["outputs"]}


def _error_text(body: Any) -> str:
    return body.get("error", body) if isinstance(body, dict) else str(body)


def versions(model_dir: Path) -> list[int]:
    return sorted(int(path.name) for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit())


@contextmanager
def publish_lock(model_dir: Path) -> Iterator[None]:
    """One publisher at a time per model; Triton ignores the lock file (not a version folder)."""
    with open(model_dir / ".publish.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise PublishError(f"another publisher holds {model_dir / '.publish.lock'}") from error
        yield


def _link_or_copy(source: str, target: str) -> None:
    # Published files are never modified in place, so versions can share them.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def stage_version(model_dir: Path, version: int, fill: Callable[[Path], None]) -> Path:
    """Build the version folder under a hidden name and rename it into place, so Triton never sees it half-written."""
    target = model_dir / str(version)
    if target.exists():
        raise PublishError(f"{target} already exists")
    staging = model_dir / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        fill(staging)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


@dataclass(frozen=True)
class ModelFolder:
    """faiss_topk's folder in the model repository and what its served config says about catalogs."""

    repository: Path
    name: str
    index_dir: str
    dim: int
    embedder_sha256: str

    @classmethod
    def from_server(cls, triton: TritonAdmin, repository: Path, name: str) -> ModelFolder:
        config = triton.config(name)
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        dim = next(int(tensor["dims"][-1]) for tensor in config["input"] if tensor["name"] == "EMBEDDING")
        try:
            embedder = json.loads((repository / params["EMBEDDER_MANIFEST"]).read_text(encoding="utf-8"))
            return cls(repository, name, params.get("INDEX_DIR", "index"), dim, embedder["onnx_sha256"])
        except (KeyError, OSError, ValueError) as error:
            raise PublishError(f"cannot read the deployed embedder's manifest under {repository}: {error!r}") from error

    @property
    def path(self) -> Path:
        return self.repository / self.name

    def catalog_track_ids(self, index_dir: Path) -> list[str]:
        """Verifies the catalog exactly as the model will (files, checksums, embedder, dim)."""
        try:
            return load_catalog(index_dir, expected_dim=self.dim, expected_embedder_sha256=self.embedder_sha256).track_ids
        except (ValueError, KeyError, OSError, RuntimeError) as error:  # CatalogMismatch is a ValueError
            raise PublishError(f"catalog {index_dir} cannot be served: {error}") from error


def smoke_query(triton: TritonAdmin, model: ModelFolder, version: int, track_ids: list[str]) -> None:
    """One query on exactly ``version``; its hits must come from that version's catalog."""
    if not triton.version_ready(model.name, version):
        raise PublishError(f"{model.name} version {version} is not ready after loading")
    query = [1.0 / math.sqrt(model.dim)] * model.dim
    result = triton.infer(model.name, version, [{"name": "EMBEDDING", "datatype": "FP32", "shape": [1, model.dim], "data": query}])
    hits = result["TRACK_IDS"]
    unknown = sorted(set(hits) - set(track_ids))
    if not hits or unknown:
        raise PublishError(f"smoke query on version {version} returned {len(hits)} hits, unknown to its catalog: {unknown[:5]}")


def load_and_check(triton: TritonAdmin, model: ModelFolder, version: int, track_ids: list[str]) -> bool:
    """Load, query the new version, then wait for the server's readiness (False if it does not come back).

    The replaced version keeps the strict /v2/health/ready at 400 while it unloads (a second or two on
    Triton 2.51); the models, audio_search included, stay ready and answer throughout.
    """
    triton.load(model.name)
    smoke_query(triton, model, version, track_ids)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not triton.server_ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def roll_forward(triton: TritonAdmin, model: ModelFolder, source_version: int) -> dict[str, Any]:
    """Serve ``source_version``'s content as the next version (after a failure, or on request)."""
    source = model.path / str(source_version)
    track_ids = model.catalog_track_ids(source / model.index_dir)
    version = versions(model.path)[-1] + 1
    stage_version(model.path, version, lambda staging: shutil.copytree(source, staging, copy_function=_link_or_copy,
                                                                         ignore=shutil.ignore_patterns("__pycache__")))
    ready = load_and_check(triton, model, version, track_ids)
    return {"model": model.name, "version": version, "content_of": source_version, "server_ready": ready}


def publish(triton: TritonAdmin, model: ModelFolder, index_dir: Path, keep: int) -> dict[str, Any]:
    track_ids = model.catalog_track_ids(index_dir)
    existing = versions(model.path)
    if SOURCE_VERSION not in existing:
        raise PublishError(f"{model.path / str(SOURCE_VERSION)} (the model's source folder) is missing")
    serving, version = existing[-1], existing[-1] + 1
    code = model.path / str(SOURCE_VERSION)

    def fill(staging: Path) -> None:
        shutil.copytree(code, staging, ignore=shutil.ignore_patterns(model.index_dir, "__pycache__"))
        shutil.copytree(index_dir, staging / model.index_dir)

    stage_version(model.path, version, fill)
    try:
        ready = load_and_check(triton, model, version, track_ids)
    except PublishError as error:
        shutil.rmtree(model.path / str(version))
        try:
            restored = roll_forward(triton, model, serving)
        except PublishError as rollback_error:
            raise PublishError(f"{error}\nrolling back failed too: {rollback_error}") from error
        raise PublishError(f"{error}\nrolled back: version {restored['version']} serves the catalog of version {serving} "
                           f"again (server ready: {restored['server_ready']})") from error
    return {"model": model.name, "version": version, "previous": serving, "tracks": len(track_ids),
            "pruned": prune(model.path, keep), "server_ready": ready}


def prune(model_dir: Path, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` versions (never the source version); they are no longer served."""
    doomed = [v for v in versions(model_dir)[:-keep] if v != SOURCE_VERSION]
    for version in doomed:
        shutil.rmtree(model_dir / str(version))
    return doomed


def read_admin_key(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise PublishError(f"cannot read the admin key: {error}") from error
    if not key:
        raise PublishError(f"the admin key file {path} is empty")
    return key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("publish", "rollback"),
                        help="publish: serve --index as the next version; rollback: serve an older version's catalog again")
    parser.add_argument("--index", type=Path, help="catalog folder written by `python -m export index` (publish)")
    parser.add_argument("--to", type=int, help="rollback: the version whose catalog to serve (default: the one before the newest)")
    parser.add_argument("--model-repository", type=Path, default=Path(os.environ.get("MODEL_REPOSITORY", "model_repository")),
                        help="the repository Triton serves (default: $MODEL_REPOSITORY or %(default)s)")
    parser.add_argument("--model", default="faiss_topk")
    parser.add_argument("--url", default=os.environ.get("TRITON_HTTP_URL", "http://localhost:8000"),
                        help="Triton's HTTP endpoint (default: $TRITON_HTTP_URL or %(default)s)")
    parser.add_argument("--admin-header", default=os.environ.get("TRITON_ADMIN_HEADER"),
                        help="restricted-API header name (default: $TRITON_ADMIN_HEADER)")
    parser.add_argument("--admin-key-file", type=Path, default=Path(os.environ.get("TRITON_ADMIN_KEY_FILE", "/run/secrets/triton_admin_key")),
                        help="file holding the header's value (default: $TRITON_ADMIN_KEY_FILE or %(default)s)")
    parser.add_argument("--keep", type=int, default=2, help="version folders kept after a publish, besides version 1 (default: %(default)s)")
    parser.add_argument("--load-timeout", type=float, default=900.0, help="seconds Triton may take to load a version (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    if not args.admin_header:
        print("error: give --admin-header or set TRITON_ADMIN_HEADER", file=sys.stderr)
        return 2
    if args.keep < 2:
        print("error: --keep must be at least 2 (the new version and the one to roll back to)", file=sys.stderr)
        return 2
    try:
        triton = TritonAdmin(args.url, args.admin_header, read_admin_key(args.admin_key_file), args.load_timeout)
        triton.check_admin()
        model = ModelFolder.from_server(triton, args.model_repository, args.model)
        with publish_lock(model.path):
            if args.action == "publish":
                if args.index is None:
                    raise PublishError("publish needs --index")
                result = publish(triton, model, args.index, args.keep)
            else:
                existing = versions(model.path)
                source = args.to if args.to is not None else (existing[-2] if len(existing) > 1 else None)
                if source not in existing:
                    raise PublishError(f"no version {source} to roll back to; versions on disk: {existing}")
                result = roll_forward(triton, model, source)
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_module("serving.publish_index", sys.argv[1:], prog="python -m serving.publish_index"))
