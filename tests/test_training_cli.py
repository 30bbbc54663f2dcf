"""The training CLIs end to end on a small generated catalog: tokenize, splits, views, train, evaluate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import run_module
from common.metrics_db import connect, run_query
from common.yaml_config import load_yaml, save_yaml
from training.token_files import list_token_paths, load_token_file
from training.train import TrainConfig, finished_epochs

TRACKS = 12


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    assert run_module("training.synth", ["--out", str(root / "audio"), "--tracks", str(TRACKS), "--seconds", "6", "--seed", "3", "--workers", "1"]) == 0
    return root


@pytest.fixture(scope="module")
def tokens(catalog: Path) -> Path:
    out = catalog / "tokens"
    assert run_module("training.tokenize", ["--input-root", str(catalog / "audio"), "--output-root", str(out), "--moss-config", "tiny", "--n-quantizers", "8", "--device", "cpu"]) == 0
    return out


def test_tokenize_writes_one_file_per_track_with_metadata(tokens: Path) -> None:
    paths = list_token_paths(tokens)
    assert len(paths) == TRACKS
    first = load_token_file(paths[0])
    assert first.codes.shape == (8, 6 * 24000 // 1920)
    assert first.codes.min() >= 0 and first.n_quantizers == 8 and first.duration_s == pytest.approx(6.0)
    assert first.track_id == paths[0].stem and first.source_path.endswith(".wav")


def test_tokenize_skips_done_files_and_survives_unreadable_ones(catalog: Path, tokens: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "broken.wav").write_bytes(b"not audio at all")
    source = sorted((catalog / "audio").glob("*.wav"))[0]
    (audio / source.name).write_bytes(source.read_bytes())
    argv = ["--input-root", str(audio), "--output-root", str(tmp_path / "tokens"), "--n-quantizers", "4", "--device", "cpu"]
    assert run_module("training.tokenize", argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["files_failed"], summary["token_files_written"]) == (1, 1)
    assert "broken.wav" in summary["failures"][0]["error"]
    assert run_module("training.tokenize", argv) == 0
    rerun = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (rerun["files_skipped_done"], rerun["token_files_written"]) == (1, 0)
    with pytest.raises(ValueError, match="broken.wav"):
        run_module("training.tokenize", [*argv, "--fail-fast"])


def test_tokenize_chunks(catalog: Path, tmp_path: Path) -> None:
    one = sorted((catalog / "audio").glob("*.wav"))[0]
    assert run_module("training.tokenize", ["--input-root", str(one), "--output-root", str(tmp_path), "--n-quantizers", "4", "--chunk-seconds", "2.5", "--device", "cpu"]) == 0
    chunks = [load_token_file(p) for p in list_token_paths(tmp_path)]
    assert [c.chunk_index for c in chunks] == [0, 1, 2]
    assert [c.codes.shape[1] for c in chunks] == [31, 31, 12]  # 2.5 s = 31.25 frames, floored; the 1-s tail = 12.5


def test_splits_views_train_evaluate(catalog: Path, tokens: Path, tmp_path: Path) -> None:
    splits, views, checkpoints = tmp_path / "splits", tmp_path / "views", tmp_path / "checkpoints"
    assert run_module("training.splits", ["--tokens-root", str(tokens), "--output-root", str(splits), "--val-ratio", "0.25", "--test-ratio", "0.25"]) == 0
    summary = json.loads((splits / "summary.json").read_text())
    assert (summary["train"], summary["val"], summary["test"]) == (6, 3, 3)
    cfg = load_yaml(TrainConfig, "configs/train.yaml")
    cfg.output_dir, cfg.data.views_root, cfg.data.splits_root, cfg.data.tokens_root = str(checkpoints), str(views), str(splits), str(tokens)
    cfg.data.audio_root, cfg.views.per_track = str(catalog / "audio"), 2
    cfg.optim.epochs, cfg.optim.batch_size = 2, 4
    cfg.model.d_model, cfg.model.embedding_dim = 32, 16
    save_yaml(cfg, tmp_path / "train.yaml")
    assert run_module("training.views", ["--config", str(tmp_path / "train.yaml"), "--device", "cpu", "--workers", "0"]) == 0
    with np.load(next(views.glob("*.npz"))) as data:
        assert data["codes"].shape == (8, int(data["lengths"].sum())) and len(data["offsets"]) == 2
        assert all(12 <= n <= 6 * 12.5 for n in data["lengths"])
        assert data["window_codes"].shape == (8, int(data["window_lengths"].sum()))

    assert run_module("training.train", ["--config", str(tmp_path / "train.yaml"), "--device", "cpu"]) == 0
    history = json.loads((checkpoints / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (checkpoints / "best.pt").exists() and (checkpoints / "history.png").stat().st_size > 0
    # A run cut off after epoch 2 of 3 continues from last.pt (what make quality does on a GPU call's time limit).
    assert finished_epochs(checkpoints) == 2
    cfg.optim.epochs = 3
    save_yaml(cfg, tmp_path / "train.yaml")
    assert run_module("training.train", ["--config", str(tmp_path / "train.yaml"), "--device", "cpu", "--resume", str(checkpoints / "last.pt")]) == 0
    assert [h["epoch"] for h in json.loads((checkpoints / "history.json").read_text())] == [1, 2, 3] and finished_epochs(checkpoints) == 3

    # init_from starts a new run (fresh optimizer and schedule) from those weights: at lr 0 they come out unchanged.
    started = torch.load(checkpoints / "last.pt", weights_only=False)
    cfg.init_from, cfg.output_dir, cfg.optim.epochs, cfg.optim.lr = str(checkpoints / "last.pt"), str(tmp_path / "continued"), 1, 0.0
    save_yaml(cfg, tmp_path / "continue.yaml")
    assert run_module("training.train", ["--config", str(tmp_path / "continue.yaml"), "--device", "cpu"]) == 0
    continued = torch.load(tmp_path / "continued" / "last.pt", weights_only=False)
    assert continued["epoch"] == 1 and continued["log_temperature"] == pytest.approx(started["log_temperature"])
    assert all(torch.equal(continued["model"][name], weights) for name, weights in started["model"].items())
    cfg.model.d_model = 64
    save_yaml(cfg, tmp_path / "continue.yaml")
    with pytest.raises(SystemExit, match="init_from .*model config"):
        run_module("training.train", ["--config", str(tmp_path / "continue.yaml"), "--device", "cpu"])

    report = tmp_path / "quality.json"
    assert run_module("training.evaluate", [
        "--checkpoint", str(checkpoints / "best.pt"), "--split", "test", "--output-json", str(report), "--use-faiss",
        "--tokens-root", str(tokens), "--splits-root", str(splits), "--audio-root", str(catalog / "audio"),
        "--query-seconds", "1", "5", "--n-quantizers", "8", "--device", "cpu",
        "--db", f"sqlite:///{tmp_path / 'metrics.sqlite'}", "--run-id", "run-a",
    ]) == 0
    result = json.loads(report.read_text())
    recorded = run_query(connect(f"sqlite:///{tmp_path / 'metrics.sqlite'}"), "quality_trend")
    assert [(row[0], row[6]) for row in recorded[1]] == [("run-a", result["recall@1"])]
    for key in ("recall@1", "recall@10", "recall@100", "mrr", "queries", "catalog_tracks", "by_condition", "by_length"):
        assert key in result
    # The catalog holds every track (all splits); only the 3 test tracks are queried.
    assert result["catalog_tracks"] == TRACKS and result["queries"] == 3 * 2 * 9
    assert set(result["by_condition"]) == {"clean", "snr20", "snr10", "snr5", "snr0", "babble5", "reverb", "eq", "ogg"}
    assert set(result["by_length"]) == {"1.0", "5.0"}
    assert result["faiss_ranks_equal"] is True
    assert result["recall@100"] == 1.0  # only 12 tracks in the catalog
    assert report.with_suffix(".png").stat().st_size > 0


def test_evaluate_cross_chunk_excludes_the_query_chunk(catalog: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    assert run_module("training.tokenize", ["--input-root", str(catalog / "audio"), "--output-root", str(tokens), "--n-quantizers", "8", "--chunk-seconds", "3", "--max-files", "4", "--device", "cpu"]) == 0
    splits = tmp_path / "splits"
    assert run_module("training.splits", ["--tokens-root", str(tokens), "--output-root", str(splits), "--val-ratio", "0", "--test-ratio", "0"]) == 0
    from training.embedder import EmbedderConfig, TokenEmbedder
    import torch

    model = TokenEmbedder(EmbedderConfig(d_model=32, embedding_dim=16))
    torch.save({"model": model.state_dict(), "model_config": vars(model.cfg)}, tmp_path / "random.pt")
    report = tmp_path / "cross.json"
    assert run_module("training.evaluate", [
        "--checkpoint", str(tmp_path / "random.pt"), "--split", "train", "--output-json", str(report), "--protocol", "cross_chunk",
        "--tokens-root", str(tokens), "--splits-root", str(splits), "--audio-root", str(catalog / "audio"),
        "--query-seconds", "2", "--conditions", "clean", "--n-quantizers", "8", "--device", "cpu",
    ]) == 0
    result = json.loads(report.read_text())
    assert result["protocol"] == "cross_chunk" and result["queries"] == 4
