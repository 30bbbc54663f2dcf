"""The catalog as a Milvus collection: build, add, upsert, delete, load (verified) and search with per-track fusion.

One row per catalog segment: `segment_key` (primary key, "<track id>#<segment>"), `track_id`, `segment`, `vector`
(L2-normalised, inner product = cosine). The collection's properties hold `embedder_sha256`, `index_type` and
`format_version`, checked at load as the FAISS manifest is. A catalog name is a Milvus alias: a full build fills a
new collection and moves the alias in one step, so searches never see a half-built catalog; adds, upserts and
deletes change the live collection in place.

URIs: `http://host:19530` (standalone, cluster, or `python -m serving milvus-lite`), or a local Milvus Lite folder.
A Milvus Lite folder is owned by one process (an flock on its LOCK file): a builder may open it as a path only
while no server holds it; the serving side and the builder share it through `python -m serving milvus-lite`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from serving.catalog_index import CatalogMismatch, SearchResult, _as_embeddings, _check_tracks

DEFAULT_COLLECTION = "cloudtune_catalog"
FORMAT_VERSION = 1
MAX_TRACK_ID = 512
# Milvus index types for the catalog's --index-type names (GPU_CAGRA needs a GPU Milvus build; Lite has none).
INDEX_TYPES = {"flat": "FLAT", "ivf": "IVF_FLAT", "ivfpq": "IVF_PQ", "hnsw": "HNSW", "cagra": "GPU_CAGRA"}
INSERT_BATCH = 2000
QUERY_BATCH = 500
T = TypeVar("T")


class MilvusUnavailable(RuntimeError):
    """Milvus did not answer (down, unreachable, or timed out)."""


class Milvus:
    """A client of the Milvus at ``uri`` whose calls all end within ``timeout_s`` (pymilvus retries otherwise for
    minutes), a Milvus that does not answer raised as MilvusUnavailable naming the URI."""

    def __init__(self, uri: str, timeout_s: float = 10.0) -> None:
        from pymilvus import MilvusClient

        self.uri = uri
        # pymilvus bounds its retries by `timeout` only when it is an int; a float retries 75 times (minutes).
        self.timeout_s = max(1, math.ceil(timeout_s))
        self.client = self._guard("connect", lambda: MilvusClient(uri=uri, timeout=timeout_s))

    def _guard(self, what: str, call: Callable[[], T]) -> T:
        import grpc
        from pymilvus.exceptions import MilvusException

        try:
            return call()
        except MilvusException as error:
            text = str(error).lower()
            # The server's own refusals come back as they are; only a missing answer is "unreachable".
            if any(word in text for word in ("unavailable", "deadline", "fail connecting", "failed to connect", "retry timeout")):
                raise MilvusUnavailable(f"Milvus at {self.uri} is unreachable ({what}): {error.message}") from error
            raise
        except grpc.RpcError as error:
            raise MilvusUnavailable(f"Milvus at {self.uri} is unreachable ({what}): {error}") from error

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)`` with the timeout and the error translation."""
        return self._guard(method, lambda: getattr(self.client, method)(*args, timeout=self.timeout_s, **kwargs))


def index_params(client: Any, index_type: str, n_vectors: int) -> Any:
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {tuple(INDEX_TYPES)}, got {index_type!r}")
    params: dict[str, int] = {}
    if index_type in ("ivf", "ivfpq"):
        params["nlist"] = max(1, min(int(4 * np.sqrt(n_vectors)), 65536))
    if index_type == "ivfpq":
        params.update(m=64, nbits=8)
    if index_type == "hnsw":
        params.update(M=16 if n_vectors < 100_000 else 32, efConstruction=200)
    prepared = client.prepare_index_params()
    prepared.add_index("vector", index_type=INDEX_TYPES[index_type], metric_type="IP", params=params)
    return prepared


