"""`python -m benchmarks ann`: exact IndexFlatIP vs IVF-Flat, IVF-PQ and HNSW on synthetic catalogs, and Milvus Lite.

Vectors imitate the catalog's embeddings (L2-normalised, dim 256): genres -> tracks -> segments,
each level a Gaussian around its parent, so neighbours are structured like real catalogs and
recall is meaningful (uniform noise has no near neighbours to find). Queries are noisy copies of
random segments, like a degraded excerpt of a catalog track. IVF quantizers train on a sample
(bounded build time); nprobe, PQ size and HNSW efSearch follow what the served index uses
(serving/catalog_index.py). Reported per index: build s, size MB, queries/s with one query per
search call (as faiss_topk serves one request's windows), recall@10 against the exact search.

`milvus_lite`: HNSW with the same M, efConstruction and ef in Milvus Lite (`python -m serving milvus-lite`, searched
over loopback gRPC with pymilvus as faiss_topk's Milvus backend does); its size is the Milvus Lite folder on disk.

FAISS runs single-threaded by default here: on 2 cores shared with other work, OpenMP's
spinning threads made 2 threads 2-5x slower than 1 (30k vectors: HNSW build 6.3 s vs 3.3 s,
single-query flat search 67 vs 345 queries/s).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.machine import machine_info
from benchmarks.plots import plot_ann
from benchmarks.results import default_name, results_dir, write_summary
from serving.catalog_index import default_nprobe, default_pq_m, default_pq_nbits

DIM = 256
K = 10
INDEX_KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw", "milvus_lite")
MILVUS_INSERT_ROWS = 5000
# k-means wants >= 39 points per centroid; a little more, never the whole catalog.
TRAIN_POINTS_PER_LIST = 48
# PQ sub-quantizers (256 centroids each) train on at most 256 * 64 points.
PQ_TRAIN_POINTS_PER_CENTROID = 64
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64  # the served default (serving/catalog_index.py)
# Extra HNSW rows from the same graph: efSearch is a search-time knob, and 64 loses recall at 1M.
HNSW_EF_SWEEP = (256,)


def _normalised(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _around(centres: np.ndarray, count: int, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` unit vectors about ``cosine`` from their centre (one centre per row, cycled)."""
    spread = math.sqrt((1 / cosine**2 - 1) / centres.shape[1])
    rows = centres[np.arange(count) % len(centres)]
    return _normalised(rows + spread * rng.standard_normal(rows.shape, dtype=np.float32))


