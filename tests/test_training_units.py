"""Units of the training side: splits, masking, the loss, metrics, windows, batching."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.dataset import catalog_windows, pad_batch
from training.embedder import EmbedderConfig, EmbedderFromCounts, TokenEmbedder
from training.losses import nt_xent
from training.metrics import mean_reciprocal_rank, ranks_of_targets, recall_at_k, retrieval_metrics
from training.retrieval import embed_sequences, rank_tracks_exact, rank_tracks_faiss, torch_embed_fn
from training.splits import assign_splits, assign_splits_by_hash, manifest_splits

SMALL = EmbedderConfig(n_levels=4, codebook_size=64, d_model=32, n_heads=2, n_layers=2, embedding_dim=16, dropout=0.0)


def test_splits_are_disjoint_complete_and_deterministic() -> None:
    ids = [f"track_{i:03d}" for i in range(200)]
    first = assign_splits(ids, 0.1, 0.1, seed=42)
    assert first == assign_splits(list(reversed(ids)), 0.1, 0.1, seed=42)
    sets = [set(first[name]) for name in ("train", "val", "test")]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert set().union(*sets) == set(ids)
    assert (len(first["val"]), len(first["test"])) == (20, 20)
    assert first != assign_splits(ids, 0.1, 0.1, seed=7)


def test_splits_reject_bad_ratios() -> None:
    for assign in (assign_splits, assign_splits_by_hash):
        with pytest.raises(ValueError, match="ratios"):
            assign(["a", "b"], 0.6, 0.5, seed=1)


def test_hash_splits_keep_every_track_in_place_as_the_catalog_grows() -> None:
    ids = [f"track_{i:04d}" for i in range(2000)]
    grown = assign_splits_by_hash(ids, 0.1, 0.2, seed=42)
    first = assign_splits_by_hash(ids[:500], 0.1, 0.2, seed=42)
    for name, members in first.items():
        assert set(members) <= set(grown[name])
    assert set().union(*map(set, grown.values())) == set(ids) and sum(map(len, grown.values())) == len(ids)
    assert abs(len(grown["test"]) / len(ids) - 0.2) < 0.03 and abs(len(grown["val"]) / len(ids) - 0.1) < 0.03
    assert grown != assign_splits_by_hash(ids, 0.1, 0.2, seed=7)


def test_manifest_splits_follow_the_split_column(tmp_path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("track_id,package,split\nb,p,train\nc,p,test\na,p,train\nd,p,val\n", encoding="utf-8")
    assert manifest_splits(manifest) == {"train": ["a", "b"], "val": ["d"], "test": ["c"]}
    manifest.write_text("track_id,split\na,dev\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'dev'"):
        manifest_splits(manifest)


def test_padding_changes_nothing_in_the_embedding() -> None:
    torch.manual_seed(0)
    model = TokenEmbedder(SMALL).eval()
    rng = np.random.default_rng(0)
    short, long = rng.integers(0, 64, (6, 9)), rng.integers(0, 64, (6, 30))
    codes, mask = pad_batch([short, long])
    batched = model(codes, mask)
    alone = model(torch.from_numpy(short)[None], torch.ones(1, 9, dtype=torch.bool))
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    # The padded frames hold zeros, a real code: changing them to any other code must not matter either.
    codes_junk = codes.clone()
    codes_junk[0, :, 9:] = 63
    torch.testing.assert_close(model(codes_junk, mask), batched, atol=1e-6, rtol=1e-6)
    assert torch.allclose(batched.norm(dim=1), torch.ones(2))


def test_counts_wrapper_equals_mask_forward() -> None:
    model = TokenEmbedder(SMALL).eval()
    codes, mask = pad_batch([np.ones((6, 5), dtype=np.int64), np.zeros((6, 12), dtype=np.int64)])
    torch.testing.assert_close(EmbedderFromCounts(model)(codes.int(), mask.sum(1)), model(codes, mask))


def test_embedder_rejects_bad_shapes() -> None:
    model = TokenEmbedder(SMALL)
    with pytest.raises(ValueError, match="expected codes"):
        model(torch.zeros(2, 6, dtype=torch.long), torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="RVQ levels"):
        model(torch.zeros(1, 2, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool))


def test_nt_xent_on_a_known_toy_batch() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Row 0 of the 4x4 logits (self masked): [-inf, 0, 1, 0] / t with target index 2.
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(0) + math.exp(1 / t) + math.exp(0)))
    assert nt_xent(z1, z2, t).item() == pytest.approx(expected, rel=1e-6)
    aligned = nt_xent(z1, z2, 0.1)
    swapped = nt_xent(z1, z2.flip(0), 0.1)
    assert aligned < swapped


def test_metrics_against_hand_computed_cases() -> None:
    ranked = [["a", "b", "c"], ["b", "a", "c"], ["c", "b", "a"], ["b", "c", "x"]]
    ranks = ranks_of_targets(ranked, ["a", "a", "a", "a"])
    assert list(ranks) == [1, 2, 3, 0]
    assert recall_at_k(ranks, 1) == 0.25
    assert recall_at_k(ranks, 2) == 0.5
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    metrics = retrieval_metrics(ranks, ks=(1, 10))
    assert metrics["recall@10"] == 0.75 and metrics["queries"] == 4


def test_catalog_windows_cover_the_tail() -> None:
    codes = np.arange(300)[None, :]
    windows = catalog_windows(codes, 125, 62)
    assert [w[0, 0] for w in windows] == [0, 62, 124, 175]
    assert windows[-1][0, -1] == 299 and all(w.shape == (1, 125) for w in windows)
    assert len(catalog_windows(codes[:, :50], 125, 62)) == 1


def test_exact_and_faiss_rankings_agree_and_fuse_per_track() -> None:
    rng = np.random.default_rng(3)
    segments = F.normalize(torch.from_numpy(rng.normal(size=(40, 16)).astype(np.float32)), dim=1).numpy()
    segment_track = np.repeat(np.arange(10), 4)
    queries = segments[::4] + 0.05 * rng.normal(size=(10, 16)).astype(np.float32)
    exact, exact_scores = rank_tracks_exact(queries, segments, segment_track, 10)
    faiss_order, faiss_scores = rank_tracks_faiss(queries, segments, segment_track, 10)
    assert np.array_equal(exact, faiss_order)
    np.testing.assert_allclose(exact_scores, faiss_scores, rtol=1e-5, atol=1e-5)
    assert list(exact[:, 0]) == list(range(10))
    excluded = segment_track[None, :] == np.arange(10)[:, None]
    order, _ = rank_tracks_exact(queries, segments, segment_track, 10, excluded)
    assert all(order[i, 0] != i for i in range(10))


def test_embed_sequences_keeps_input_order() -> None:
    model = TokenEmbedder(SMALL).eval()
    rng = np.random.default_rng(1)
    sequences = [rng.integers(0, 64, (4, n)) for n in (30, 5, 17, 5, 2)]
    together = embed_sequences(torch_embed_fn(model), sequences, batch_size=2)
    for seq, row in zip(sequences, together):
        alone = embed_sequences(torch_embed_fn(model), [seq])
        np.testing.assert_allclose(row, alone[0], atol=1e-5)
