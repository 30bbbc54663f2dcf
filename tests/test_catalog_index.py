from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from serving.catalog_index import (
    MANIFEST_FILE,
    SEGMENTS_FILE,
    CatalogMismatch,
    add_to_catalog,
    build_index,
    load_catalog,
    sha256_file,
    write_catalog,
)

DIM = 32
EMBEDDER = "a" * 64


def normalised(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def tracks(count: int, start: int = 0) -> list[dict]:
    return [{"track_id": f"t{i:03d}", "title": f"Track {i}"} for i in range(start, start + count)]


@pytest.fixture()
def catalog_dir(tmp_path: Path) -> Path:
    """40 tracks of 3 segments each, flat index."""
    embeddings = normalised(120, seed=0)
    write_catalog(tmp_path, build_index(embeddings), np.repeat(np.arange(40), 3), tracks(40), EMBEDDER, "flat")
    return tmp_path


def brute_force_tracks(embeddings: np.ndarray, segment_tracks: np.ndarray, queries: np.ndarray, k: int) -> list[int]:
    per_track = np.full(segment_tracks.max() + 1, -np.inf)
    np.maximum.at(per_track, segment_tracks, (queries @ embeddings.T).max(axis=0))
    return list(np.argsort(-per_track, kind="stable")[:k])


def test_flat_search_is_exact_and_fuses_segments_and_windows_per_track(catalog_dir: Path) -> None:
    catalog = load_catalog(catalog_dir, expected_dim=DIM, expected_embedder_sha256=EMBEDDER)
    embeddings = normalised(120, seed=0)
    queries = normalised(4, seed=1)
    result = catalog.search(queries, 7)
    assert list(result.track_indices) == brute_force_tracks(embeddings, np.repeat(np.arange(40), 3), queries, 7)
    assert result.track_ids == [f"t{i:03d}" for i in result.track_indices]
    assert len(set(result.track_ids)) == 7 and np.all(np.diff(result.scores) <= 0)
    expected_best = (queries @ embeddings.T).max()
    assert result.scores[0] == pytest.approx(expected_best, abs=1e-5)


def test_a_catalog_segment_finds_its_track_first(catalog_dir: Path) -> None:
    catalog = load_catalog(catalog_dir)
    result = catalog.search(normalised(120, seed=0)[[31]], 3)
    assert result.track_ids[0] == "t010" and result.scores[0] == pytest.approx(1.0, abs=1e-5)


def test_list_of_queries_equals_separate_searches(catalog_dir: Path) -> None:
    catalog = load_catalog(catalog_dir)
    queries = [normalised(3, seed=2), normalised(1, seed=3), normalised(5, seed=4)]
    together = catalog.search(queries, [5, 1, 40])
    for query, k, result in zip(queries, [5, 1, 40], together):
        alone = catalog.search(query, k)
        assert result.track_ids == alone.track_ids and len(result.track_ids) == k
        np.testing.assert_allclose(result.scores, alone.scores, rtol=1e-6)


def test_k_larger_than_catalog_returns_every_track_once(catalog_dir: Path) -> None:
    result = load_catalog(catalog_dir).search(normalised(2, seed=5), 100)
    assert sorted(result.track_ids) == [track["track_id"] for track in tracks(40)]


@pytest.mark.parametrize("index_type", ["ivf", "ivfpq", "hnsw"])
def test_approximate_indexes_build_on_small_catalogs_and_find_exact_copies(index_type: str, tmp_path: Path) -> None:
    embeddings = normalised(300, seed=6)
    index = build_index(embeddings, index_type)
    write_catalog(tmp_path, index, np.arange(300) // 2, tracks(150), EMBEDDER, index_type)
    catalog = load_catalog(tmp_path, expected_dim=DIM)
    assert catalog.manifest["index_type"] == index_type and catalog.index.ntotal == 300
    hits = [catalog.search(embeddings[[row]], 1).track_indices[0] for row in range(0, 300, 25)]
    assert hits == list(np.arange(0, 300, 25) // 2)


@pytest.mark.parametrize(
    ("index_type", "params", "message"),
    [("ivf", {"nlist": 500}, "nlist=500"), ("ivfpq", {"m": 5}, "must divide"), ("flat", {"nlist": 4}, "unknown"),
     ("lsh", {}, "index_type")],
)
def test_bad_index_parameters_are_refused(index_type: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_index(normalised(100, seed=7), index_type, **params)


def test_unnormalised_embeddings_are_refused() -> None:
    with pytest.raises(ValueError, match="L2-normalised"):
        build_index(normalised(10, seed=8) * 2)


def ivf_centroids(directory: Path) -> np.ndarray:
    index = load_catalog(directory).index  # the quantizer is owned by (and freed with) the index
    ivf = faiss.extract_index_ivf(index)
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


def test_incremental_add_keeps_the_trained_index_and_updates_the_manifest(tmp_path: Path) -> None:
    first = normalised(200, seed=9)
    write_catalog(tmp_path, build_index(first, "ivf"), np.arange(200) // 4, tracks(50), EMBEDDER, "ivf")
    centroids = ivf_centroids(tmp_path)
    added = normalised(12, seed=10)
    manifest = add_to_catalog(tmp_path, added, np.array([0, 0, 1, 1, 2, 2] * 2), tracks(3, start=50), EMBEDDER)
    assert (manifest["n_vectors"], manifest["n_tracks"], manifest["index_type"]) == (212, 53, "ivf")
    catalog = load_catalog(tmp_path, expected_dim=DIM, expected_embedder_sha256=EMBEDDER)
    np.testing.assert_array_equal(ivf_centroids(tmp_path), centroids)
    assert catalog.search(added[[2]], 1).track_ids == ["t051"]
    assert catalog.search(first[[7]], 1).track_ids == ["t001"]


def test_incremental_add_refuses_duplicates_and_another_embedder(catalog_dir: Path) -> None:
    with pytest.raises(ValueError, match="already in the catalog"):
        add_to_catalog(catalog_dir, normalised(1, seed=11), np.array([0]), tracks(1))
    with pytest.raises(CatalogMismatch, match="embedder sha256"):
        add_to_catalog(catalog_dir, normalised(1, seed=11), np.array([0]), tracks(1, start=99), "b" * 64)


def test_manifest_records_counts_and_checksums(catalog_dir: Path) -> None:
    manifest = json.loads((catalog_dir / MANIFEST_FILE).read_text())
    assert manifest["dim"] == DIM and manifest["metric"] == "ip" and manifest["embedder_sha256"] == EMBEDDER
    assert manifest["n_vectors"] == 120 and manifest["n_tracks"] == 40
    assert manifest["files"][SEGMENTS_FILE] == sha256_file(catalog_dir / SEGMENTS_FILE)


def test_mismatches_are_refused_with_their_reason(catalog_dir: Path) -> None:
    with pytest.raises(CatalogMismatch, match=f"has dim {DIM}, but the model expects EMBEDDING dim 64"):
        load_catalog(catalog_dir, expected_dim=64)
    with pytest.raises(CatalogMismatch, match="embedder sha256 a+, but the deployed embedder has sha256 b+"):
        load_catalog(catalog_dir, expected_embedder_sha256="b" * 64)
    np.save(catalog_dir / SEGMENTS_FILE, np.zeros(120, np.int64))
    with pytest.raises(CatalogMismatch, match=f"{SEGMENTS_FILE} has sha256 .* the manifest records"):
        load_catalog(catalog_dir)
    (catalog_dir / MANIFEST_FILE).unlink()
    with pytest.raises(CatalogMismatch, match="not a catalog folder"):
        load_catalog(catalog_dir)
