"""faiss_topk refuses, at load, a catalog that does not belong to the deployed model (explicit model control).

Its own server: a model that failed to load keeps a strict-readiness server not ready, which would
disturb the shared one.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.catalog_index import build_index, write_catalog
from serving.triton_runtime import EmbeddedTriton


@pytest.fixture(scope="module")
def client(triton_repository: Path) -> Iterator[grpcclient.InferenceServerClient]:
    """A server that loads nothing by itself; the tests load faiss_topk variants."""
    with EmbeddedTriton(triton_repository, extra_args=["--model-control-mode=explicit"],
                        log_path=triton_repository.parent / "tritonserver-refusal.log") as server:
        with grpcclient.InferenceServerClient(server.grpc_url) as grpc:
            yield grpc


def add_faiss_variant(repository: Path, name: str, catalog: Path) -> None:
    """A copy of faiss_topk under another name, serving ``catalog``."""
    target = repository / name
    shutil.copytree(repository / "faiss_topk", target, ignore=shutil.ignore_patterns("index"))
    shutil.copytree(catalog, target / "1" / "index")
    for config in [target / "config.pbtxt", *target.glob("configs/*.pbtxt")]:
        config.write_text(config.read_text().replace('name: "faiss_topk"', f'name: "{name}"'))


def small_catalog(folder: Path, dim: int, embedder_sha256: str) -> Path:
    vectors = np.random.default_rng(0).standard_normal((4, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_catalog(folder, build_index(vectors), np.arange(4), [{"track_id": f"t{i}"} for i in range(4)],
                  embedder_sha256, "flat")
    return folder


def test_the_published_catalog_loads(client: grpcclient.InferenceServerClient) -> None:
    client.load_model("faiss_topk")
    assert client.is_model_ready("faiss_topk")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong_dim", "has dim 8, but the model expects EMBEDDING dim {dim}"),
        ("wrong_embedder", "was built with embedder sha256 {other}, but the deployed embedder has sha256 {sha}"),
        ("edited_file", "segment_track_ids.npy has sha256"),
    ],
)
def test_mismatched_catalog_is_refused_at_load_with_its_reason(
    case: str, message: str, client: grpcclient.InferenceServerClient, triton_repository: Path,
    serving_artifacts: Any, tmp_path: Path,
) -> None:
    manifest = serving_artifacts.catalog.manifest
    dim, sha, other = manifest["dim"], manifest["embedder_sha256"], "0" * 64
    if case == "edited_file":
        catalog = shutil.copytree(serving_artifacts.catalog_dir, tmp_path / "catalog")
        np.save(catalog / "segment_track_ids.npy", np.zeros(manifest["n_vectors"], np.int64))
    else:
        catalog = small_catalog(tmp_path / "catalog", 8 if case == "wrong_dim" else dim,
                                other if case == "wrong_embedder" else sha)
    name = f"faiss_topk_{case}"
    add_faiss_variant(triton_repository, name, catalog)
    try:
        with pytest.raises(InferenceServerException, match=re.escape(message.format(dim=dim, sha=sha, other=other))):
            client.load_model(name)
        assert not client.is_model_ready(name)
    finally:
        shutil.rmtree(triton_repository / name)
