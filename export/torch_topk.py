"""Exact inner-product top-K over catalog vectors held as one torch tensor: `faiss_topk`'s GPU path where
FAISS has no GPU build (and its CPU path without FAISS at all).

- ``TorchFlatIndex``: the catalog's flat vectors on a device (FP16 on CUDA by default), with FAISS's
  ``d`` / ``ntotal`` / ``search(queries, k) -> (scores, rows)``, so ``export.catalog_index.Catalog`` (per-track
  fusion, depth rules) uses it unchanged.
- On CUDA with Triton, a search is ``threshold_topk``: (1) the k-th best score over a strided sample of the
  catalog (1/stride of the rows, one small matmul + topk) is a lower bound of each query's true k-th best
  score; (2) one fused Triton kernel streams the catalog once, computes the scores tile by tile (FP32
  accumulation on the tensor cores) and keeps only the rows scoring at or above that bound, appended per
  query through an atomic counter; (3) a topk over those few candidates. Exact: every true top-k row
  passes the bound; a query whose candidates overflow the buffer is recomputed by ``chunked_topk``.
  The catalog is read once, so its time approaches the memory roofline (catalog bytes / bandwidth).
- Elsewhere ``chunked_topk``: scores of row blocks in FP32 and a running topk (exact, any device).
- ``read_flat_index`` / ``flat_index_bytes`` read and write FAISS's IndexFlatIP file format with NumPy, so
  a GPU node needs no FAISS at all for flat catalogs.
"""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# FAISS serialisation of flat indexes: fourcc, d (int32), ntotal, two dummies (int64), is_trained (uint8),
# metric_type (int32), then the vectors as a float vector (uint64 count of floats, float32 data).
_FLAT_FOURCC = {b"IxFI": 0, b"IxF2": 1}  # METRIC_INNER_PRODUCT, METRIC_L2
_HEADER = struct.Struct("<4siqqqBi")
_DUMMY = 1 << 20


def flat_index_bytes(vectors: np.ndarray) -> bytes:
    """``vectors`` [N, D] as a FAISS IndexFlatIP file (``faiss.read_index`` reads it)."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = array.shape
    return _HEADER.pack(b"IxFI", d, n, _DUMMY, _DUMMY, 1, 0) + struct.pack("<Q", array.size) + array.tobytes()


class FlatVectors:
    """Vectors that ``export.catalog_index.write_catalog`` writes as a FAISS IndexFlatIP file, without FAISS."""

    metric_type = 0

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ntotal, self.d = self.vectors.shape

    def serialize(self) -> bytes:
        return flat_index_bytes(self.vectors)


def write_flat_index(path: str | Path, vectors: np.ndarray) -> Path:
    path = Path(path)
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = array.shape
    with open(path, "wb") as handle:
        handle.write(_HEADER.pack(b"IxFI", d, n, _DUMMY, _DUMMY, 1, 0) + struct.pack("<Q", array.size))
        array.tofile(handle)
    return path


def read_flat_index(path: str | Path) -> tuple[np.ndarray, str]:
    """The vectors (float32 [N, D], memory-mapped) and metric ("ip" / "l2") of a FAISS flat index file."""
    path = Path(path)
    with open(path, "rb") as handle:
        header = handle.read(_HEADER.size)
    if len(header) < _HEADER.size or header[:4] not in _FLAT_FOURCC:
        raise ValueError(f"{path} is not a FAISS flat index (fourcc {header[:4]!r}); only flat catalogs are read without FAISS")
    fourcc, d, n, _, _, _, metric = _HEADER.unpack(header)
    offset = _HEADER.size + (4 if metric > 1 else 0)  # metric_arg follows for metrics beyond IP/L2
    count = int(np.fromfile(path, dtype="<u8", count=1, offset=offset)[0])
    if count != n * d:
        raise ValueError(f"{path}: header says {n} x {d} vectors but stores {count} floats")
    vectors = np.memmap(path, dtype="<f4", mode="r", offset=offset + 8, shape=(n, d))
    return vectors, "ip" if metric == 0 else "l2"


# -- search kernels ----------------------------------------------------------------------------------------
def naive_topk(catalog: Tensor, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The baseline: one matmul over the whole catalog, then torch.topk."""
    scores = queries.to(catalog.dtype) @ catalog.t()
    values, rows = torch.topk(scores, k, dim=1)
    return values.float(), rows


