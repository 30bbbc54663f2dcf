"""A throw-away copy of a published model repository with extra configurations of the same models.

Variants are new model folders (e.g. `token_embedder_nobatch`) whose configs come from the one
source of truth (configs/serving.yaml through export/repo_configs.py) with a few fields replaced,
and whose artifacts are the published ones. One server then serves every configuration.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.paths import DEFAULT_REPOSITORY
from export.repo_configs import Instances, ModelSpec, load_serving_config, render_repository, write_repository
from export.repo_layout import lay_out_repository


class RepositoryNotPublished(RuntimeError):
    pass


@dataclass(frozen=True)
class Variant:
    name: str
    base: str
    change: Callable[[ModelSpec], ModelSpec]
    description: str


def without_dynamic_batching(spec: ModelSpec) -> ModelSpec:
    # max_batch_size stays: requests keep their batch dimension, each runs alone.
    return dataclasses.replace(spec, dynamic_batching=None)


def with_instances(count: int) -> Callable[[ModelSpec], ModelSpec]:
    def change(spec: ModelSpec) -> ModelSpec:
        return dataclasses.replace(spec, embedded=Instances(kind=spec.embedded.kind, count=count))

    return change


def with_parameters(**parameters: str) -> Callable[[ModelSpec], ModelSpec]:
    def change(spec: ModelSpec) -> ModelSpec:
        return dataclasses.replace(spec, parameters={**spec.parameters, **parameters})

    return change


def published_artifacts(source: Path) -> dict[str, Path]:
    artifacts = {
        "moss_onnx": source / "moss_encoder" / "1" / "model.onnx",
        "embedder_onnx": source / "token_embedder" / "1" / "model.onnx",
        "catalog_dir": source / "faiss_topk" / "1" / "index",
    }
    missing = [str(path) for path in artifacts.values() if not path.exists()]
    if missing:
        raise RepositoryNotPublished(
            f"{source} has no published artifacts ({', '.join(missing)} missing): "
            "run `make demo` or `python -m export publish` first, or pass --model-repository")
    return artifacts


def lay_out_variants(root: Path, variants: list[Variant], source: Path = DEFAULT_REPOSITORY) -> Path:
    """``source`` copied under ``root`` plus one model folder per variant; returns the repository path."""
    artifacts = published_artifacts(source)
    repository = lay_out_repository(root, source=source, **artifacts)
    config = load_serving_config()
    specs = tuple(dataclasses.replace(variant.change(config.model(variant.base)), name=variant.name) for variant in variants)
    files = render_repository(dataclasses.replace(config, models=specs))
    write_repository(repository, files)
    for variant in variants:
        shutil.copytree(repository / variant.base / "1", repository / variant.name / "1", dirs_exist_ok=True)
    return repository
