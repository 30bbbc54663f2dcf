"""The ANN comparison on a small synthetic catalog (the suite runs 100k and 1M vectors)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.ann import INDEX_KINDS, ann_summary, noisy_queries, recall_at_k, run_ann, synthetic_catalog
from benchmarks.plots import plot_ann


def test_synthetic_catalog_is_clustered_and_normalised() -> None:
    catalog = synthetic_catalog(4000, dim=32)
    np.testing.assert_allclose(np.linalg.norm(catalog, axis=1), 1.0, atol=1e-5)
    queries = noisy_queries(catalog, 50)
    best = (queries @ catalog.T).max(axis=1)
    typical = np.median(queries @ catalog.T, axis=1)
    assert best.min() > 0.7 and np.median(typical) < 0.5  # real neighbours, far from most of the catalog


def test_recall_at_k() -> None:
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(np.array([[3, 2, 1], [4, 9, 8]]), exact) == 4 / 6


def test_every_index_kind_is_measured(tmp_path: Path) -> None:
    rows = run_ann([12_000], INDEX_KINDS, queries=60, budget_s=0.2, dim=32)
    by_kind = {row["index"]: row for row in rows}
    assert set(by_kind) == {*INDEX_KINDS, "hnsw_ef256"}
    assert by_kind["flat"]["recall_at_10"] == 1.0
    # Few, small lists at this size: approximate, but far better than chance (10 of 12,000).
    assert by_kind["ivf_flat"]["recall_at_10"] > 0.5 and by_kind["hnsw"]["recall_at_10"] > 0.8
    assert by_kind["milvus_lite"]["recall_at_10"] > 0.8 and by_kind["milvus_lite"]["memory_mb"] > 0
    assert by_kind["ivf_pq"]["memory_mb"] < by_kind["flat"]["memory_mb"]
    assert all(row["queries_per_s"] > 0 and row["build_s"] >= 0 for row in rows)
    assert by_kind["hnsw_ef256"]["recall_at_10"] >= by_kind["hnsw"]["recall_at_10"]
    assert set(ann_summary(rows)) == set(by_kind)
    assert plot_ann(rows, tmp_path / "ann.png").stat().st_size > 0
