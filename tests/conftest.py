"""Shared fixtures. Serving: stand-in artifacts laid out as a runnable model repository, one real
tritonserver for the whole session (a start costs seconds of the few CPU cores).

To serve the real exports instead, build `ServingArtifacts` from their paths: `lay_out_repository`
(export/repo_layout.py) takes any encoder/embedder ONNX and catalog folder.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from common.windowing import SAMPLE_RATE, WindowParams
from export.repo_configs import load_serving_config
from export.repo_layout import lay_out_repository
from serving.catalog_index import Catalog, build_index, load_catalog, sha256_file, write_catalog
from serving.triton_runtime import EmbeddedTriton
from api_stack import ApiServer, start_api
from triton_stand_ins import ReferencePipeline, build_embedder_stand_in, build_moss_stand_in

TRACK_SECONDS = (6.0, 9.5, 12.0, 14.0, 20.0, 7.25, 11.0, 16.5, 8.0, 25.0, 10.0, 13.0)


@dataclass
class ServingArtifacts:
    moss_onnx: Path
    embedder_onnx: Path
    catalog_dir: Path
    reference: ReferencePipeline
    catalog: Catalog
    track_audio: dict[str, np.ndarray]


def catalog_audio(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        f"track-{i:02d}": (0.3 * rng.standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)
        for i, seconds in enumerate(TRACK_SECONDS)
    }


@pytest.fixture(scope="session")
def serving_config():
    return load_serving_config()


@pytest.fixture(scope="session")
def serving_artifacts(tmp_path_factory: pytest.TempPathFactory, serving_config) -> ServingArtifacts:
    """Stand-in encoder/embedder with the configured Q and D, and a flat catalog of their embeddings."""
    folder = tmp_path_factory.mktemp("artifacts")
    n_quantizers = serving_config.model("moss_encoder").outputs[0].dims[0]
    dim = serving_config.model("token_embedder").outputs[0].dims[0]
    moss = build_moss_stand_in(folder / "moss_encoder.onnx", n_quantizers)
    embedder = build_embedder_stand_in(folder / "token_embedder.onnx", n_quantizers, dim)
    reference = ReferencePipeline(moss, embedder, WindowParams.from_parameters(serving_config.model("audio_windows").parameters))
    audio = catalog_audio()
    embeddings = [reference.embed(clip) for clip in audio.values()]
    segments = np.concatenate([np.full(len(rows), track) for track, rows in enumerate(embeddings)])
    catalog_dir = folder / "catalog"
    write_catalog(catalog_dir, build_index(np.concatenate(embeddings)), segments,
                  [{"track_id": track_id} for track_id in audio], sha256_file(embedder), "flat")
    return ServingArtifacts(moss, embedder, catalog_dir, reference, load_catalog(catalog_dir), audio)


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory: pytest.TempPathFactory, serving_artifacts: ServingArtifacts) -> Path:
    return lay_out_repository(
        tmp_path_factory.mktemp("serving"),
        moss_onnx=serving_artifacts.moss_onnx,
        embedder_onnx=serving_artifacts.embedder_onnx,
        catalog_dir=serving_artifacts.catalog_dir,
    )


@pytest.fixture(scope="session")
def triton_server(triton_repository: Path) -> Iterator[EmbeddedTriton]:
    """Explicit model control, so tests may load extra models; loading the ensemble loads its steps."""
    server = EmbeddedTriton(
        triton_repository,
        extra_args=["--model-control-mode=explicit", "--load-model=audio_search"],
        log_path=triton_repository.parent / "tritonserver.log",
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory, triton_server: EmbeddedTriton) -> Iterator[ApiServer]:
    """`python -m api serve` (test limits and keys: tests/api_stack.py) in front of the session's tritonserver."""
    server = start_api(tmp_path_factory.mktemp("api"), triton_server.grpc_url)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RealArtifacts:
    """The real tiny pipeline's inputs and exports: 8 generated tracks (audio/, tokens/ of the random-weight tiny MOSS),
    a random TokenEmbedder checkpoint, both ONNX exports and the flat catalog of the tracks, all under ``folder``."""

    folder: Path
    encoder: object  # training.moss.MossEncoder
    embedder: object  # training.embedder.TokenEmbedder
    checkpoint: Path
    moss_onnx: Path
    embedder_onnx: Path
    catalog_dir: Path
    n_quantizers: int

    @property
    def audio_root(self) -> Path:
        return self.folder / "audio"

    @property
    def tokens_root(self) -> Path:
        return self.folder / "tokens"


@pytest.fixture(scope="session")
def real_artifacts(tmp_path_factory: pytest.TempPathFactory, serving_config) -> RealArtifacts:
    import torch

    from common.cli import run_module
    from export.embedder_onnx import export_embedder_onnx
    from export.moss_onnx import export_moss_onnx
    from training.embedder import EmbedderConfig, TokenEmbedder
    from training.moss.weights import build_encoder

    folder = tmp_path_factory.mktemp("real")
    n_quantizers = serving_config.model("moss_encoder").outputs[0].dims[0]
    dim = serving_config.model("token_embedder").outputs[0].dims[0]
    encoder = build_encoder("tiny")
    torch.manual_seed(0)
    embedder = TokenEmbedder(EmbedderConfig(n_levels=n_quantizers, embedding_dim=dim, dropout=0.0)).eval()
    checkpoint = folder / "embedder.pt"
    torch.save({"model": embedder.state_dict(), "model_config": vars(embedder.cfg)}, checkpoint)
    moss_onnx = export_moss_onnx(encoder, folder / "moss_encoder.onnx", n_quantizers)
    embedder_onnx = export_embedder_onnx(embedder, folder / "token_embedder.onnx", n_quantizers)
    assert run_module("training.synth", ["--out", str(folder / "audio"), "--tracks", "8", "--seconds", "14", "--seed", "5", "--workers", "1"]) == 0
    assert run_module("training.tokenize", ["--input-root", str(folder / "audio"), "--output-root", str(folder / "tokens"), "--n-quantizers", str(n_quantizers), "--device", "cpu"]) == 0
    catalog_dir = folder / "index"
    assert run_module("export.index", ["--checkpoint", str(checkpoint), "--embedder-onnx", str(embedder_onnx), "--tokens-root", str(folder / "tokens"), "--output", str(catalog_dir), "--n-quantizers", str(n_quantizers)]) == 0
    return RealArtifacts(folder, encoder, embedder, checkpoint, moss_onnx, embedder_onnx, catalog_dir, n_quantizers)


@dataclass
class RealPipeline:
    """The real tiny pipeline served by its own tritonserver, next to the offline PyTorch models it was exported from."""

    server: EmbeddedTriton
    encoder: object  # training.moss.MossEncoder
    embedder: object  # training.embedder.TokenEmbedder
    catalog_dir: Path
    track_audio: dict[str, np.ndarray]
    n_quantizers: int


@pytest.fixture(scope="session")
def real_pipeline(real_artifacts: RealArtifacts) -> Iterator[RealPipeline]:
    art = real_artifacts
    repository = lay_out_repository(art.folder / "serving", moss_onnx=art.moss_onnx, embedder_onnx=art.embedder_onnx, catalog_dir=art.catalog_dir)
    audio = {p.stem: load_wav(p) for p in sorted(art.audio_root.glob("*.wav"))}
    with EmbeddedTriton(repository, log_path=art.folder / "tritonserver.log") as server:
        yield RealPipeline(server, art.encoder, art.embedder, art.catalog_dir, audio, art.n_quantizers)


def load_wav(path: Path) -> np.ndarray:
    from training.audio_io import load_audio

    return load_audio(path)