def _schema(client: Any, dim: int) -> Any:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("segment_key", DataType.VARCHAR, is_primary=True, max_length=MAX_TRACK_ID + 12)
    schema.add_field("track_id", DataType.VARCHAR, max_length=MAX_TRACK_ID)
    schema.add_field("segment", DataType.INT32)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def _rows(vectors: np.ndarray, segment_track_ids: np.ndarray, track_ids: Sequence[str]) -> list[dict[str, Any]]:
    """One row per segment; a track's segments are numbered in order."""
    counts: dict[str, int] = {}
    rows = []
    for vector, track in zip(vectors, segment_track_ids):
        track_id = track_ids[int(track)]
        segment = counts.get(track_id, 0)
        counts[track_id] = segment + 1
        rows.append({"segment_key": f"{track_id}#{segment}", "track_id": track_id, "segment": segment,
                     "vector": vector.tolist()})
    return rows


def _checked_rows(embeddings: np.ndarray, segment_track_ids: np.ndarray, tracks: Sequence[dict[str, Any]],
                  dim: int | None = None) -> list[dict[str, Any]]:
    vectors = _as_embeddings(embeddings, dim)
    segments = np.asarray(segment_track_ids, dtype=np.int64)
    track_ids = _check_tracks(tracks)
    if max(map(len, track_ids)) > MAX_TRACK_ID:
        raise ValueError(f"track ids must be at most {MAX_TRACK_ID} characters")
    if segments.shape != (vectors.shape[0],) or segments.min() < 0 or segments.max() >= len(track_ids):
        raise ValueError(f"segment_track_ids must be [{vectors.shape[0]}] indices into the {len(track_ids)} tracks")
    return _rows(vectors, segments, track_ids)


def _quoted(values: Iterable[str]) -> str:
    return "[" + ", ".join('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values) + "]"


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True)
class CollectionInfo:
    name: str  # the alias searched
    collection: str  # the collection behind it
    dim: int
    embedder_sha256: str
    index_type: str
    n_vectors: int
    n_tracks: int


def describe(milvus: Milvus, name: str) -> CollectionInfo:
    """The catalog ``name``; raises CatalogMismatch when there is none or it is not a CloudTune catalog."""
    if not milvus("has_collection", name):
        raise CatalogMismatch(f"Milvus at {milvus.uri} has no catalog {name!r}: build it with `python -m export index --backend milvus`")
    info = milvus("describe_collection", name)
    properties = info.get("properties", {})
    if str(properties.get("format_version")) != str(FORMAT_VERSION):
        raise CatalogMismatch(f"Milvus collection {name!r} at {milvus.uri} is not a CloudTune catalog (format_version "
                              f"{properties.get('format_version')!r}, expected {FORMAT_VERSION})")
    vector = next(field for field in info["fields"] if field["name"] == "vector")
    # Counting needs a loaded collection, and a restarted Milvus Lite holds every collection released.
    milvus("load_collection", name)
    vectors = milvus("query", name, filter="", output_fields=["count(*)"])[0]["count(*)"]
    tracks = milvus("query", name, filter="segment == 0", output_fields=["count(*)"])[0]["count(*)"]
    return CollectionInfo(name, info["collection_name"], int(vector["params"]["dim"]), properties["embedder_sha256"],
                          properties["index_type"], int(vectors), int(tracks))


def check_embedder(info: CollectionInfo, uri: str, expected_dim: int | None, expected_embedder_sha256: str | None) -> None:
    if expected_dim is not None and info.dim != expected_dim:
        raise CatalogMismatch(f"catalog {uri} {info.name!r} has dim {info.dim}, but the model expects EMBEDDING dim {expected_dim}")
    if expected_embedder_sha256 is not None and info.embedder_sha256 != expected_embedder_sha256:
        raise CatalogMismatch(
            f"catalog {uri} {info.name!r} was built with embedder sha256 {info.embedder_sha256}, but the deployed "
            f"embedder has sha256 {expected_embedder_sha256}: rebuild the index with the deployed embedder"
        )