def mm_topk(catalog: Tensor, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Few queries (a search request's windows): one cuBLAS pass with FP32 scores (exact), then torch.topk."""
    scores = _fp32_scores(queries.to(catalog.dtype).contiguous(), catalog)
    values, rows = torch.topk(scores, k, dim=1)
    return values, rows


def chunked_topk(catalog: Tensor, queries: Tensor, k: int, chunk_rows: int = 1 << 16) -> tuple[Tensor, Tensor]:
    """Exact top-k by inner product with FP32 scores, a block of rows at a time (any device, any dtype)."""
    queries = queries.float()
    best_scores: Tensor | None = None
    best_rows: Tensor | None = None
    for start in range(0, catalog.shape[0], chunk_rows):
        block = catalog[start:start + chunk_rows]
        scores = F.linear(queries, block.float())
        values, rows = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        rows = rows + start
        if best_scores is not None:
            values, rows = torch.cat([best_scores, values], 1), torch.cat([best_rows, rows], 1)
            values, order = torch.topk(values, min(k, values.shape[1]), dim=1)
            rows = rows.gather(1, order)
        best_scores, best_rows = values, rows
    assert best_scores is not None and best_rows is not None
    return best_scores, best_rows


_SCAN = None


def _scan_kernel():
    """The fused scan kernel, built on first use (Triton is imported only where it is used).

    One program scores a [BQ queries x BN rows] tile (a K-loop over the dims, tensor cores, FP32 accumulation)
    and keeps the scores at or above the query's bound: one atomic per query row reserves that row's hits
    in its candidate buffer, a prefix sum over the row gives each hit its slot. Programs that share a catalog
    tile are adjacent, so the tile is read from memory once and from L2 for the other query blocks.
    """
    global _SCAN
    if _SCAN is not None:
        return _SCAN
    import triton
    import triton.language as tl

    @triton.jit
    def scan(C, Q, TAU, COUNT, OUT_SCORES, OUT_ROWS, n_rows, n_queries, capacity,
             D: tl.constexpr, BN: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr):
        pid = tl.program_id(0)
        query_blocks = tl.cdiv(n_queries, BQ)
        rows = (pid // query_blocks) * BN + tl.arange(0, BN)
        queries = (pid % query_blocks) * BQ + tl.arange(0, BQ)
        row_ok = rows < n_rows
        query_ok = queries < n_queries
        dims = tl.arange(0, BK)
        q_ptrs = Q + queries[:, None] * D + dims[None, :]
        c_ptrs = C + rows.to(tl.int64)[None, :] * D + dims[:, None]  # [BK, BN]: the tile transposed
        scores = tl.zeros([BQ, BN], dtype=tl.float32)
        for _ in range(0, D // BK):
            q = tl.load(q_ptrs, mask=query_ok[:, None], other=0.0)
            c = tl.load(c_ptrs, mask=row_ok[None, :], other=0.0)
            if IEEE:
                scores = tl.dot(q, c, scores, input_precision="ieee")
            else:
                scores = tl.dot(q, c, scores)
            q_ptrs += BK
            c_ptrs += BK
        bound = tl.load(TAU + queries, mask=query_ok, other=float("inf"))
        hit = ((scores >= bound[:, None]) & row_ok[None, :]).to(tl.int32)
        per_query = tl.sum(hit, axis=1)
        if tl.sum(per_query, axis=0) > 0:
            first = tl.atomic_add(COUNT + queries, per_query, mask=per_query > 0, sem="relaxed")
            slot = first[:, None] + tl.cumsum(hit, axis=1) - 1
            keep = (hit > 0) & (slot < capacity)
            offsets = queries[:, None].to(tl.int64) * capacity + slot
            tl.store(OUT_SCORES + offsets, scores, mask=keep)
            tl.store(OUT_ROWS + offsets, rows[None, :] + tl.zeros([BQ, BN], tl.int32), mask=keep)

    _SCAN = scan
    return scan


_TILE_TOP = None


def _tile_top_kernel():
    """Scores of a [BQ queries x BN rows] tile (as ``scan``), reduced to each query's two best rows of the tile."""
    global _TILE_TOP
    if _TILE_TOP is not None:
        return _TILE_TOP
    import triton
    import triton.language as tl

    @triton.jit
    def tile_top(C, Q, OUT_SCORES, OUT_ROWS, n_rows, n_queries, n_tiles,
                 D: tl.constexpr, BN: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr):
        pid = tl.program_id(0)
        query_blocks = tl.cdiv(n_queries, BQ)
        tile = pid // query_blocks
        rows = tile * BN + tl.arange(0, BN)
        queries = (pid % query_blocks) * BQ + tl.arange(0, BQ)
        row_ok = rows < n_rows
        query_ok = queries < n_queries
        dims = tl.arange(0, BK)
        q_ptrs = Q + queries[:, None] * D + dims[None, :]
        c_ptrs = C + rows.to(tl.int64)[None, :] * D + dims[:, None]
        scores = tl.zeros([BQ, BN], dtype=tl.float32)
        for _ in range(0, D // BK):
            q = tl.load(q_ptrs, mask=query_ok[:, None], other=0.0)
            c = tl.load(c_ptrs, mask=row_ok[None, :], other=0.0)
            if IEEE:
                scores = tl.dot(q, c, scores, input_precision="ieee")
            else:
                scores = tl.dot(q, c, scores)
            q_ptrs += BK
            c_ptrs += BK
        scores = tl.where(row_ok[None, :], scores, float("-inf"))
        columns = tl.arange(0, BN)
        out = (queries.to(tl.int64) * n_tiles + tile) * 2
        best, first = tl.max(scores, axis=1, return_indices=True)
        tl.store(OUT_SCORES + out, best, mask=query_ok)
        tl.store(OUT_ROWS + out, tile * BN + first, mask=query_ok)
        scores = tl.where(columns[None, :] == first[:, None], float("-inf"), scores)
        second, index = tl.max(scores, axis=1, return_indices=True)
        tl.store(OUT_SCORES + out + 1, second, mask=query_ok)
        tl.store(OUT_ROWS + out + 1, tile * BN + index, mask=query_ok)

    @triton.jit
    def tile_top_persistent(C, Q, OUT_SCORES, OUT_ROWS, n_rows, n_queries, n_tiles, programs_per_block,
                            D: tl.constexpr, BN: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr):
        # Each program keeps one query block and walks catalog tiles pid, pid + P, ...; the K loop is flattened
        # across tiles so the next tile's loads are in flight during this tile's matmul and reductions.
        pid = tl.program_id(0)
        block = pid // programs_per_block
        first_tile = pid % programs_per_block
        my_tiles = tl.cdiv(n_tiles - first_tile, programs_per_block)
        k_steps: tl.constexpr = D // BK
        queries = block * BQ + tl.arange(0, BQ)
        query_ok = queries < n_queries
        dims = tl.arange(0, BK)
        columns = tl.arange(0, BN)
        scores = tl.zeros([BQ, BN], dtype=tl.float32)
        tile = first_tile
        rows = tile * BN + tl.arange(0, BN)
        ki = -1
        for _ in range(0, my_tiles * k_steps):
            ki = tl.where(ki == k_steps - 1, 0, ki + 1)
            if ki == 0:
                rows = tile * BN + tl.arange(0, BN)
            q = tl.load(Q + queries[:, None] * D + ki * BK + dims[None, :], mask=query_ok[:, None], other=0.0)
            c = tl.load(C + rows.to(tl.int64)[None, :] * D + ki * BK + dims[:, None], mask=(rows < n_rows)[None, :], other=0.0)
            if IEEE:
                scores = tl.dot(q, c, scores, input_precision="ieee")
            else:
                scores = tl.dot(q, c, scores)
            if ki == k_steps - 1:
                scores = tl.where((rows < n_rows)[None, :], scores, float("-inf"))
                out = (queries.to(tl.int64) * n_tiles + tile) * 2
                best, first = tl.max(scores, axis=1, return_indices=True)
                tl.store(OUT_SCORES + out, best, mask=query_ok)
                tl.store(OUT_ROWS + out, tile * BN + first, mask=query_ok)
                scores = tl.where(columns[None, :] == first[:, None], float("-inf"), scores)
                second, index = tl.max(scores, axis=1, return_indices=True)
                tl.store(OUT_SCORES + out + 1, second, mask=query_ok)
                tl.store(OUT_ROWS + out + 1, tile * BN + index, mask=query_ok)
                scores = tl.zeros([BQ, BN], dtype=tl.float32)
                tile += programs_per_block

    _TILE_TOP = (tile_top, tile_top_persistent)
    return _TILE_TOP


DEFAULT_TILE_TOP = {"BN": 256, "BQ": 128, "BK": 64, "num_warps": 8, "num_stages": 3, "persistent": 0}


def tile_top_topk(catalog: Tensor, queries: Tensor, k: int, *, scan: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Exact top-k from each row tile's two best rows per query (one fused Triton pass over the catalog).

    A tile can hide a third top-k row only if its second-best reaches the k-th best found: every row of such
    (query, tile) pairs is scored again (a gather of those tiles only) and merged before the final topk.
    Returns scores (FP32), rows (int64) and the number of re-scored tiles per query.
    """
    n_queries, dim = queries.shape
    queries = queries.to(catalog.dtype).contiguous()
    config = {**DEFAULT_TILE_TOP, **(scan or {})}
    block_q = max(16, min(config["BQ"], 1 << (n_queries - 1).bit_length()))
    block_k = min(config["BK"], dim)
    if dim % block_k:
        raise ValueError(f"dim {dim} must be a multiple of {block_k}")
    tiles = triton_cdiv(catalog.shape[0], config["BN"])
    if 2 * tiles < k:
        return (*chunked_topk(catalog, queries, k), torch.ones(n_queries, dtype=torch.bool, device=catalog.device))
    out_scores = torch.empty(n_queries, tiles * 2, dtype=torch.float32, device=catalog.device)
    out_rows = torch.empty(n_queries, tiles * 2, dtype=torch.int32, device=catalog.device)
    plain, persistent = _tile_top_kernel()
    query_blocks = triton_cdiv(n_queries, block_q)
    options = dict(D=dim, BN=config["BN"], BQ=block_q, BK=block_k, IEEE=catalog.dtype == torch.float32,
                   num_warps=config["num_warps"], num_stages=config["num_stages"])
    if config.get("persistent"):  # programs per query block: a few per multiprocessor in all
        per_block = max(1, min(tiles, int(config["persistent"]) // query_blocks))
        persistent[(per_block * query_blocks,)](catalog, queries, out_scores, out_rows, catalog.shape[0], n_queries,
                                                tiles, per_block, **options)
    else:
        plain[(tiles * query_blocks,)](catalog, queries, out_scores, out_rows, catalog.shape[0], n_queries, tiles, **options)
    return _finish_tile_top(catalog, queries, out_scores, out_rows, k, config["BN"])


def _finish_tile_top(catalog: Tensor, queries: Tensor, out_scores: Tensor, out_rows: Tensor, k: int,
                     block: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k over the tiles' two best rows, re-scoring every row of tiles that may hide a third."""
    n_queries = queries.shape[0]
    tiles = out_scores.shape[1] // 2
    values, slots = torch.topk(out_scores, k, dim=1)
    rows = out_rows.gather(1, slots).long()
    pairs_per_tile = out_scores.view(n_queries, tiles, 2)
    flagged = pairs_per_tile[:, :, 1] >= values[:, -1:]
    pairs = flagged.nonzero()  # (query, tile), sorted by query; one host sync
    if pairs.numel():
        query, tile = pairs[:, 0], pairs[:, 1]
        tile_rows = tile[:, None] * block + torch.arange(block, device=catalog.device)[None, :]
        valid = tile_rows < catalog.shape[0]
        tile_rows = tile_rows.clamp_max(catalog.shape[0] - 1)
        rescored = torch.einsum("pbd,pd->pb", catalog[tile_rows].float(), queries[query].float())
        rescored = rescored.masked_fill(~valid, float("-inf"))
        # The flagged tiles' two kept rows are among the re-scored ones: drop them from the kept list.
        pairs_per_tile[flagged] = float("-inf")
        first = torch.searchsorted(query, torch.arange(n_queries, device=catalog.device))
        rank = torch.arange(query.numel(), device=catalog.device) - first[query]
        width = int(rank.max()) + 1
        extra_scores = torch.full((n_queries, width * block), float("-inf"), device=catalog.device)
        extra_rows = torch.zeros((n_queries, width * block), dtype=torch.int32, device=catalog.device)
        columns = rank[:, None] * block + torch.arange(block, device=catalog.device)[None, :]
        extra_scores[query[:, None], columns] = rescored
        extra_rows[query[:, None], columns] = tile_rows.to(torch.int32)
        merged_scores = torch.cat([out_scores, extra_scores], dim=1)
        values, slots = torch.topk(merged_scores, k, dim=1)
        rows = torch.cat([out_rows, extra_rows], dim=1).gather(1, slots).long()
    return values, rows, flagged.sum(1)


_TILE_REDUCE = None


def _tile_reduce_kernel():
    global _TILE_REDUCE
    if _TILE_REDUCE is not None:
        return _TILE_REDUCE
    import triton
    import triton.language as tl

    @triton.jit
    def tile_reduce(S, OUT_SCORES, OUT_ROWS, n_cols, n_tiles, first_tile, BN: tl.constexpr, T: tl.constexpr):
        # One query row of a [queries, chunk] FP32 score block: the two best columns of T tiles of BN columns.
        query = tl.program_id(0).to(tl.int64)
        tiles = tl.program_id(1) * T + tl.arange(0, T)
        within = tl.arange(0, BN)
        columns = tiles[:, None] * BN + within[None, :]
        scores = tl.load(S + query * n_cols + columns, mask=columns < n_cols, other=float("-inf"))
        tile_ok = tiles * BN < n_cols
        out = (query * n_tiles + first_tile + tiles) * 2
        best, first = tl.max(scores, axis=1, return_indices=True)
        tl.store(OUT_SCORES + out, best, mask=tile_ok)
        tl.store(OUT_ROWS + out, (first_tile + tiles) * BN + first, mask=tile_ok)
        scores = tl.where(within[None, :] == first[:, None], float("-inf"), scores)
        second, index = tl.max(scores, axis=1, return_indices=True)
        tl.store(OUT_SCORES + out + 1, second, mask=tile_ok)
        tl.store(OUT_ROWS + out + 1, (first_tile + tiles) * BN + index, mask=tile_ok)

    _TILE_REDUCE = tile_reduce
    return tile_reduce


def _fp32_scores(queries: Tensor, rows: Tensor) -> Tensor:
    if queries.is_cuda and queries.dtype in (torch.float16, torch.bfloat16):
        return torch.mm(queries, rows.t(), out_dtype=torch.float32)  # cuBLAS, FP32 output of FP16 products
    return F.linear(queries.float(), rows.float())


def cublas_tile_topk(catalog: Tensor, queries: Tensor, k: int, *, chunk_rows: int = 1 << 15,
                     block: int = 128) -> tuple[Tensor, Tensor, Tensor]:
    """Exact top-k: cuBLAS scores (FP32 out) of L2-sized row chunks, each reduced to its tiles' two best rows
    by a Triton kernel while it is still in L2, then ``tile_top_topk``'s finishing step."""
    import triton

    n_queries = queries.shape[0]
    queries = queries.to(catalog.dtype).contiguous()
    chunk_rows = max(block, chunk_rows // block * block)
    tiles = triton_cdiv(catalog.shape[0], block)
    if 2 * tiles < k:
        return (*chunked_topk(catalog, queries, k), torch.ones(n_queries, dtype=torch.bool, device=catalog.device))
    out_scores = torch.empty(n_queries, tiles * 2, dtype=torch.float32, device=catalog.device)
    out_rows = torch.empty(n_queries, tiles * 2, dtype=torch.int32, device=catalog.device)
    reduce, per_program = _tile_reduce_kernel(), 8
    for start in range(0, catalog.shape[0], chunk_rows):
        scores = _fp32_scores(queries, catalog[start:start + chunk_rows])
        chunk_tiles = triton_cdiv(scores.shape[1], block)
        reduce[(n_queries, triton.cdiv(chunk_tiles, per_program))](
            scores, out_scores, out_rows, scores.shape[1], tiles, start // block, BN=block, T=per_program, num_warps=4)
    return _finish_tile_top(catalog, queries, out_scores, out_rows, k, block)


def triton_available(device: torch.device) -> bool:
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


# Up to this many queries a search is one cuBLAS pass with FP32 scores + torch.topk (memory-bound, no fused kernel).
FEW_QUERIES = 32
DEFAULT_SCAN = {"BN": 128, "BQ": 128, "BK": 64, "num_warps": 8, "num_stages": 3}


def threshold_topk(catalog: Tensor, sample: Tensor, queries: Tensor, k: int, *, capacity: int,
                   margin: float = 4e-3, scan: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Exact top-k through a sampled score bound and one fused catalog scan; see the module docstring.

    ``sample``: some rows of ``catalog`` (at least k). Returns scores (FP32), rows (int64) and each
    query's candidate count (queries over ``capacity`` are recomputed exactly by ``chunked_topk``).
    """
    n_queries, dim = queries.shape
    queries = queries.to(catalog.dtype).contiguous()
    # FP16 sample scores round to ~5e-4: the margin keeps the bound below the kernel's FP32 scores.
    bound = torch.topk(queries @ sample.t(), k, dim=1).values[:, -1].float() - margin
    count = torch.zeros(n_queries, dtype=torch.int32, device=catalog.device)
    out_scores = torch.empty(n_queries, capacity, dtype=torch.float32, device=catalog.device)
    out_rows = torch.empty(n_queries, capacity, dtype=torch.int32, device=catalog.device)
    config = {**DEFAULT_SCAN, **(scan or {})}
    block_q = max(16, min(config["BQ"], 1 << (n_queries - 1).bit_length()))
    block_k = min(config["BK"], dim)
    if dim % block_k:
        raise ValueError(f"dim {dim} must be a multiple of {block_k}")
    grid = (triton_cdiv(catalog.shape[0], config["BN"]) * triton_cdiv(n_queries, block_q),)
    _scan_kernel()[grid](catalog, queries, bound, count, out_scores, out_rows, catalog.shape[0], n_queries, capacity,
                         D=dim, BN=config["BN"], BQ=block_q, BK=block_k, IEEE=catalog.dtype == torch.float32,
                         num_warps=config["num_warps"], num_stages=config["num_stages"])
    valid = torch.arange(capacity, device=catalog.device)[None, :] < count[:, None]
    values, slots = torch.topk(out_scores.masked_fill(~valid, float("-inf")), k, dim=1)
    rows = out_rows.gather(1, slots).long()
    overflow = (count > capacity).nonzero().flatten()
    if overflow.numel():  # a host sync only when it happens
        exact_scores, exact_rows = chunked_topk(catalog, queries[overflow], k)
        values[overflow], rows[overflow] = exact_scores, exact_rows
    return values, rows, count


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


class TorchFlatIndex:
    """Flat inner-product search over vectors held on a torch device, with FAISS's search signature."""

    def __init__(self, vectors: np.ndarray | Tensor, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 *, sample_stride: int = 32, method: str = "auto", scan: dict | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        if isinstance(vectors, Tensor):
            tensor = vectors
        else:  # a read-only memory map is fine: it is copied to the device below
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        if tensor.dim() != 2 or tensor.shape[0] == 0:
            raise ValueError(f"vectors must be a non-empty [N, D] array, got shape {list(tensor.shape)}")
        self.vectors = tensor.to(self.device, self.dtype).contiguous()
        self.ntotal, self.d = self.vectors.shape
        self.metric_type = 0  # inner product, as FAISS numbers it
        if method not in ("auto", "cublas_tiles", "tiletop", "threshold", "chunked", "naive"):
            raise ValueError(f"method must be auto, cublas_tiles, tiletop, threshold, chunked or naive, got {method!r}")
        self.scan = scan
        if method == "auto":  # the fused tile top-2 kernel measured fastest of the exact GPU paths here
            method = "tiletop" if triton_available(self.device) and self.ntotal >= 4096 and self.d % 16 == 0 else "chunked"
        self.method = method
        self.sample_stride = max(1, sample_stride)
        self.sample = self.vectors[:: self.sample_stride].contiguous()
        self.last_candidates: Tensor | None = None

    def search_tensor(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-k (scores FP32, rows int64) of ``queries`` [n, D] on this index's device; k <= ntotal."""
        queries = queries.to(self.device)
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be in 1..{self.ntotal}, got {k}")
        if self.method == "naive":
            return naive_topk(self.vectors, queries, k)
        if (self.method in ("tiletop", "threshold", "cublas_tiles") and queries.shape[0] <= FEW_QUERIES
                and self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16)):
            self.last_candidates = None
            return mm_topk(self.vectors, queries, k)
        if self.method == "cublas_tiles":
            options = {key: value for key, value in (self.scan or {}).items() if key in ("chunk_rows", "block")}
            values, rows, self.last_candidates = cublas_tile_topk(self.vectors, queries, k, **options)
            return values, rows
        if self.method == "tiletop":
            values, rows, self.last_candidates = tile_top_topk(self.vectors, queries, k, scan=self.scan)
            return values, rows
        if self.method == "threshold" and self.sample.shape[0] >= k:
            capacity = max(1024, 8 * k * self.sample_stride)
            values, rows, self.last_candidates = threshold_topk(self.vectors, self.sample, queries, k,
                                                                capacity=capacity, scan=self.scan)
            return values, rows
        return chunked_topk(self.vectors, queries, k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's ``index.search``: scores float32 [n, k] and rows int64 [n, k] (-1 beyond ntotal)."""
        queries_t = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        depth = min(k, self.ntotal)
        with torch.inference_mode():
            values, rows = self.search_tensor(queries_t, depth)
        scores, labels = values.cpu().numpy().astype(np.float32), rows.cpu().numpy().astype(np.int64)
        if depth < k:
            pad = k - depth
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.finfo(np.float32).max)
            labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
        return scores, labels


def torch_index_loader(device: str | torch.device = "cpu", dtype: torch.dtype | None = None, **options):
    """``load_catalog``'s ``index`` hook: the catalog's flat vectors in a ``TorchFlatIndex`` (no FAISS needed)."""
    from export.catalog_index import INDEX_FILE, CatalogMismatch

    def load(folder: Path, manifest: dict) -> TorchFlatIndex:
        if manifest.get("index_type") != "flat":
            raise CatalogMismatch(f"catalog {folder} is a {manifest.get('index_type')!r} index: the torch top-K path "
                                  "searches flat catalogs exactly (build with --index-type flat) or needs FAISS")
        vectors, metric = read_flat_index(folder / INDEX_FILE)
        index = TorchFlatIndex(vectors, device, dtype, **options)
        index.metric_type = 0 if metric == "ip" else 1
        return index

    return load


def load_torch_catalog(directory: str | Path, expected_dim: int | None = None, expected_embedder_sha256: str | None = None,
                       device: str | torch.device = "cpu", dtype: torch.dtype | None = None, **options):
    """``export.catalog_index.load_catalog`` (same verification, same per-track fusion) searching with torch."""
    from export.catalog_index import load_catalog

    return load_catalog(directory, expected_dim, expected_embedder_sha256, index=torch_index_loader(device, dtype, **options))
