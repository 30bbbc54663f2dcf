"""Training views and the catalog layout: offsets, degradations, pairing with catalog windows, training on them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import training.augment as augment
from common.cli import run_module
from common.yaml_config import load_yaml, save_yaml
from training.audio_io import SAMPLE_RATE, list_audio_files, load_audio
from training.augment import TRACK_BABBLE, AugmentConfig, random_view
from training.codebook_init import codec_code_vectors, init_from_codebook, tokenizer_quantizer
from training.dataset import CatalogConfig, build_catalog, holding_windows, load_views, window_starts
from training.embedder import EmbedderConfig, TokenEmbedder
from training.encode import HOP, clip_encoder
from training.losses import nt_xent
from training.moss.config import QuantizerConfig
from training.moss.quantizer import ResidualLFQ
from training.moss.weights import build_encoder
from training.splits import read_split
from training.token_files import load_tracks
from training.train import TrainConfig, train
from training.view_synth import ViewConfig, make_views, track_babble
from training.views import synthesized
from generated_sets import generated_set

TRACKS = 8
SECONDS = 12
NOISE_ONLY = AugmentConfig(reverb_prob=0.0, noise_prob=1.0, eq_prob=0.0, gain_db=(0.0, 0.0), ogg_prob=0.0, dropout_prob=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_set(tmp_path_factory.mktemp("views"), TRACKS, SECONDS, seed=5)


def _config(data: Path, views: str = "views", **catalog) -> TrainConfig:
    cfg = load_yaml(TrainConfig, "configs/train.yaml")
    cfg.output_dir = str(data / f"checkpoints-{views}")
    cfg.data.audio_root, cfg.data.tokens_root, cfg.data.splits_root = str(data / "audio"), str(data / "tokens"), str(data / "splits")
    cfg.data.views_root = str(data / views)
    cfg.catalog = CatalogConfig(**catalog)
    cfg.model.d_model, cfg.model.n_heads, cfg.model.embedding_dim, cfg.model.dropout = 32, 2, 16, 0.0
    return cfg


@pytest.fixture(scope="module")
def views(data: Path) -> TrainConfig:
    cfg = _config(data)
    save_yaml(cfg, data / "train.yaml")
    assert run_module("training.views", ["--config", str(data / "train.yaml"), "--device", "cpu", "--workers", "2"]) == 0
    return cfg


def _audio(data: Path) -> list[Path]:
    return list_audio_files(data / "audio")


def test_excerpts_start_at_arbitrary_samples_reproducibly(data: Path) -> None:
    audio = load_audio(_audio(data)[0])
    cfg = ViewConfig(per_track=40, augment=AugmentConfig(**{**vars(NOISE_ONLY), "noise_kinds": ("white",)}))
    first = make_views(audio, cfg, np.random.default_rng(3), None)
    offsets = np.array([v.offset for v in first])
    lengths = np.array([v.waveform.size for v in first])
    assert np.count_nonzero(offsets % HOP) >= 35  # off the frame grid (a multiple of 1,920 by chance is 1 in 1,920)
    assert len(set(offsets)) == 40 and (offsets + lengths <= audio.size).all()
    assert (lengths >= SAMPLE_RATE).all() and (lengths <= 10 * SAMPLE_RATE).all() and lengths.std() > SAMPLE_RATE
    again = make_views(audio, cfg, np.random.default_rng(3), None)
    assert [v.offset for v in again] == list(offsets) and all(np.array_equal(a.waveform, b.waveform) for a, b in zip(first, again))
    assert [v.offset for v in make_views(audio, cfg, np.random.default_rng(4), None)] != list(offsets)


@pytest.mark.parametrize("kind", [*augment.NOISE_KINDS, TRACK_BABBLE])
@pytest.mark.parametrize("snr_db", [20.0, 5.0, -5.0])
def test_view_noise_is_mixed_at_the_drawn_snr(data: Path, kind: str, snr_db: float, monkeypatch: pytest.MonkeyPatch) -> None:
    # Record the noise each view mixed in (generated, or the babble of other tracks), then solve
    # view = a * excerpt + b * noise: the SNR measured back from the two parts.
    added: list[np.ndarray] = []
    make_noise, babble = augment.make_noise, track_babble(_audio(data)[1:], (2, 6))
    monkeypatch.setattr(augment, "make_noise", lambda *args: added.append(make_noise(*args)) or added[-1])
    cfg = AugmentConfig(**{**vars(NOISE_ONLY), "noise_kinds": (kind,), "snr_db": (snr_db, snr_db)})
    x = load_audio(_audio(data)[0])[: 5 * SAMPLE_RATE]
    view, applied = random_view(x, np.random.default_rng(11), cfg, lambda n, rng: added.append(babble(n, rng)) or added[-1])
    assert applied["noise"] == kind and applied["snr_db"] == snr_db and len(added) == 1
    (a, b), *_ = np.linalg.lstsq(np.stack([x, added[0]], axis=1).astype(np.float64), view.astype(np.float64), rcond=None)
    measured = 10 * np.log10(np.sum(np.square(a * x.astype(np.float64))) / np.sum(np.square(b * added[0])))
    assert abs(measured - snr_db) < 0.5


def test_babble_mixes_other_tracks(data: Path) -> None:
    paths = _audio(data)
    noise = track_babble(paths[1:], (2, 6))(3 * SAMPLE_RATE, np.random.default_rng(0))
    assert noise.shape == (3 * SAMPLE_RATE,) and np.sqrt(np.mean(noise**2)) == pytest.approx(1.0)
    # Three tracks at least: no single track explains most of the mixture.
    best = max(abs(np.corrcoef(noise, load_audio(p)[: noise.size])[0, 1]) for p in paths[1:])
    assert best < 0.95


def test_dropouts_and_ogg_change_the_view(data: Path) -> None:
    x = load_audio(_audio(data)[0])[: 4 * SAMPLE_RATE]
    cfg = AugmentConfig(**{**vars(NOISE_ONLY), "noise_prob": 0.0, "dropout_prob": 1.0})
    view, applied = random_view(x, np.random.default_rng(2), cfg)
    assert 1 <= len(applied["dropouts"]) <= 4
    for start, length in applied["dropouts"]:
        assert 0.02 * SAMPLE_RATE - 1 <= length <= 0.2 * SAMPLE_RATE and not view[start : start + length].any()
    assert np.count_nonzero(view != x) <= sum(length for _, length in applied["dropouts"])
    cfg = AugmentConfig(**{**vars(NOISE_ONLY), "noise_prob": 0.0, "ogg_prob": 1.0})
    view, applied = random_view(x, np.random.default_rng(2), cfg)
    assert 0.0 <= applied["ogg_quality"] <= 0.3 and view.shape == x.shape
    error = np.sqrt(np.mean((view - x) ** 2)) / np.sqrt(np.mean(x**2))
    assert 0.001 < error < 0.5  # changed by the codec, still the same music


def test_parallel_views_equal_serial_ones(data: Path) -> None:
    paths = {p.stem: p for p in _audio(data)}
    tasks = [(t, paths[t], ViewConfig(per_track=2), 9) for t in sorted(paths)[:3]]
    serial, parallel = list(synthesized(tasks, paths, 0)), list(synthesized(tasks, paths, 2))
    assert [t for t, _ in serial] == [t for t, _ in parallel] == sorted(paths)[:3]
    for (_, a), (_, b) in zip(serial, parallel):
        assert [v.offset for v in a] == [v.offset for v in b] and all(np.array_equal(x.waveform, y.waveform) for x, y in zip(a, b))


def test_whole_track_windows_cover_the_track_and_alone_windows_share_their_grid(data: Path) -> None:
    tracks = load_tracks(data / "tokens")
    layout = CatalogConfig(window_s=4.0, hop_s=3.0)
    whole = build_catalog(tracks, layout)
    for t, track_id in enumerate(whole.track_ids):
        codes = tracks[track_id][0].codes
        rows = np.flatnonzero(whole.segment_track == t)
        covered = np.zeros(codes.shape[1], dtype=bool)
        for row in rows:
            start = whole.segment_start[row] // HOP
            assert whole.segment_start[row] % HOP == 0 and np.array_equal(whole.segments[row], codes[:, start : start + 50])
            covered[start : start + 50] = True
        assert covered.all()
    alone = build_catalog(tracks, CatalogConfig(tokenize="alone", window_s=4.0, hop_s=3.0), clip_encoder(build_encoder("tiny"), 8))
    assert np.array_equal(alone.segment_start, whole.segment_start) and np.array_equal(alone.segment_track, whole.segment_track)
    assert all(a.shape == w.shape for a, w in zip(alone.segments, whole.segments))
    # A window at the track's start has the same samples and the same (empty) causal context either way.
    assert np.array_equal(alone.segments[0], whole.segments[0])
    with pytest.raises(ValueError, match="encoder"):
        build_catalog(tracks, CatalogConfig(tokenize="alone"))


def test_window_grid_and_holding() -> None:
    assert window_starts(300, 125, 62) == [0, 62, 124, 175] and window_starts(50, 125, 62) == [0]
    starts, sizes = np.array([0, 100, 200]), np.array([200, 200, 200])
    assert list(holding_windows(starts, sizes, 120, 50)) == [0, 1]
    assert list(holding_windows(starts, sizes, 210, 150)) == [2]
    assert list(holding_windows(starts, sizes, 150, 200)) == [1, 2]  # held by none: the largest overlaps, tied
    assert list(holding_windows(starts, sizes, 10, 350)) == [1]  # longer than any window: the largest overlap


@pytest.mark.parametrize("tokenize", ["whole", "alone"])
def test_each_view_pairs_with_windows_that_hold_its_samples(data: Path, views: TrainConfig, tokenize: str) -> None:
    cfg = views
    if tokenize == "alone":
        cfg = _config(data, "views-alone", tokenize="alone")
        save_yaml(cfg, data / "train-alone.yaml")
        assert run_module("training.views", ["--config", str(data / "train-alone.yaml"), "--device", "cpu", "--workers", "0"]) == 0
    ids = read_split(data / "splits" / "train.txt") + read_split(data / "splits" / "val.txt")
    held = 0
    for track_id in ids:
        track = load_views(Path(cfg.data.views_root), track_id)
        assert len(track.lengths) == cfg.views.per_track and np.count_nonzero(track.offsets % HOP) > 0
        assert np.array_equal(track.lengths, track.samples // HOP)
        for k in range(len(track.lengths)):
            for w in track.paired_windows(k):
                start, end = track.window_starts[w], track.window_starts[w] + track.window_lengths[w] * HOP
                inside = start <= track.offsets[k] and track.offsets[k] + track.samples[k] <= end
                held += inside
                # Views up to window - hop (5 s) always fit a window; longer ones pair with the largest overlap.
                assert inside or track.samples[k] > (cfg.catalog.window_s - cfg.catalog.hop_s) * SAMPLE_RATE
    assert held > 0
    meta = json.loads((Path(cfg.data.views_root) / "views.json").read_text())
    assert meta["catalog"]["tokenize"] == tokenize and meta["tokenizer"] == "tiny"


def test_views_and_train_refuse_a_views_folder_of_another_layout(data: Path, views: TrainConfig) -> None:
    other = _config(data, "views", window_s=6.0, hop_s=3.0)
    save_yaml(other, data / "train-other.yaml")
    with pytest.raises(SystemExit, match="catalog"):
        run_module("training.views", ["--config", str(data / "train-other.yaml"), "--device", "cpu"])
    with pytest.raises(SystemExit, match="catalog"):
        run_module("training.train", ["--config", str(data / "train-other.yaml"), "--device", "cpu"])


def test_training_on_views_lowers_the_loss(data: Path, views: TrainConfig) -> None:
    # The views of 4 training tracks come back every epoch: a model that learns anything lowers the loss
    # on them even with the random tokenizer (whose codes at sample offsets say little about the track).
    cfg = views
    cfg.data.pairs_per_track, cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.warmup_steps, cfg.optim.lr = 16, 16, 4, 1, 0.005
    cfg.model.init_from_codebook, cfg.code_dropout = True, 0.0
    result = train(cfg, torch.device("cpu"))
    history = json.loads((Path(cfg.output_dir) / "history.json").read_text())
    assert result["epochs"] == 4 and (Path(cfg.output_dir) / "best.pt").exists()
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1


def test_init_from_codebook_keeps_the_codecs_distances() -> None:
    def distances(rows: np.ndarray) -> np.ndarray:
        upper = np.triu_indices(len(rows), 1)
        return np.sqrt(np.sum((rows[:, None] - rows[None]) ** 2, axis=-1))[upper]

    # tiny: an 16-dim codec space into a 32-wide table (isometry); a 64-dim one into 32 (PCA).
    wide = ResidualLFQ(QuantizerConfig(input_dim=32, rvq_dim=64, output_dim=32, num_quantizers=4, codebook_size=128, codebook_dim=8))
    torch.manual_seed(0)
    for p in wide.parameters():
        torch.nn.init.normal_(p)
    for quantizer, levels, size in ((tokenizer_quantizer("tiny"), 8, 64), (wide, 4, 128)):
        cfg = EmbedderConfig(n_levels=levels, codebook_size=256, d_model=32, n_heads=2)
        model = TokenEmbedder(cfg)
        before = model.code_embedding.weight.detach().numpy().copy()
        init_from_codebook(model, quantizer)
        table = model.code_embedding.weight.detach().numpy()
        vectors = codec_code_vectors(quantizer, levels)
        for level in range(levels):
            rows = table[level * 256 : level * 256 + size]
            assert np.corrcoef(distances(rows), distances(vectors[level]))[0, 1] > 0.8
            assert abs(np.corrcoef(distances(before[level * 256 : level * 256 + size]), distances(vectors[level]))[0, 1]) < 0.2
        np.testing.assert_array_equal(table[size:256], before[size:256])  # codes the tokenizer lacks keep their init
        assert np.mean(np.sum(table[: size] ** 2, axis=1)) == pytest.approx(np.mean(np.sum(before[:size] ** 2, axis=1)), rel=0.3)


def _nt_xent_by_hand(z1: torch.Tensor, z2: torch.Tensor, t: float, groups: torch.Tensor) -> float:
    b = len(z1)
    z, row_groups = torch.cat([z1, z2]), torch.cat([groups, groups])
    total = 0.0
    for i in range(2 * b):
        positive = (i + b) % (2 * b)
        allowed = [j for j in range(len(z)) if j != i and (j == positive or row_groups[j] != row_groups[i])]
        total -= float(z[i] @ z[positive] / t - torch.logsumexp(z[allowed] @ z[i] / t, dim=0))
    return total / (2 * b)


def test_nt_xent_leaves_the_pairs_own_track_out_of_its_negatives() -> None:
    torch.manual_seed(1)
    z1, z2 = (torch.nn.functional.normalize(torch.randn(5, 8), dim=1) for _ in range(2))
    groups = torch.tensor([0, 0, 1, 2, 3])
    assert nt_xent(z1, z2, 0.1, groups).item() == pytest.approx(_nt_xent_by_hand(z1, z2, 0.1, groups), rel=1e-5)
    distinct = torch.arange(5)
    assert nt_xent(z1, z2, 0.1, distinct).item() == pytest.approx(nt_xent(z1, z2, 0.1).item(), rel=1e-6)


@pytest.mark.parametrize("path", ["configs/train.yaml", "configs/train_music.yaml"])
def test_training_configs_load(path: str) -> None:
    cfg = load_yaml(TrainConfig, path)
    assert cfg.views.augment.noise_kinds and cfg.catalog.window_frames >= cfg.catalog.hop_frames
    assert cfg.data.tokenizer == ("tiny" if path.endswith("train.yaml") else "models/moss-small")