def summary(info: CollectionInfo, uri: str) -> dict[str, Any]:
    """The keys of the FAISS manifest that describe a build (metrics database, the CLI's output line)."""
    return {"backend": "milvus", "uri": uri, "collection": info.name, "embedder_sha256": info.embedder_sha256,
            "dim": info.dim, "metric": "ip", "index_type": info.index_type, "n_vectors": info.n_vectors,
            "n_tracks": info.n_tracks}


def build_collection(milvus: Milvus, name: str, embeddings: np.ndarray, segment_track_ids: np.ndarray,
                     tracks: Sequence[dict[str, Any]], embedder_sha256: str, index_type: str = "flat") -> dict[str, Any]:
    """A new collection holding the catalog, then the alias ``name`` moved onto it and the old one dropped."""
    rows = _checked_rows(embeddings, segment_track_ids, tracks)
    dim = len(rows[0]["vector"])
    previous = None
    if milvus("has_collection", name):
        aliases = milvus("list_aliases", name)
        if name not in aliases.get("aliases", []):
            raise CatalogMismatch(f"Milvus at {milvus.uri} has a collection named {name!r} that is not a catalog alias: "
                                  "drop it or pick another --collection")
        previous = aliases["collection_name"]
    collection = f"{name}__{time.strftime('%Y%m%d%H%M%S')}_{time.time_ns() % 1_000_000:06d}"
    properties = {"embedder_sha256": embedder_sha256, "index_type": index_type, "format_version": str(FORMAT_VERSION)}
    milvus("create_collection", collection, schema=_schema(milvus.client, dim), consistency_level="Strong",
           index_params=index_params(milvus.client, index_type, len(rows)), properties=properties)
    for chunk in _chunks(rows, INSERT_BATCH):
        milvus("insert", collection, list(chunk))
    milvus("flush", collection)
    milvus("load_collection", collection)
    if previous is None:
        milvus("create_alias", collection, name)
    else:
        milvus("alter_alias", collection, name)
        milvus("drop_collection", previous)
    return summary(describe(milvus, name), milvus.uri)


def present_tracks(milvus: Milvus, name: str, track_ids: Sequence[str]) -> set[str]:
    """Which of ``track_ids`` have segments in the catalog."""
    found: set[str] = set()
    for chunk in _chunks(list(track_ids), QUERY_BATCH):
        rows = milvus("query", name, filter=f"track_id in {_quoted(chunk)} and segment == 0", output_fields=["track_id"])
        found.update(row["track_id"] for row in rows)
    return found


def upsert_tracks(milvus: Milvus, name: str, embeddings: np.ndarray, segment_track_ids: np.ndarray,
                  tracks: Sequence[dict[str, Any]], embedder_sha256: str) -> dict[str, Any]:
    """Write the tracks' segments into the live catalog: new tracks are added, present ones replaced (their rows
    are overwritten by key, then segments past the new count are deleted). Refuses another embedder's vectors."""
    info = describe(milvus, name)
    check_embedder(info, milvus.uri, None, embedder_sha256)
    rows = _checked_rows(embeddings, segment_track_ids, tracks, info.dim)
    for chunk in _chunks(rows, INSERT_BATCH):
        milvus("upsert", name, list(chunk))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["track_id"]] = row["segment"] + 1
    # One delete per segment count, not per track: each filtered delete scans the collection (in Milvus Lite a
    # thousand of them, one per added track, took over ten minutes), and most tracks of a batch share a count.
    by_count: dict[int, list[str]] = {}
    for track_id, count in counts.items():
        by_count.setdefault(count, []).append(track_id)
    for count, track_ids in by_count.items():
        for chunk in _chunks(track_ids, QUERY_BATCH):
            milvus("delete", name, filter=f"track_id in {_quoted(chunk)} and segment >= {count}")
    return summary(describe(milvus, name), milvus.uri)


