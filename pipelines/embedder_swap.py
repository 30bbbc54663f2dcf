"""Serve a newly trained embedder: its files into token_embedder/1, then a reload through the repository API.

An embedder change is a model change, not only a new catalog: the catalog of the new embedder can only be
loaded after it (faiss_topk checks the catalog against the deployed embedder's checksum). Between the two
loads (about a second here) queries still succeed but rank new-embedder queries against the old catalog;
a blue/green pair of servers is what avoids that window. On any failure the previous files come back and
are reloaded, so the server is never left with an embedder that no published catalog matches.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from export.repo_layout import EMBEDDER_MANIFEST, onnx_files, publish_artifacts
from serving.catalog_index import sha256_file
from serving.publish_index import PublishError, TritonAdmin

MODEL = "token_embedder"
# Reloaded after it: on a GPU node (`gpu` configs) window_embedder runs its own copy of the embedder, read from
# token_embedder/1 when it loads (elsewhere it is the ensemble of the two steps, and reloading it is cheap).
DEPENDENTS = ("window_embedder",)


def deployed_embedder_sha256(repository: Path) -> str:
    return json.loads((repository / EMBEDDER_MANIFEST).read_text(encoding="utf-8"))["onnx_sha256"]


def _artifact_files(version_dir: Path) -> list[Path]:
    files = onnx_files(version_dir / "model.onnx") if (version_dir / "model.onnx").is_file() else []
    return files + [p for p in (version_dir / "embedder.json", version_dir / "embedder.pt") if p.is_file()]


def _restore(backup_dir: Path, version_dir: Path) -> None:
    for path in _artifact_files(version_dir):
        path.unlink()
    for path in backup_dir.iterdir():
        shutil.copy2(path, version_dir / path.name)


def swap_embedder(triton: TritonAdmin, repository: Path, embedder_onnx: Path, checkpoint: Path, backup_dir: Path) -> bool:
    """True if the served embedder was replaced; False if ``embedder_onnx`` is already the one served."""
    if sha256_file(embedder_onnx) == deployed_embedder_sha256(repository):
        return False
    version_dir = repository / MODEL / "1"
    shutil.rmtree(backup_dir, ignore_errors=True)
    backup_dir.mkdir(parents=True)
    for path in _artifact_files(version_dir):
        shutil.copy2(path, backup_dir / path.name)
    try:
        for path in _artifact_files(version_dir):
            path.unlink()  # a stale external-data file of the old model must not outlive it
        publish_artifacts(repository, embedder_onnx=embedder_onnx, embedder_checkpoint=checkpoint)
        _reload(triton)
    except (PublishError, OSError, ValueError) as error:
        restore_embedder(triton, repository, backup_dir)
        raise PublishError(f"serving the new embedder failed, the previous one is back: {error}") from error
    return True


def restore_embedder(triton: TritonAdmin, repository: Path, backup_dir: Path) -> None:
    _restore(backup_dir, repository / MODEL / "1")
    _reload(triton)


def _reload(triton: TritonAdmin) -> None:
    for model in (MODEL, *DEPENDENTS):
        triton.load(model)
