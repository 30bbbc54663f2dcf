"""`python -m export index` builds the catalog rows the embedder was trained with: its checkpoint's layout."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import run_module
from export.embedder_onnx import export_embedder_onnx
from training.dataset import CatalogConfig, window_starts
from training.embedder import EmbedderConfig, TokenEmbedder
from training.token_files import load_tracks
from generated_sets import generated_set

TRACKS, SECONDS, LEVELS = 3, 23.0, 8


@pytest.fixture(scope="module")
def catalog_audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = generated_set(tmp_path_factory.mktemp("index-layout"), TRACKS, SECONDS, seed=2, levels=LEVELS, held_out=None)
    return root / "audio", root / "tokens"


@pytest.mark.parametrize("layout", [CatalogConfig("whole", 10.0, 5.0), CatalogConfig("whole", 5.0, 2.5), CatalogConfig("alone", 5.0, 5.0)])
def test_index_rows_follow_the_checkpoints_layout(catalog_audio: tuple[Path, Path], tmp_path: Path, layout: CatalogConfig) -> None:
    audio, tokens = catalog_audio
    torch.manual_seed(0)
    model = TokenEmbedder(EmbedderConfig(n_levels=LEVELS, d_model=32, embedding_dim=16, dropout=0.0)).eval()
    checkpoint = tmp_path / "embedder.pt"
    torch.save({"model": model.state_dict(), "model_config": vars(model.cfg), "train_config": {"catalog": vars(layout)}}, checkpoint)
    onnx = export_embedder_onnx(model, tmp_path / "token_embedder.onnx", LEVELS)
    source = ["--audio-root", str(audio)] if layout.tokenize == "alone" else ["--tokens-root", str(tokens)]
    assert run_module("export.index", ["--checkpoint", str(checkpoint), "--embedder-onnx", str(onnx), *source, "--output", str(tmp_path / "index"),
                                       "--n-quantizers", str(LEVELS), "--moss-config", "tiny"]) == 0
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    frames = [files[0].codes.shape[1] for files in load_tracks(tokens).values()]
    expected = sum(len(window_starts(n, layout.window_frames, layout.hop_frames)) for n in frames)
    assert manifest["n_vectors"] == expected and manifest["n_tracks"] == TRACKS
    per_track = np.bincount(np.load(tmp_path / "index" / "segment_track_ids.npy"))
    assert per_track.tolist() == [len(window_starts(n, layout.window_frames, layout.hop_frames)) for n in frames]


def test_add_appends_only_the_new_tracks_rows(catalog_audio: tuple[Path, Path], tmp_path: Path) -> None:
    _, tokens = catalog_audio
    layout = CatalogConfig("whole", 5.0, 2.5)
    torch.manual_seed(0)
    model = TokenEmbedder(EmbedderConfig(n_levels=LEVELS, d_model=32, embedding_dim=16, dropout=0.0)).eval()
    checkpoint = tmp_path / "embedder.pt"
    torch.save({"model": model.state_dict(), "model_config": vars(model.cfg), "train_config": {"catalog": vars(layout)}}, checkpoint)
    onnx = export_embedder_onnx(model, tmp_path / "token_embedder.onnx", LEVELS)
    first = tmp_path / "first"
    first.mkdir()
    files = sorted(tokens.glob("*.npz"))
    shutil.copy(files[0], first / files[0].name)
    argv = ["--checkpoint", str(checkpoint), "--embedder-onnx", str(onnx), "--output", str(tmp_path / "index"), "--n-quantizers", str(LEVELS)]
    assert run_module("export.index", [*argv, "--tokens-root", str(first)]) == 0
    assert run_module("export.index", [*argv, "--tokens-root", str(tokens), "--add"]) == 0
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    frames = [chunks[0].codes.shape[1] for chunks in load_tracks(tokens).values()]
    assert manifest["n_tracks"] == TRACKS
    assert manifest["n_vectors"] == sum(len(window_starts(n, layout.window_frames, layout.hop_frames)) for n in frames)