def delete_tracks(milvus: Milvus, name: str, track_ids: Sequence[str]) -> dict[str, Any]:
    """Remove every segment of ``track_ids`` from the live catalog; the summary names what was and wasn't there."""
    describe(milvus, name)
    found = present_tracks(milvus, name, track_ids)
    for chunk in _chunks(list(track_ids), QUERY_BATCH):
        milvus("delete", name, filter=f"track_id in {_quoted(chunk)}")
    return {**summary(describe(milvus, name), milvus.uri), "deleted_tracks": sorted(found),
            "missing_tracks": sorted(set(track_ids) - found)}


class MilvusCatalog:
    """Searches a catalog collection with `Catalog.search`'s interface; Milvus groups each window's hits by track."""

    def __init__(self, milvus: Milvus, info: CollectionInfo) -> None:
        self.milvus = milvus
        self.info = info
        self.dim = info.dim

    def _search_windows(self, queries: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        from pymilvus.exceptions import MilvusException

        params = {"metric_type": "IP", "params": {"ef": max(64, k), "nprobe": 16}}
        arguments = dict(data=queries.tolist(), limit=k, group_by_field="track_id", output_fields=["track_id"],
                         search_params=params)
        try:
            return self.milvus("search", self.info.name, **arguments)
        except MilvusException as error:
            # A restarted Milvus (Lite keeps no load state) or a released collection: load it and search again.
            if "load" not in str(error).lower():
                raise
            self.milvus("load_collection", self.info.name)
            return self.milvus("search", self.info.name, **arguments)

    @staticmethod
    def _fuse(window_hits: Iterable[list[dict[str, Any]]], k: int) -> SearchResult:
        # Each window's hits are its top-k distinct tracks, so a track's best window always lists it when the
        # track is in the query's top-k: max over windows is exact.
        best: dict[str, float] = {}
        for hits in window_hits:
            for hit in hits:
                track_id, score = hit["entity"]["track_id"], float(hit["distance"])
                if score > best.get(track_id, -np.inf):
                    best[track_id] = score
        ranked = sorted(best.items(), key=lambda item: -item[1])[:k]
        # Milvus catalogs have no row order: there are no track indices to give.
        return SearchResult(np.full(len(ranked), -1, np.int64), [t for t, _ in ranked],
                            np.array([s for _, s in ranked], np.float32))

    def search(self, queries: np.ndarray | Sequence[np.ndarray], k: int | Sequence[int]
               ) -> SearchResult | list[SearchResult]:
        """Top-k tracks for one query ([W, D], its windows) or for a list of queries (one Milvus call)."""
        single = isinstance(queries, np.ndarray)
        batches = [queries] if single else list(queries)
        ks = [k] * len(batches) if isinstance(k, (int, np.integer)) else [int(value) for value in k]
        if len(ks) != len(batches) or any(value < 1 for value in ks):
            raise ValueError(f"one k >= 1 per query, got {ks} for {len(batches)} queries")
        for batch in batches:
            if batch.ndim != 2 or batch.shape[1] != self.dim:
                raise ValueError(f"queries must be [W, {self.dim}], got {list(batch.shape)}")
        stacked = np.ascontiguousarray(np.concatenate(batches), dtype=np.float32)
        hits = self._search_windows(stacked, max(ks))
        bounds = np.cumsum([0] + [batch.shape[0] for batch in batches])
        results = [self._fuse(hits[a:b], value) for a, b, value in zip(bounds[:-1], bounds[1:], ks)]
        return results[0] if single else results


def load_milvus_catalog(uri: str, name: str, expected_dim: int | None, expected_embedder_sha256: str | None,
                        timeout_s: float = 10.0) -> MilvusCatalog:
    """The verified catalog ``name`` at ``uri``; raises CatalogMismatch or MilvusUnavailable naming the cause."""
    milvus = Milvus(uri, timeout_s)
    info = describe(milvus, name)
    check_embedder(info, uri, expected_dim, expected_embedder_sha256)
    return MilvusCatalog(milvus, info)
