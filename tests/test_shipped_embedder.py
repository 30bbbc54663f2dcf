"""The embedder shipped in models/embedder-music: it loads, it belongs to the shipped tokenizer and only to it,
and with that tokenizer it finds generated tracks (music it never saw) from 5-s excerpts at random offsets."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from common.cli import run_module
from generated_sets import generated_set
from training.moss import build_encoder
from training.pipeline import SHIPPED_EMBEDDER, TRAINED_TOKENIZER, shipped_embedder_for
from training.train import load_embedder

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / TRAINED_TOKENIZER


def test_the_shipped_embedder_fits_the_shipped_tokenizer_only(tmp_path: Path) -> None:
    checkpoint = shipped_embedder_for(str(TOKENIZER), ROOT / SHIPPED_EMBEDDER)
    assert checkpoint == ROOT / SHIPPED_EMBEDDER / "embedder.pt"
    model = load_embedder(checkpoint)  # strict: every key of the architecture its config names
    codes = build_encoder(str(TOKENIZER))(torch.randn(1, 1, 24000) * 0.1)[0]
    meta = json.loads((ROOT / SHIPPED_EMBEDDER / "meta.json").read_text())
    assert model.cfg.n_levels <= meta["n_quantizers"] <= codes.shape[1]
    assert int(codes.max()) < model.cfg.codebook_size
    assert shipped_embedder_for("tiny", ROOT / SHIPPED_EMBEDDER) is None
    # The same folder name with other weights is another tokenizer: its codes are not the ones learnt.
    other = tmp_path / TOKENIZER.name
    shutil.copytree(TOKENIZER, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "note": "retrained"}))
    assert shipped_embedder_for(str(other), ROOT / SHIPPED_EMBEDDER) is None


def test_the_shipped_embedder_finds_unseen_generated_tracks_from_random_offsets(tmp_path: Path) -> None:
    data = generated_set(tmp_path / "set", tracks=12, seconds=15.0, seed=11, tokenizer=str(TOKENIZER))
    report = tmp_path / "report.json"
    assert run_module("training.evaluate", [
        "--checkpoint", str(shipped_embedder_for(str(TOKENIZER), ROOT / SHIPPED_EMBEDDER)), "--output-json", str(report),
        "--split", "test", "--tokens-root", str(data / "tokens"), "--splits-root", str(data / "splits"),
        "--audio-root", str(data / "audio"), "--query-seconds", "5", "--conditions", "clean", "snr20",
        "--queries-per-track", "3", "--moss-config", str(TOKENIZER), "--n-quantizers", "8", "--device", "cpu"]) == 0
    result = json.loads(report.read_text())
    assert result["queries"] == 18 and result["catalog_tracks"] == 12
    # 1.0 when written; an untrained embedder of the same shape, its code vectors random, gets 0.72 here.
    assert result["recall@1"] >= 0.9, result["by_condition"]
