"""Training pairs made per step (training.online_views) and the batched degradations they use (training.torch_augment)."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import run_module
from common.yaml_config import load_yaml, save_yaml
from training.audio_io import SAMPLE_RATE, load_audio
from training.augment import TRACK_BABBLE, AugmentConfig, draw_laptop_curve, draw_phone_curve
from training.dataset import CatalogConfig
from training.dsp import band_pass, fft_convolve, spectral_gain
from training.encode import HOP
from training.embedder import EmbedderConfig, TokenEmbedder
from training.online_views import OnlinePairs, OnlineViewsConfig, nearest_tracks, online_pairs
from training.splits import read_split
from training.torch_augment import CURVE_POINTS, BankSizes, DegradationBank, degrade_batch
from training.torch_augment import fft_convolve as torch_fft_convolve
from training.torch_augment import spectral_gain as torch_spectral_gain
from training.train import TrainConfig, train
from training.view_synth import ViewConfig
from generated_sets import generated_set

TRACKS = 8
SECONDS = 12
SMALL_BANK = BankSizes(noises_per_kind=2, noise_s=11.0, rooms=4, curves_per_kind=4)
NOTHING = AugmentConfig(reverb_prob=0.0, noise_prob=0.0, eq_prob=0.0, gain_db=(0.0, 0.0), ogg_prob=0.0, dropout_prob=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_set(tmp_path_factory.mktemp("online"), TRACKS, SECONDS, seed=7)


def _pairs(data: Path, augment: AugmentConfig | None = None, batch_size: int = 6, seed: int = 3, hard_tracks: int = 0, **catalog) -> OnlinePairs:
    views = ViewConfig(min_s=1.0, max_s=6.0, augment=augment or AugmentConfig())
    return online_pairs(read_split(data / "splits" / "train.txt"), data / "audio", data / "tokens", "tiny", CatalogConfig(**catalog), 8, views,
                        OnlineViewsConfig(enabled=True, bank=SMALL_BANK, hard_tracks=hard_tracks), batch_size, seed, torch.device("cpu"))


@pytest.fixture(scope="module")
def bank() -> DegradationBank:
    return DegradationBank.draw(AugmentConfig(), np.random.default_rng(0), torch.device("cpu"), SMALL_BANK)


def _clips(rows: int = 5, samples: int = 3 * SAMPLE_RATE) -> torch.Tensor:
    t = torch.arange(samples) / SAMPLE_RATE
    # Quiet enough that no mixture reaches full scale: the SNR is then readable from y - x.
    return torch.stack([0.05 * torch.sin(2 * torch.pi * (220.0 + 110.0 * r) * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 0.7 * t)) for r in range(rows)])


@pytest.mark.parametrize("kinds", [("white", "pink", "brown", "blue", "babble"), (TRACK_BABBLE,)])
def test_noise_is_mixed_at_the_drawn_snr(bank: DegradationBank, kinds: tuple[str, ...]) -> None:
    cfg = AugmentConfig(reverb_prob=0.0, noise_prob=1.0, noise_kinds=kinds, snr_db=(-5.0, 20.0), eq_prob=0.0, gain_db=(0.0, 0.0), ogg_prob=0.0, dropout_prob=0.0)
    x = _clips()
    babble = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    babble = babble / babble.square().mean(dim=1, keepdim=True).sqrt()
    y, applied = degrade_batch(x, torch.Generator().manual_seed(5), bank, cfg, babble)
    measured = 10 * torch.log10(x.square().mean(dim=1) / (y - x).square().mean(dim=1))
    assert applied["noise"].all()
    assert torch.allclose(measured, applied["snr_db"], atol=0.5), (measured, applied["snr_db"])
    assert applied["snr_db"].min() >= -5.0 and applied["snr_db"].max() <= 20.0


def test_degradations_are_seeded_bounded_and_keep_the_length(bank: DegradationBank) -> None:
    x = _clips(rows=16) * 18  # near full scale: gains and rooms must scale down, never clip
    babble = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    first, applied = degrade_batch(x, torch.Generator().manual_seed(9), bank, AugmentConfig(), babble)
    again, _ = degrade_batch(x, torch.Generator().manual_seed(9), bank, AugmentConfig(), babble)
    other, _ = degrade_batch(x, torch.Generator().manual_seed(10), bank, AugmentConfig(), babble)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == x.shape and torch.isfinite(first).all() and first.abs().max() <= 1.0 + 1e-6
    # 16 views with the default probabilities: each degradation is drawn for some and not for others.
    for name in ("reverb", "noise", "eq", "dropouts"):
        assert 0 < int(applied[name].sum()) < 16, name


def test_dropouts_silence_gaps_and_leave_the_rest(bank: DegradationBank) -> None:
    cfg = AugmentConfig(**{**NOTHING.__dict__, "dropout_prob": 1.0, "dropouts": (2, 2), "dropout_ms": (50.0, 50.0)})
    x = _clips() + 0.01  # no zero crossings land on exact zeros
    y, _ = degrade_batch(x, torch.Generator().manual_seed(4), bank, cfg)
    silent = (y == 0).sum(dim=1)
    gap = int(0.05 * SAMPLE_RATE)
    assert ((silent >= gap) & (silent <= 2 * gap)).all()
    assert torch.equal(y[y != 0], x[y != 0])


def test_torch_filters_match_the_numpy_ones() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(2 * SAMPLE_RATE)
    grid = np.linspace(0.0, SAMPLE_RATE / 2.0, CURVE_POINTS)
    for curve in (draw_phone_curve(rng), draw_laptop_curve(rng), partial(band_pass, low_hz=300.0, high_hz=3000.0)):
        expected = spectral_gain(x, curve, SAMPLE_RATE)
        got = torch_spectral_gain(torch.from_numpy(x)[None], torch.from_numpy(curve(grid))[None])[0].numpy()
        assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()
    h = rng.standard_normal(5000) * np.exp(-np.arange(5000) / 800)
    assert np.allclose(torch_fft_convolve(torch.from_numpy(x)[None], torch.from_numpy(h)[None])[0].numpy(), fft_convolve(x, h), atol=1e-8)


@pytest.mark.parametrize("tokenize", ["whole", "alone"])
def test_views_are_excerpts_at_sample_offsets_paired_with_windows_that_hold_them(data: Path, tokenize: str) -> None:
    pairs = _pairs(data, NOTHING, tokenize=tokenize, window_s=4.0, hop_s=2.0)
    offsets_seen = []
    for step in range(4):
        tracks, offsets, samples = pairs.draw(pairs.generator(step))
        offsets_seen += offsets
        audio = [load_audio(p) for p in sorted((data / "audio").glob("*.wav"))]
        by_id = {p.stem: a for p, a in zip(sorted((data / "audio").glob("*.wav")), audio)}
        train_ids = sorted(read_split(data / "splits" / "train.txt"))
        clean = pairs.audio.excerpts(tracks, offsets, samples)
        for row, (t, o) in enumerate(zip(tracks, offsets)):
            assert np.array_equal(clean[row].numpy(), by_id[train_ids[t]][o : o + samples])
        window = pairs.positives(tracks, offsets, samples, pairs.generator(step)).cpu().numpy()
        starts = pairs.window_start[window]
        ends = starts + pairs.window_samples[window]
        assert np.array_equal(pairs.window_track[window], tracks)
        holdable = samples <= 4 * SAMPLE_RATE - HOP  # shorter than a window less a frame: some window holds it
        if holdable:
            assert ((starts <= np.array(offsets)) & (ends >= np.array(offsets) + samples)).all()
    assert any(o % HOP for o in offsets_seen), "offsets stay on the frame grid"


def test_batches_are_a_function_of_the_step(data: Path) -> None:
    # What makes a resumed run see the pairs an uninterrupted one would: two sources, same seed, same steps.
    first, second = _pairs(data), _pairs(data)
    for step in (0, 5):
        for a, b in zip(first.batch(step), second.batch(step)):
            assert torch.equal(a, b)
    window, window_mask, view, view_mask, tracks = first.batch(1)
    assert window.shape[:2] == view.shape[:2] == (6, 8) and window_mask.shape == (6, window.shape[2]) and view_mask.all()
    assert not all(torch.equal(a, b) for a, b in zip(first.batch(0), first.batch(1)))


def test_nearest_tracks_are_other_tracks_by_their_mean_window() -> None:
    # Tracks 0 and 1 point one way, 2 and 3 another; track 3's second window pulls it towards 0/1, not past 2.
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.9, 0.2], [0.0, 1.0], [0.1, 1.0], [0.0, 1.0], [0.6, 0.8]]), dim=1)
    window_track = torch.tensor([0, 0, 1, 2, 2, 3, 3])
    assert nearest_tracks(z, window_track, 4, 1).flatten().tolist() == [1, 0, 3, 2]
    assert nearest_tracks(z, window_track, 4, 3)[0].tolist() == [1, 3, 2]


def test_hard_track_batches_group_each_drawn_track_with_its_nearest(data: Path) -> None:
    pairs = _pairs(data, NOTHING, batch_size=7, hard_tracks=2)
    uniform = _pairs(data, NOTHING, batch_size=7)
    # Until neighbours are known (before the first epoch's refresh) draws are uniform, as without hard tracks.
    assert pairs.draw(pairs.generator(0)) == uniform.draw(uniform.generator(0))
    model = TokenEmbedder(EmbedderConfig(n_levels=8, codebook_size=1024, d_model=32, n_heads=2, n_layers=1, embedding_dim=16)).eval()
    with torch.no_grad():
        pairs.refresh_neighbours(lambda codes, mask: model(codes, mask), chunk=5)
    n_tracks = len(pairs.audio.lengths)
    assert pairs.neighbours.shape == (n_tracks, 2)
    assert all(t not in row for t, row in enumerate(pairs.neighbours.tolist()))
    tracks, offsets, samples = pairs.draw(pairs.generator(0))
    assert len(tracks) == 7 and all(0 <= o <= pairs.audio.lengths[t] - samples for t, o in zip(tracks, offsets))
    for start in range(0, 7, 3):
        group = tracks[start : start + 3]
        assert group[1:] == pairs.neighbours[group[0]].tolist()[: len(group) - 1]
    with pytest.raises(ValueError, match="hard_tracks"):
        _pairs(data, hard_tracks=n_tracks)


@pytest.mark.parametrize("hard_tracks", [0, 2])
def test_online_training_runs_resumes_and_stores_only_val_views(data: Path, tmp_path: Path, hard_tracks: int) -> None:
    cfg = load_yaml(TrainConfig, "configs/train.yaml")
    cfg.output_dir, cfg.data.views_root = str(tmp_path / "checkpoints"), str(tmp_path / "views")
    cfg.data.audio_root, cfg.data.tokens_root, cfg.data.splits_root = str(data / "audio"), str(data / "tokens"), str(data / "splits")
    cfg.online, cfg.views.per_track, cfg.views.max_s = OnlineViewsConfig(enabled=True, bank=SMALL_BANK, hard_tracks=hard_tracks), 3, 6.0
    cfg.model.d_model, cfg.model.n_heads, cfg.model.embedding_dim = 32, 2, 16
    cfg.data.pairs_per_track, cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.warmup_steps = 8, 8, 1, 1
    save_yaml(cfg, tmp_path / "train.yaml")
    assert run_module("training.views", ["--config", str(tmp_path / "train.yaml"), "--device", "cpu", "--workers", "0", "--splits", "val"]) == 0
    assert sorted(p.stem for p in (tmp_path / "views").glob("*.npz")) == sorted(read_split(data / "splits" / "val.txt"))
    train(cfg, torch.device("cpu"))
    cfg.optim.epochs = 2
    result = train(cfg, torch.device("cpu"), resume=tmp_path / "checkpoints" / "last.pt")
    history = json.loads((tmp_path / "checkpoints" / "history.json").read_text())
    assert result["epochs"] == 2 and [h["epoch"] for h in history] == [1, 2]
    assert 0.0 <= history[-1]["val_recall@1"] <= 1.0 and np.isfinite(history[-1]["train_loss"])
