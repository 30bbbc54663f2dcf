"""The evaluation as a user meets search: random sample offsets, every condition x length, exact == FAISS,
query windows embedded as the server does, and `make quality`'s fallbacks, on a small generated set."""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import run_module
from common.yaml_config import load_yaml, save_yaml
from common.windowing import WindowParams
from training.audio_io import load_audio
from training.conditions import BABBLE_SNR_DB, QUERY_CONDITIONS, babble_source, degrade_query
from training.embedder import EmbedderConfig, TokenEmbedder
from training.encode import HOP
from training.evaluate import track_queries
from training.moss.weights import build_encoder
from training.pipeline import PipelineConfig, prepare_data
from training.retrieval import embed_queries, rank_tracks_exact, rank_tracks_faiss, torch_embed_fn
from training.splits import read_split
from training.token_files import load_token_file, load_tracks, save_token_file
from training.train import TrainConfig, train
from generated_sets import generated_set

TRACKS, SECONDS, LENGTHS = 10, 12.0, (1.0, 2.0, 5.0, 10.0)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 generated tracks, their tiny-tokenizer codes, a 6/2/2 split and a random-weight embedder."""
    root = generated_set(tmp_path_factory.mktemp("evaluate"), TRACKS, SECONDS, seed=4, held_out=0.2)
    torch.manual_seed(0)
    model = TokenEmbedder(EmbedderConfig(d_model=32, embedding_dim=16, dropout=0.0))
    torch.save({"model": model.state_dict(), "model_config": vars(model.cfg)}, root / "embedder.pt")
    return root


def test_evaluation_fills_every_condition_and_length_and_faiss_agrees(generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "quality.json"
    # Codes of a track whose audio is gone (a corpus rebuild dropped it) stay out of the catalog.
    ghost = tmp_path / "ghost-tokens"
    kept = load_token_file(sorted((generated / "tokens").glob("*.npz"))[0])
    save_token_file(ghost / "ghost.npz", dataclasses.replace(kept, track_id="ghost"), 24000)
    assert run_module("training.evaluate", [
        "--checkpoint", str(generated / "embedder.pt"), "--output-json", str(report), "--use-faiss", "--tokens-root", str(generated / "tokens"), str(ghost),
        "--splits-root", str(generated / "splits"), "--audio-root", str(generated / "audio"), "--n-quantizers", "8", "--device", "cpu",
    ]) == 0
    assert "1 tokenized tracks have no audio" in capsys.readouterr().out
    result = json.loads(report.read_text())
    for key in ("recall@1", "recall@10", "recall@100", "mrr", "queries", "catalog_tracks", "catalog_segments", "faiss_top1_agreement",
                "faiss_ranks_equal", "by_condition", "by_length", "by_condition_length", "split", "protocol", "query_alignment", "checkpoint", "moss", "seed"):
        assert key in result, key
    assert result["query_alignment"] == "sample" and result["query_tracks"] == 2
    assert result["catalog_tracks"] == TRACKS  # every split is in the catalog, not only the queried one
    assert result["queries"] == 2 * len(QUERY_CONDITIONS) * len(LENGTHS)
    table = result["by_condition_length"]
    assert list(table) == list(QUERY_CONDITIONS)
    for condition, per_length in table.items():
        assert list(per_length) == [str(s) for s in LENGTHS], condition
        for metrics in per_length.values():
            assert metrics["queries"] == 2
            assert all(0.0 <= metrics[k] <= 1.0 for k in ("recall@1", "recall@10", "mrr"))
            assert metrics["recall@1"] <= metrics["recall@10"] <= metrics["recall@100"]
    assert result["faiss_ranks_equal"] is True and result["faiss_rank_agreement"] == 1.0 and result["faiss_top1_agreement"] == 1.0
    assert 0.0 <= result["query_offset_seconds"]["min"] <= result["query_offset_seconds"]["max"] <= SECONDS - 1.0
    assert result["catalog"]["rows_per_minute"] * SECONDS / 60 == pytest.approx(result["catalog_segments"] / TRACKS, rel=1e-3)
    assert report.with_suffix(".png").stat().st_size > 0


def test_query_offsets_are_arbitrary_and_seeded(generated: Path) -> None:
    track_id = sorted(p.stem for p in (generated / "audio").glob("*.wav"))[0]
    audio = load_audio(generated / "audio" / f"{track_id}.wav")
    chunks = load_tracks(generated / "tokens", [track_id])[track_id]

    def offsets(seed: int, conditions: list[str]) -> list:
        return track_queries(0, track_id, audio, chunks, [2.0], conditions, 20, seed, "same_file_aug", None)

    first, again, other = offsets(7, ["clean"]), offsets(7, ["clean"]), offsets(8, ["clean"])
    assert [q.offset for q in first] == [q.offset for q in again]
    assert all(np.array_equal(a.waveform, b.waveform) for a, b in zip(first, again))
    assert [q.offset for q in first] != [q.offset for q in other]
    assert any(q.offset % HOP for q in first)  # not on the tokenizer's frame grid
    assert len({q.offset for q in first}) > 15
    for query in first:
        assert 0 <= query.offset <= audio.size - 2 * 24000
        assert np.array_equal(query.waveform, audio[query.offset : query.offset + 2 * 24000])  # clean = the excerpt itself


def test_every_condition_keeps_length_and_babble_is_at_its_snr(generated: Path) -> None:
    paths = sorted((generated / "audio").glob("*.wav"))
    x = 0.1 * load_audio(paths[0])[: 3 * 24000]  # quiet: no peak rescaling, so the mix can be read back
    babble = babble_source(paths[1:])
    for condition in QUERY_CONDITIONS:
        y = degrade_query(x, condition, np.random.default_rng(1), babble)
        assert y.dtype == np.float32 and y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() <= 1.0, condition
    y = degrade_query(x, "babble5", np.random.default_rng(2), babble)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y.astype(np.float64) - x) ** 2))
    assert snr == pytest.approx(BABBLE_SNR_DB, abs=0.5)
    with pytest.raises(ValueError, match="babble"):
        degrade_query(x, "babble5", np.random.default_rng(2))
    with pytest.raises(ValueError, match="not queried"):
        babble_source(paths[:2])


def test_query_embedding_follows_the_served_windowing() -> None:
    """A 23-s query is 4 served windows; each is embedded alone and the query's score is their best."""
    encoder = build_encoder("tiny")
    torch.manual_seed(1)
    embedder = TokenEmbedder(EmbedderConfig(d_model=32, embedding_dim=16, dropout=0.0)).eval()
    embed = torch_embed_fn(embedder)
    rng = np.random.default_rng(0)
    long, short = [(0.2 * rng.standard_normal(n)).astype(np.float32) for n in (23 * 24000 + 17, 3 * 24000 + 5)]
    rows, owner = embed_queries(encoder, embed, [short, long], 8, WindowParams(), batch_size=3)
    assert owner.tolist() == [0, 1, 1, 1, 1]
    alone, _ = embed_queries(encoder, embed, [long[5 * 24000 : 15 * 24000]], 8)
    np.testing.assert_allclose(rows[2], alone[0], atol=1e-5)  # the second window, tokenized alone
    segments = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((12, 16)).astype(np.float32)), dim=1).numpy()
    segment_track = np.repeat(np.arange(4), 3)
    order, scores = rank_tracks_exact(rows, segments, segment_track, 4, row_query=owner)
    best = [(rows[owner == q] @ segments.T).reshape(-1, 4, 3).max(axis=(0, 2)) for q in (0, 1)]
    for q in (0, 1):
        assert order[q].tolist() == np.argsort(-best[q], kind="stable").tolist()
        np.testing.assert_allclose(scores[q], np.sort(best[q])[::-1], atol=1e-6)
    faiss_order, _ = rank_tracks_faiss(rows, segments, segment_track, 4, row_query=owner)
    assert np.array_equal(order, faiss_order)