def synthetic_catalog(n: int, dim: int = DIM, seed: int = 0, segments_per_track: int = 8, genres: int = 64) -> np.ndarray:
    """[n, dim] float32: genres (random directions) -> tracks (cos ~0.5 to their genre) -> segments (cos ~0.8)."""
    rng = np.random.default_rng(seed)
    genre_centres = _normalised(rng.standard_normal((genres, dim), dtype=np.float32))
    tracks = _around(genre_centres, max(1, n // segments_per_track), 0.5, rng)
    out = np.empty((n, dim), dtype=np.float32)
    chunk = 1 << 17  # bounded temporaries at 1M vectors
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = _around(tracks[np.arange(start, stop) % len(tracks)], stop - start, 0.8, rng)
    return out


def noisy_queries(catalog: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _around(catalog[rng.choice(len(catalog), count, replace=False)], count, 0.9, rng)


def ivf_lists(n: int) -> int:
    """About sqrt(n) lists, a power of two (256 at 100k, 1024 at 1M): k-means stays seconds on 2 cores."""
    return 2 ** round(math.log2(math.sqrt(n)))


@dataclass(frozen=True)
class IndexRecipe:
    kind: str
    factory: str
    params: dict[str, int]
    trained: bool


def recipe(kind: str, n: int, dim: int = DIM) -> IndexRecipe:
    nlist = ivf_lists(n)
    if kind == "flat":
        return IndexRecipe(kind, "Flat", {}, False)
    if kind == "ivf_flat":
        return IndexRecipe(kind, f"IVF{nlist},Flat", {"nlist": nlist, "nprobe": default_nprobe(nlist)}, True)
    if kind == "ivf_pq":
        m, nbits = default_pq_m(dim), default_pq_nbits(n)
        # "np": no polysemous training, which only serves polysemous search and took minutes here.
        return IndexRecipe(kind, f"IVF{nlist},PQ{m}x{nbits}np", {"nlist": nlist, "nprobe": default_nprobe(nlist), "m": m, "nbits": nbits}, True)
    if kind == "milvus_lite":
        return IndexRecipe(kind, "Milvus Lite HNSW",
                           {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}, False)
    if kind == "hnsw":
        return IndexRecipe(kind, f"HNSW{HNSW_M},Flat",
                           {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}, False)
    raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")


class MilvusLiteIndex:
    """A Milvus Lite server holding ``catalog`` as an HNSW collection, searched like a FAISS index (row ids)."""

    def __init__(self, catalog: np.ndarray, params: dict[str, int]) -> None:
        from pymilvus import DataType

        from serving.milvus_catalog import Milvus
        from serving.milvus_lite_server import MilvusLiteServer, free_port

        self.folder = tempfile.TemporaryDirectory(prefix="ann-milvus-")
        self.server = MilvusLiteServer(Path(self.folder.name) / "ann.db", free_port()).start()
        self.milvus = Milvus(self.server.uri, timeout_s=600)
        self.ef = params["ef_search"]
        client = self.milvus.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=catalog.shape[1])
        index = client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="IP",
                        params={"M": params["M"], "efConstruction": params["ef_construction"]})
        self.milvus("create_collection", "ann", schema=schema, index_params=index, consistency_level="Strong")
        for start in range(0, len(catalog), MILVUS_INSERT_ROWS):
            block = catalog[start:start + MILVUS_INSERT_ROWS]
            self.milvus("insert", "ann", [{"id": start + i, "vector": row} for i, row in enumerate(block.tolist())])
        self.milvus("flush", "ann")
        self.milvus("load_collection", "ann")
        # The first search builds what the flush left for later; a build, not a query.
        self.search(catalog[:1], K)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        hits = self.milvus("search", "ann", data=queries.tolist(), limit=k,
                           search_params={"metric_type": "IP", "params": {"ef": max(self.ef, k)}})
        ids = np.full((len(queries), k), -1, np.int64)
        scores = np.zeros((len(queries), k), np.float32)
        for row, found in enumerate(hits):
            ids[row, : len(found)] = [hit["id"] for hit in found]
            scores[row, : len(found)] = [hit["distance"] for hit in found]
        return scores, ids

    def megabytes(self) -> float:
        return sum(path.stat().st_size for path in Path(self.folder.name).rglob("*") if path.is_file()) / 2**20

    def close(self) -> None:
        self.server.stop()
        self.folder.cleanup()


def build(recipe_: IndexRecipe, catalog: np.ndarray, seed: int = 0) -> faiss.Index | MilvusLiteIndex:
    if recipe_.kind == "milvus_lite":
        return MilvusLiteIndex(catalog, recipe_.params)
    index = faiss.index_factory(catalog.shape[1], recipe_.factory, faiss.METRIC_INNER_PRODUCT)
    if recipe_.kind == "hnsw":
        index.hnsw.efConstruction = recipe_.params["ef_construction"]
        index.hnsw.efSearch = recipe_.params["ef_search"]
    if recipe_.kind == "ivf_pq":
        faiss.downcast_index(index).pq.cp.max_points_per_centroid = PQ_TRAIN_POINTS_PER_CENTROID
    if recipe_.trained:
        sample = min(len(catalog), TRAIN_POINTS_PER_LIST * recipe_.params["nlist"])
        rows = np.random.default_rng(seed).choice(len(catalog), sample, replace=False)
        index.train(catalog[np.sort(rows)])
        faiss.extract_index_ivf(index).nprobe = recipe_.params["nprobe"]
    index.add(catalog)
    return index


def search_settings(recipe_: IndexRecipe) -> list[tuple[str, int | None]]:
    """(row label, HNSW efSearch or None) for every row measured on one built index."""
    if recipe_.kind != "hnsw":
        return [(recipe_.kind, None)]
    return [("hnsw", HNSW_EF_SEARCH), *((f"hnsw_ef{ef}", ef) for ef in HNSW_EF_SWEEP)]


def single_query_rate(index: faiss.Index | MilvusLiteIndex, queries: np.ndarray, budget_s: float) -> tuple[float, np.ndarray]:
    """Queries/s searching one query per call (at least 20 queries, then until budget_s); ids of those searched."""
    found = []
    started = time.perf_counter()
    for number in range(len(queries)):
        found.append(index.search(queries[number : number + 1], K)[1][0])
        if number >= 19 and time.perf_counter() - started > budget_s:
            break
    return len(found) / (time.perf_counter() - started), np.array(found)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact))
    return hits / exact.size


