"""The catalog's FAISS index on disk: build, write, extend, load (verified) and search with per-track fusion.

Folder layout (docs/contracts.md): index.faiss, segment_track_ids.npy (row -> track index), tracks.json
(list of {"track_id": ..., metadata}), manifest.json (embedder_sha256, dim, metric, index_type, counts,
sha256 of every file). Vectors are L2-normalised, so inner product is cosine similarity.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import faiss
except ImportError:  # a GPU node may run without FAISS: flat catalogs are read by serving/torch_topk.py
    faiss = None

INDEX_FILE = "index.faiss"
SEGMENTS_FILE = "segment_track_ids.npy"
TRACKS_FILE = "tracks.json"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (INDEX_FILE, SEGMENTS_FILE, TRACKS_FILE)
# Index types and the build parameters each accepts.
INDEX_PARAMS = {"flat": (), "ivf": ("nlist", "nprobe"), "ivfpq": ("nlist", "nprobe", "m", "nbits"),
                "hnsw": ("M", "ef_construction", "ef_search")}
INDEX_TYPES = tuple(INDEX_PARAMS)
FORMAT_VERSION = 1
# k-means wants ~39 training points per centroid; fewer only produces warnings and poor centroids.
POINTS_PER_CENTROID = 39


class CatalogMismatch(ValueError):
    """The catalog folder is inconsistent or does not belong to the deployed embedder/model."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_embeddings(embeddings: np.ndarray, dim: int | None = None) -> np.ndarray:
    array = np.ascontiguousarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {list(array.shape)}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"embeddings have dim {array.shape[1]}, the index has dim {dim}")
    if not np.isfinite(array).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(array, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise ValueError(f"embeddings must be L2-normalised (norms range {norms.min():.4f}..{norms.max():.4f})")
    return array


def default_nlist(n: int) -> int:
    return max(1, min(int(4 * math.sqrt(n)), n // POINTS_PER_CENTROID))


def default_nprobe(nlist: int) -> int:
    # Small lists are probed exhaustively; large ones at ~1/16 of the lists.
    return min(nlist, max(8, nlist // 16))


def default_pq_m(dim: int) -> int:
    """Sub-quantizers of ~4 dims each (at most 64): the largest divisor of dim not above that."""
    target = max(1, min(64, dim // 4))
    return max(m for m in range(1, target + 1) if dim % m == 0)


def default_pq_nbits(n: int) -> int:
    # Each sub-quantizer's k-means needs at least 2**nbits training points.
    return max(1, min(8, int(math.log2(n))))


def build_index(embeddings: np.ndarray, index_type: str = "flat", **params: int) -> faiss.Index:
    """An inner-product index over ``embeddings`` [N, D] (float32, L2-normalised), trained where needed.

    Parameters (defaults scale with N): ivf: nlist, nprobe; ivfpq: nlist, nprobe, m, nbits;
    hnsw: M, ef_construction, ef_search.
    """
    vectors = _as_embeddings(embeddings)
    n, dim = vectors.shape
    if index_type not in INDEX_PARAMS:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
    unknown = sorted(set(params) - set(INDEX_PARAMS[index_type]))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} for index_type {index_type!r}; allowed: {list(INDEX_PARAMS[index_type])}")

    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        # More links per node keep recall up on large catalogs, at the cost of memory and build time.
        m = params.get("M", 16 if n < 100_000 else 32)
        index = faiss.index_factory(dim, f"HNSW{m},Flat", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.get("ef_construction", max(40, 2 * m))
        index.hnsw.efSearch = params.get("ef_search", 64)
    else:
        nlist = params.get("nlist", default_nlist(n))
        if nlist > n:
            raise ValueError(f"nlist={nlist} needs at least as many training vectors, got {n}")
        if index_type == "ivf":
            spec = f"IVF{nlist},Flat"
        else:
            m, nbits = params.get("m", default_pq_m(dim)), params.get("nbits", default_pq_nbits(n))
            if dim % m:
                raise ValueError(f"PQ m={m} must divide dim {dim}")
            if n < 2**nbits:
                raise ValueError(f"PQ nbits={nbits} needs at least {2**nbits} training vectors, got {n}")
            spec = f"IVF{nlist},PQ{m}x{nbits}"
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        if index_type == "ivfpq":
            # Polysemous training reorders codes for Hamming pre-filtering, which we never use; it is
            # also slow (seconds per sub-quantizer).
            index.do_polysemous_training = False
        index.train(vectors)
        index.nprobe = params.get("nprobe", default_nprobe(nlist))
    index.add(vectors)
    return index


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _check_tracks(tracks: Sequence[dict[str, Any]]) -> list[str]:
    ids = [track.get("track_id") for track in tracks]
    if not all(isinstance(track_id, str) and track_id for track_id in ids):
        raise ValueError("every track needs a non-empty string 'track_id'")
    if len(set(ids)) != len(ids):
        raise ValueError("track ids must be unique")
    return ids


def write_catalog(
    out_dir: str | Path,
    index: faiss.Index,
    segment_track_ids: np.ndarray,
    tracks: Sequence[dict[str, Any]],
    embedder_sha256: str,
    index_type: str,
) -> dict[str, Any]:
    """Write the catalog folder; the manifest comes last, so a half-written folder fails verification."""
    out = Path(out_dir)
    segments = np.asarray(segment_track_ids, dtype=np.int64)
    _check_tracks(tracks)
    if segments.ndim != 1 or segments.shape[0] != index.ntotal:
        raise ValueError(f"segment_track_ids must be [{index.ntotal}] (one per index row), got {list(segments.shape)}")
    if segments.size and (segments.min() < 0 or segments.max() >= len(tracks)):
        raise ValueError(f"segment_track_ids must index the {len(tracks)} tracks")
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
    out.mkdir(parents=True, exist_ok=True)
    # A FAISS index, or an object that serialises itself in FAISS's format (serving.torch_topk.FlatVectors).
    blob = index.serialize() if faiss is None or not isinstance(index, faiss.Index) else faiss.serialize_index(index).tobytes()
    _write_atomic(out / INDEX_FILE, blob)
    buffer = io.BytesIO()
    np.save(buffer, segments)
    _write_atomic(out / SEGMENTS_FILE, buffer.getvalue())
    _write_atomic(out / TRACKS_FILE, json.dumps(list(tracks), indent=1, ensure_ascii=False).encode("utf-8"))
    manifest = {
        "format_version": FORMAT_VERSION,
        "embedder_sha256": embedder_sha256,
        "dim": int(index.d),
        "metric": "ip",
        "index_type": index_type,
        "n_vectors": int(index.ntotal),
        "n_tracks": len(tracks),
        "files": {name: sha256_file(out / name) for name in DATA_FILES},
    }
    _write_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=1).encode("utf-8"))
    return manifest


@dataclass(frozen=True)
class SearchResult:
    """One query's tracks, best first; a track's score is its best (segment, window) inner product."""

    track_indices: np.ndarray
    track_ids: list[str]
    scores: np.ndarray


class Catalog:
    def __init__(self, index: faiss.Index, segment_track_ids: np.ndarray, tracks: list[dict[str, Any]],
                 manifest: dict[str, Any]) -> None:
        self.index = index
        self.segment_track_ids = segment_track_ids
        self.tracks = tracks
        self.manifest = manifest
        self.track_ids = [track["track_id"] for track in tracks]
        self.dim = int(index.d)
        # k * (most segments of one track) segment hits always hold k distinct tracks when that many exist.
        counts = np.bincount(segment_track_ids, minlength=len(tracks))
        self.max_segments_per_track = int(counts.max()) if counts.size else 0
        self._gpu_resources: Any = None

    def to_gpu(self, device: int = 0) -> Catalog:
        """A copy searching on GPU ``device`` (HNSW has no GPU version and stays on CPU)."""
        if isinstance(self.index, faiss.IndexHNSW):
            return self
        resources = faiss.StandardGpuResources()
        options = faiss.GpuClonerOptions()
        # Many sub-quantizers only fit the GPU's shared memory as float16 lookup tables.
        options.useFloat16 = isinstance(self.index, faiss.IndexIVFPQ)
        gpu = Catalog(faiss.index_cpu_to_gpu(resources, device, self.index, options),
                      self.segment_track_ids, self.tracks, self.manifest)
        gpu._gpu_resources = resources
        return gpu

    def _search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if faiss is not None and isinstance(self.index, faiss.IndexHNSW):
            ef = max(self.index.hnsw.efSearch, k)
            return self.index.search(queries, k, params=faiss.SearchParametersHNSW(efSearch=ef))
        return self.index.search(queries, k)

    def _fuse(self, scores: np.ndarray, rows: np.ndarray, k: int) -> SearchResult:
        valid = rows >= 0
        tracks = self.segment_track_ids[rows[valid]]
        hit_scores = scores[valid]
        order = np.argsort(-hit_scores, kind="stable")
        tracks, hit_scores = tracks[order], hit_scores[order]
        _, first = np.unique(tracks, return_index=True)
        best = np.sort(first)[:k]
        indices = tracks[best]
        return SearchResult(indices, [self.track_ids[i] for i in indices], hit_scores[best].astype(np.float32))

    def search(
        self, queries: np.ndarray | Sequence[np.ndarray], k: int | Sequence[int]
    ) -> SearchResult | list[SearchResult]:
        """Top-k tracks for one query ([W, D], its windows) or for a list of queries (one FAISS call)."""
        single = isinstance(queries, np.ndarray)
        batches = [queries] if single else list(queries)
        ks = [k] * len(batches) if isinstance(k, (int, np.integer)) else [int(value) for value in k]
        if len(ks) != len(batches):
            raise ValueError(f"{len(ks)} values of k for {len(batches)} queries")
        if any(value < 1 for value in ks):
            raise ValueError(f"k must be >= 1, got {ks}")
        for batch in batches:
            if batch.ndim != 2 or batch.shape[1] != self.dim:
                raise ValueError(f"queries must be [W, {self.dim}], got {list(batch.shape)}")
        stacked = np.ascontiguousarray(np.concatenate(batches), dtype=np.float32)
        depth = min(self.index.ntotal, max(ks) * self.max_segments_per_track)
        if depth == 0 or stacked.shape[0] == 0:
            empty = np.zeros((0, depth), np.float32), np.zeros((0, depth), np.int64)
            results = [self._fuse(*empty, value) for value in ks]
        else:
            scores, rows = self._search_rows(stacked, depth)
            bounds = np.cumsum([0] + [batch.shape[0] for batch in batches])
            results = [self._fuse(scores[a:b], rows[a:b], value) for a, b, value in zip(bounds[:-1], bounds[1:], ks)]
        return results[0] if single else results


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise CatalogMismatch(f"{directory} is not a catalog folder: {MANIFEST_FILE} is missing")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CatalogMismatch(f"{path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    return manifest


def verify_catalog_files(
    directory: str | Path, expected_dim: int | None = None, expected_embedder_sha256: str | None = None
) -> dict[str, Any]:
    """The manifest of a catalog folder whose files match it and the deployed model; raises CatalogMismatch."""
    folder = Path(directory)
    manifest = _read_manifest(folder)
    if expected_dim is not None and manifest["dim"] != expected_dim:
        raise CatalogMismatch(f"catalog {folder} has dim {manifest['dim']}, but the model expects EMBEDDING dim {expected_dim}")
    if expected_embedder_sha256 is not None and manifest["embedder_sha256"] != expected_embedder_sha256:
        raise CatalogMismatch(
            f"catalog {folder} was built with embedder sha256 {manifest['embedder_sha256']}, but the deployed "
            f"embedder has sha256 {expected_embedder_sha256}: rebuild the index with the deployed embedder"
        )
    for name in DATA_FILES:
        path = folder / name
        if not path.is_file():
            raise CatalogMismatch(f"catalog file {path} is missing")
        actual, recorded = sha256_file(path), manifest["files"].get(name)
        if actual != recorded:
            raise CatalogMismatch(f"catalog file {path} has sha256 {actual}, the manifest records {recorded}")
    return manifest


def faiss_gpus() -> int:
    """GPUs FAISS can search on: 0 without FAISS or with its CPU-only build."""
    return faiss.get_num_gpus() if faiss is not None and hasattr(faiss, "get_num_gpus") else 0


def load_catalog(
    directory: str | Path, expected_dim: int | None = None, expected_embedder_sha256: str | None = None,
    index: Any = None,
) -> Catalog:
    """Load and verify a catalog folder; raises CatalogMismatch naming what does not match.

    ``index``: a callable ``(folder, manifest) -> index`` with FAISS's ``d``, ``ntotal``, ``metric_type`` and
    ``search`` (default: ``faiss.read_index``), e.g. serving/torch_topk.py's GPU search without FAISS.
    """
    folder = Path(directory)
    manifest = verify_catalog_files(folder, expected_dim, expected_embedder_sha256)
    if index is None:
        if faiss is None:
            raise ImportError("FAISS is not installed: install faiss-cpu, or load flat catalogs with serving.torch_topk")
        index = faiss.read_index(str(folder / INDEX_FILE))
    else:
        index = index(folder, manifest)
    segments = np.load(folder / SEGMENTS_FILE)
    tracks = json.loads((folder / TRACKS_FILE).read_text(encoding="utf-8"))
    counts = (index.d, index.ntotal, segments.shape[0], len(tracks))
    if counts != (manifest["dim"], manifest["n_vectors"], manifest["n_vectors"], manifest["n_tracks"]):
        raise CatalogMismatch(
            f"catalog {folder}: (dim, vectors, segment ids, tracks) = {counts} disagree with the manifest "
            f"({manifest['dim']}, {manifest['n_vectors']}, {manifest['n_vectors']}, {manifest['n_tracks']})"
        )
    if index.metric_type != 0:  # faiss.METRIC_INNER_PRODUCT
        raise CatalogMismatch(f"catalog {folder}: the index metric is not inner product")
    return Catalog(index, segments.astype(np.int64, copy=False), tracks, manifest)


def add_to_catalog(
    directory: str | Path,
    new_embeddings: np.ndarray,
    new_segment_track_ids: np.ndarray,
    new_tracks: Sequence[dict[str, Any]],
    embedder_sha256: str | None = None,
) -> dict[str, Any]:
    """Append tracks to a catalog without rebuilding (IVF keeps its trained centroids).

    ``new_segment_track_ids`` index ``new_tracks``; ``embedder_sha256``, when given, must match the
    catalog's. Returns the new manifest.
    """
    catalog = load_catalog(directory, expected_embedder_sha256=embedder_sha256)
    vectors = _as_embeddings(new_embeddings, catalog.dim)
    segments = np.asarray(new_segment_track_ids, dtype=np.int64)
    duplicates = sorted(set(catalog.track_ids) & set(_check_tracks(new_tracks)))
    if duplicates:
        raise ValueError(f"tracks already in the catalog: {duplicates[:5]}")
    if segments.shape != (vectors.shape[0],) or segments.min() < 0 or segments.max() >= len(new_tracks):
        raise ValueError(f"new_segment_track_ids must be [{vectors.shape[0]}] indices into the {len(new_tracks)} new tracks")
    catalog.index.add(vectors)
    return write_catalog(
        directory,
        catalog.index,
        np.concatenate([catalog.segment_track_ids, segments + len(catalog.tracks)]),
        [*catalog.tracks, *new_tracks],
        catalog.manifest["embedder_sha256"],
        catalog.manifest["index_type"],
    )