def _fake_corpus(generated: Path, root: Path) -> Path:
    """The generated tracks dressed as a real-music corpus: manifest.csv with splits, audio/<track_id>.wav."""
    corpus = root / "corpus"
    (corpus / "audio").mkdir(parents=True)
    rows = []
    for i, path in enumerate(sorted((generated / "audio").glob("*.wav"))[:8]):
        track_id = f"real_{i:03d}"
        shutil.copy(path, corpus / "audio" / f"{track_id}.wav")
        rows.append({"track_id": track_id, "package": "test", "source_path": str(path), "duration_s": SECONDS, "licence": "test",
                     "split": ("train", "train", "train", "train", "val", "val", "test", "test")[i]})
    with open(corpus / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return corpus


@pytest.mark.parametrize("with_corpus", [False, True])
def test_quality_says_what_it_fell_back_to(generated: Path, tmp_path: Path, with_corpus: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """With a corpus an embedder trained elsewhere is evaluated; without one, quality trains its own (1 epoch)."""
    corpus = _fake_corpus(generated, tmp_path) if with_corpus else tmp_path / "no-corpus"
    report = tmp_path / "reports" / "quality.json"
    embedder = ["--checkpoint", str(generated / "embedder.pt")] if with_corpus else ["--epochs", "1", "--views-per-track", "2"]
    assert run_module("training.quality", [
        "--work-dir", str(tmp_path / "work"), "--report", str(report), "--plot", str(tmp_path / "reports" / "recall.png"), "--corpus", str(corpus),
        "--moss-config", str(tmp_path / "no-weights"), *embedder, "--tracks", "6", "--distractors", "5", "--seconds", "8", "--device", "cpu", "--eval-seed", "3",
    ]) == 0
    out = capsys.readouterr().out
    result = json.loads(report.read_text())
    assert result["data"]["tokenizer"] == "tiny" and result["moss"] == "tiny"
    assert any("no trained weights" in note for note in result["data"]["fallbacks"]) and "NOTE tokenizer" in out
    assert (tmp_path / "reports" / "recall.png").stat().st_size > 0
    if with_corpus:
        assert result["data"]["source"] == "corpus" and not any("corpus" in note for note in result["data"]["fallbacks"])
        assert result["catalog_tracks"] == 8 + 5 and result["query_tracks"] == 2  # real music + distractors; corpus test tracks only
        assert result["data"]["generated_tracks"] == 5
    else:
        assert result["data"]["source"] == "generated" and "NOTE audio: no real-music corpus" in out
        assert result["catalog_tracks"] == 6
        trained = Path(result["checkpoint"])
        assert trained.is_file() and trained.parent.parent.name == "embedder-generated-6x8s"
        assert (tmp_path / "reports" / "training_history.png").stat().st_size > 0


def test_layout_sweep_reports_recall_size_and_build_time_per_layout(generated: Path, tmp_path: Path) -> None:
    report = tmp_path / "layout.json"
    assert run_module("training.layout", [
        "--checkpoint", str(generated / "embedder.pt"), "--audio-root", str(generated / "audio"), "--splits-root", str(generated / "splits"),
        "--layouts", "whole:10:5", "alone:5:2.5", "--conditions", "clean", "snr10", "--other-tracks", "3", "--output-json", str(report),
        "--moss-config", "tiny", "--n-quantizers", "8", "--device", "cpu",
    ]) == 0
    result = json.loads(report.read_text())
    assert result["catalog_tracks"] == 2 + 3 and result["queries"] == 2 * 2 and result["embedding_dim"] == 16
    whole, alone = result["layouts"]
    assert (whole["tokenize"], whole["window_s"], whole["hop_s"], alone["tokenize"]) == ("whole", 10.0, 5.0, "alone")
    # 12-s tracks: 10-s windows every 5 s (the last one aligned to the end) = 2 rows; 5-s windows every 2.5 s = 4.
    assert (whole["rows_per_track"], alone["rows_per_track"]) == (2.0, 4.0)
    for row in (whole, alone):
        assert set(row["recall@1"]) == {"clean", "snr10"} and all(0.0 <= r <= 1.0 for r in row["recall@1"].values())
        assert row["bytes_per_minute"] == pytest.approx(row["rows_per_minute"] * 16 * 4, rel=1e-3)
        assert row["within_budget"] is (row["bytes_per_minute"] <= 16 * 1024) and row["build_seconds_per_minute"] > 0
    assert report.with_suffix(".png").stat().st_size > 0


def test_a_catalog_of_some_corpus_splits_tokenizes_only_their_tracks(generated: Path, tmp_path: Path) -> None:
    """The CPU demo's catalog: the corpus's test tracks (linked, not copied) and the distractors, nothing else tokenized."""
    corpus = _fake_corpus(generated, tmp_path)
    cfg = PipelineConfig(work_dir=tmp_path / "work", tracks=3, seconds=8.0, views_per_track=None, n_quantizers=8, epochs=None, val_ratio=0.0,
                         test_ratio=0.0, moss_config="tiny", device="cpu", corpus=corpus, checkpoint=generated / "embedder.pt", distractors=3,
                         corpus_splits=("test",))
    data = prepare_data(cfg, {})
    test_ids = read_split(data.splits / "test.txt")
    assert len(test_ids) == 2 and data.corpus_tracks == 2 and data.checkpoint == generated / "embedder.pt"
    assert sorted(p.stem for p in data.audio_roots[0].glob("*.wav")) == sorted(test_ids)
    assert all(p.is_symlink() for p in data.audio_roots[0].glob("*.wav"))
    assert sorted(p.stem for p in data.tokens_roots[0].glob("*.npz")) == sorted(test_ids)
    assert len(read_split(data.splits / "train.txt")) == 4  # the splits still name every corpus track
    with pytest.raises(SystemExit, match="train and val"):
        prepare_data(dataclasses.replace(cfg, checkpoint=None), {})
    with pytest.raises(SystemExit, match="unknown corpus splits"):
        prepare_data(dataclasses.replace(cfg, corpus_splits=("tests",)), {})


def test_quality_prepare_only_tokenizes_and_stops(generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU machine's per-pack step: corpus and distractors tokenized, no views, no embedder, no report."""
    corpus = _fake_corpus(generated, tmp_path)
    work, report = tmp_path / "work", tmp_path / "reports" / "quality.json"
    assert run_module("training.quality", [
        "--work-dir", str(work), "--report", str(report), "--corpus", str(corpus), "--moss-config", "tiny", "--prepare-only",
        "--distractors", "3", "--seconds", "8", "--device", "cpu",
    ]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["prepared"]["corpus_tracks"] == 8 and printed["prepared"]["generated_tracks"] == 3
    tokens = sorted(Path(root) for root in printed["tokens"])
    assert [len(list(root.glob("*.npz"))) for root in tokens] == [8, 3]
    assert not report.exists() and not list(work.rglob("views")) and not list(work.rglob("*.pt"))


def test_quality_on_a_cpu_stores_the_views_of_an_online_config(generated: Path, tmp_path: Path) -> None:
    """Online pairs tokenize every step (GPU work): on a CPU the chain stores views once instead, and says so."""
    cfg = load_yaml(TrainConfig, "configs/train.yaml")
    cfg.online.enabled, cfg.online.hard_tracks, cfg.model.d_model, cfg.model.embedding_dim, cfg.views.per_track = True, 2, 32, 16, 2
    save_yaml(cfg, tmp_path / "online.yaml")
    corpus, report, work = _fake_corpus(generated, tmp_path), tmp_path / "quality.json", tmp_path / "work"
    assert run_module("training.quality", [
        "--work-dir", str(work), "--report", str(report), "--plot", str(tmp_path / "recall.png"), "--corpus", str(corpus), "--moss-config", "tiny",
        "--train-config", str(tmp_path / "online.yaml"), "--epochs", "1", "--distractors", "2", "--seconds", "8", "--device", "cpu",
    ]) == 0
    result = json.loads(report.read_text())
    assert any("online.enabled off" in note and "hard_tracks 2 -> 0" in note for note in result["data"]["fallbacks"])
    used = load_yaml(TrainConfig, Path(result["checkpoint"]).parent / "train.yaml")
    assert used.online.enabled is False and used.online.hard_tracks == 0
    # The same config trained directly, online off but hard tracks asked for, is refused before any work.
    used.online.hard_tracks, used.output_dir = 2, str(tmp_path / "refused")
    with pytest.raises(SystemExit, match="needs online.enabled"):
        train(used, torch.device("cpu"))
    assert not (tmp_path / "refused").exists()
    train_ids = (Path(used.data.splits_root) / "train.txt").read_text().split()
    assert train_ids and all((Path(used.data.views_root) / f"{t}.npz").is_file() for t in train_ids)