def _index_megabytes(index: faiss.Index | MilvusLiteIndex) -> float:
    if isinstance(index, MilvusLiteIndex):
        return index.megabytes()
    return faiss.serialize_index(index).nbytes / 2**20


def benchmark_size(n: int, kinds: tuple[str, ...], queries: int, budget_s: float, dim: int = DIM,
                   log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    started = time.perf_counter()
    catalog = synthetic_catalog(n, dim)
    query_vectors = noisy_queries(catalog, queries)
    log(f"{n:,} vectors generated in {time.perf_counter() - started:.1f} s")
    exact_index = faiss.IndexFlatIP(catalog.shape[1])
    exact_index.add(catalog)
    exact = exact_index.search(query_vectors, K)[1]  # batched: the ground truth for every query
    del exact_index
    rows = []
    for kind in kinds:
        recipe_ = recipe(kind, n, dim)
        started = time.perf_counter()
        index = build(recipe_, catalog)
        build_s = time.perf_counter() - started
        megabytes = _index_megabytes(index)
        for label, ef_search in search_settings(recipe_):
            params = dict(recipe_.params)
            if ef_search is not None:
                index.hnsw.efSearch = params["ef_search"] = ef_search
            rate, found = single_query_rate(index, query_vectors, budget_s)
            row = {"n_vectors": n, "index": label, "factory": recipe_.factory, "params": params, "build_s": build_s,
                   "memory_mb": megabytes, "queries_per_s": rate, "recall_at_10": recall_at_k(found, exact[: len(found)]),
                   "queries_timed": len(found)}
            log(f"  {label:<11} build {build_s:7.1f} s  {megabytes:8.1f} MB  {rate:9.1f} q/s  recall@10 {row['recall_at_10']:.3f}")
            rows.append(row)
        if isinstance(index, MilvusLiteIndex):
            index.close()
        del index
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="100000,1000000", help="catalog sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--indexes", default=",".join(INDEX_KINDS), help="default: %(default)s")
    parser.add_argument("--queries", type=int, default=500, help="queries with exact ground truth (default: %(default)s)")
    parser.add_argument("--time-per-index", type=float, default=5.0, help="seconds of single-query search per index")
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads (default: %(default)s, see the module doc)")
    parser.add_argument("--name", help="results folder under benchmarks/results (default: ann-<time>)")


def run_ann(sizes: list[int], kinds: tuple[str, ...], queries: int, budget_s: float, threads: int = 1,
            dim: int = DIM) -> list[dict[str, Any]]:
    faiss.omp_set_num_threads(threads)
    return [row for n in sizes for row in benchmark_size(n, kinds, queries, budget_s, dim)]


def ann_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per index type at the largest size: queries/s and recall@10 (the summary.json `ann` entry)."""
    largest = max(row["n_vectors"] for row in rows)
    return {row["index"]: {"n_vectors": largest, "queries_per_s": row["queries_per_s"], "recall_at_10": row["recall_at_10"],
                           "build_s": row["build_s"], "memory_mb": row["memory_mb"]}
            for row in rows if row["n_vectors"] == largest}


def main(args: argparse.Namespace) -> int:
    kinds = tuple(kind.strip() for kind in args.indexes.split(","))
    unknown = sorted(set(kinds) - set(INDEX_KINDS))
    if unknown:
        raise SystemExit(f"unknown index kinds {unknown}; choose from {INDEX_KINDS}")
    rows = run_ann([int(size) for size in args.sizes.split(",")], kinds, args.queries, args.time_per_index, args.threads)
    out_dir = results_dir(args.name or default_name("ann"))
    write_summary(out_dir, {"machine": machine_info(), "faiss_threads": args.threads, "ann": ann_summary(rows), "ann_rows": rows})
    plot_ann(rows, out_dir / "ann.png")
    print(f"results: {out_dir}")
    return 0
