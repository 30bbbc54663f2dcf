"""Put exported artifacts into a model repository, or lay out a complete runnable one elsewhere.

Version folders of model_repository/ hold generated artifacts (git-ignored): moss_encoder/1/model.onnx,
token_embedder/1/model.onnx with embedder.json (the sha256 faiss_topk checks the catalog against) and
faiss_topk/1/index/ (the catalog folder of serving/catalog_index.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import onnx

from common.paths import DEFAULT_REPOSITORY
from serving.catalog_index import sha256_file

EMBEDDER_MANIFEST = Path("token_embedder", "1", "embedder.json")
ARTIFACTS = ("*.onnx", "*.onnx.data", "*.plan", "embedder.json", "index", "__pycache__",
             "moss", "moss_source.txt", "embedder.pt")


def onnx_files(model_path: Path) -> list[Path]:
    """The model file and the external-data files it references (large models keep weights outside)."""
    model = onnx.load(str(model_path), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [model_path, *(model_path.parent / location for location in sorted(locations))]


def embedder_manifest(onnx_path: Path) -> dict[str, Any]:
    output = onnx.load(str(onnx_path), load_external_data=False).graph.output[0]
    dim = output.type.tensor_type.shape.dim[-1]
    if not dim.HasField("dim_value"):
        raise ValueError(f"{onnx_path}: the last dimension of {output.name} must be static (the embedding dim)")
    return {"onnx_sha256": sha256_file(onnx_path), "dim": dim.dim_value}


def _install_onnx(source: Path, version_dir: Path) -> None:
    version_dir.mkdir(parents=True, exist_ok=True)
    for path in onnx_files(source):
        shutil.copy2(path, version_dir / ("model.onnx" if path == source else path.name))


def publish_artifacts(
    repository: Path,
    *,
    moss_onnx: Path | None = None,
    embedder_onnx: Path | None = None,
    catalog_dir: Path | None = None,
    moss_source: str | Path | None = None,
    embedder_checkpoint: Path | None = None,
) -> None:
    """Copy the given artifacts into ``repository``'s version folders (version 1).

    ``moss_source`` and ``embedder_checkpoint`` are what the `gpu` configs serve (serving/torch_serving.py):
    a MOSS checkpoint folder (copied to moss_encoder/1/moss/) or a preset name (written to moss_source.txt:
    seeded random weights), and the TokenEmbedder training checkpoint (token_embedder/1/embedder.pt).
    """
    if moss_onnx is not None:
        _install_onnx(moss_onnx, repository / "moss_encoder" / "1")
    if embedder_onnx is not None:
        _install_onnx(embedder_onnx, repository / "token_embedder" / "1")
        (repository / EMBEDDER_MANIFEST).write_text(json.dumps(embedder_manifest(embedder_onnx), indent=1), encoding="utf-8")
    if moss_source is not None:
        version = repository / "moss_encoder" / "1"
        version.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(version / "moss", ignore_errors=True)
        (version / "moss_source.txt").unlink(missing_ok=True)
        if Path(moss_source).is_dir():
            shutil.copytree(moss_source, version / "moss")
        else:
            (version / "moss_source.txt").write_text(str(moss_source), encoding="utf-8")
    if embedder_checkpoint is not None:
        (repository / "token_embedder" / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(embedder_checkpoint, repository / "token_embedder" / "1" / "embedder.pt")
    if catalog_dir is not None:
        target = repository / "faiss_topk" / "1" / "index"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(catalog_dir, target)


def add_missing_models(repository: Path, source: Path = DEFAULT_REPOSITORY) -> list[str]:
    """Copy the configs and model code of each model of ``source`` that ``repository`` has no config for.

    Models the repository already has keep their configs: a deployment may have tuned them.
    Returns the names of the models copied.
    """
    added = []
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        if not (repository / model_dir.name / "config.pbtxt").is_file():
            shutil.copytree(model_dir, repository / model_dir.name, ignore=shutil.ignore_patterns(*ARTIFACTS), dirs_exist_ok=True)
            added.append(model_dir.name)
    return added


def lay_out_repository(
    root: Path,
    *,
    moss_onnx: Path,
    embedder_onnx: Path,
    catalog_dir: Path,
    source: Path = DEFAULT_REPOSITORY,
) -> Path:
    """A runnable copy of ``source`` (configs + model code) under ``root`` with the given artifacts.

    Returns the repository path, ``root``/model_repository.
    """
    repository = root / "model_repository"
    add_missing_models(repository, source)
    publish_artifacts(repository, moss_onnx=moss_onnx, embedder_onnx=embedder_onnx, catalog_dir=catalog_dir)
    return repository
