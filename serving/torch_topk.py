"""Exact inner-product top-K over catalog vectors held as one torch tensor: `faiss_topk`'s GPU path where
FAISS has no GPU build (and its CPU path without FAISS at all).

- ``TorchFlatIndex``: the catalog's flat vectors on a device (FP16 on CUDA by default), with FAISS's
  ``d`` / ``ntotal`` / ``search(queries, k) -> (scores, rows)``, so ``serving.catalog_index.Catalog`` (per-track
  fusion, depth rules) uses it unchanged.
- On CUDA with Triton, a batch of queries is ``group_top_topk``: one persistent Triton GEMM kernel streams
  the catalog once (TMA, tensor cores, FP32 accumulation) and reduces each [queries x 256 rows] score tile
  in registers to per-query group summaries (best strided subgroup, its maximum, the other subgroups'
  maximum), so the 256 x N score matrix is never written; a register radix select picks each query's k best
  groups, their best subgroups' rows are re-scored in FP32 and sorted. Exact (FP32 sums of the stored
  vectors): groups that may hide a second top-k row are flagged and re-scored in full. The whole search is one
  CUDA graph per query bucket and k (``_GroupTopGraphs``); with 256 queries x 256 dims the scan is as much
  tensor-core work as catalog traffic (0.36 ms per 1M rows on an H100, docs/gpu-performance.md).
- A search request's few queries (``FEW_QUERIES`` or fewer): ``mm_topk``, one cuBLAS pass + torch.topk.
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

from serving.catalog_index import INDEX_FILE, CatalogMismatch, load_catalog

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
    """Vectors that ``serving.catalog_index.write_catalog`` writes as a FAISS IndexFlatIP file, without FAISS."""

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


def _fp32_scores(queries: Tensor, rows: Tensor) -> Tensor:
    if queries.is_cuda and queries.dtype in (torch.float16, torch.bfloat16):
        return torch.mm(queries, rows.t(), out_dtype=torch.float32)  # cuBLAS, FP32 output of FP16 products
    return F.linear(queries.float(), rows.float())


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


_GROUP_TOP = None


def _group_top_kernels():
    """The group-top scan and its second-stage kernels, built on first use (Triton is imported only where it
    is used).

    ``group_top``: a tile is [BQ queries x BN catalog rows] (TMA loads, tensor cores, FP32 accumulation); its
    rows form one group, split into R strided subgroups (rows whose offset in the tile is r mod R). Per query
    and tile it writes the best subgroup's maximum and index and the largest maximum of the other subgroups,
    never the score matrix. With R a multiple of 8 a subgroup's maximum is a reduction inside one thread's
    accumulator registers (the Hopper MMA layout gives a thread the same columns mod 8 of a row), so the
    epilogue costs about one max per score. Programs walk tiles pid, pid + P, ...; ``FLATTEN`` lets Triton
    pipeline the loads across tiles (4 K-steps per tile are too few to hide load latency on their own), and
    programs that share a catalog tile run side by side, so it is read from memory once and from L2 after.

    ``select_top``: a row's k largest, unordered, by one program per row (``top_columns``), or, on the group
    maxima, the candidates of each query's k best groups (``_group_top_candidates``). ``rescore``: FP32 inner
    products of each query with its own candidate rows (one read of each row). ``sort_top``: a row's k largest
    in order.
    """
    global _GROUP_TOP
    if _GROUP_TOP is not None:
        return _GROUP_TOP
    import triton
    import triton.language as tl

    @triton.jit
    def group_top(q_desc, c_desc, BEST, SUB, SECOND, n_rows, n_queries,
                  STEPS: tl.constexpr, BQ: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, K_STEPS: tl.constexpr, R: tl.constexpr,
                  PROGRAMS: tl.constexpr, FLATTEN: tl.constexpr, WS: tl.constexpr, IEEE: tl.constexpr):
        query_blocks = tl.cdiv(n_queries, BQ)
        groups = tl.cdiv(n_rows, BN)
        columns = tl.arange(0, BN)
        # Every program takes the same number of steps; past the last tile it redoes that tile (same values
        # stored again), which keeps the loop body free of branches for the pipeliner. STEPS is a constant
        # because Triton 3.6's interpreter fails on loops with run-time bounds under NumPy 2 (one compile per
        # catalog size and query bucket).
        for step in tl.range(0, STEPS, flatten=FLATTEN, warp_specialize=WS):
            tile = tl.minimum(tl.program_id(0) + step * PROGRAMS, groups * query_blocks - 1)
            group = tile // query_blocks
            query0 = (tile % query_blocks) * BQ
            row0 = group * BN
            scores = tl.zeros([BQ, BN], dtype=tl.float32)
            for ki in range(K_STEPS):
                q = q_desc.load([query0, ki * BK])
                c = c_desc.load([row0, ki * BK])
                if IEEE:
                    scores = tl.dot(q, c.T, scores, input_precision="ieee")
                else:
                    scores = tl.dot(q, c.T, scores)
            scores = tl.where((row0 + columns < n_rows)[None, :], scores, float("-inf"))
            subgroups = tl.max(tl.reshape(scores, [BQ, BN // R, R]), axis=1)
            best, index = tl.max(subgroups, axis=1, return_indices=True)
            residues = tl.arange(0, R)
            second = tl.max(tl.where(residues[None, :] == index[:, None], float("-inf"), subgroups), axis=1)
            queries = query0 + tl.arange(0, BQ)
            out = queries.to(tl.int64) * groups + group
            ok = queries < n_queries
            tl.store(BEST + out, best, mask=ok)
            tl.store(SUB + out, index, mask=ok)
            tl.store(SECOND + out, second, mask=ok)

    @triton.jit
    def rescore(C, Q, BASE, GROUPS, OUT, OUT_ROWS, n_rows, n_base, base_stride, n_groups, width,
                S: tl.constexpr, R: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, BM: tl.constexpr):
        # FP32 scores of one query's candidates: slots below n_base are subgroup members (S per BASE entry:
        # a group's first row plus its residue, n_rows if none), the rest whole groups (BN rows per GROUPS
        # entry, -1 if none). Writes scores (-inf for empty slots) and rows; a block of empty slots loads nothing.
        query = tl.program_id(0).to(tl.int64)
        slots = tl.program_id(1) * BM + tl.arange(0, BM)
        in_base = slots < n_base
        base = tl.load(BASE + query * base_stride + slots // S, mask=in_base, other=n_rows)
        member_rows = tl.where(base < n_rows, base + (slots % S) * R, n_rows)
        group = tl.load(GROUPS + query * n_groups + (slots - n_base) // BN, mask=(slots >= n_base) & (slots < width), other=-1)
        group_rows = tl.where(group >= 0, group * BN + (slots - n_base) % BN, n_rows)
        rows = tl.where(in_base, member_rows, group_rows)
        rows = tl.where(rows < n_rows, rows, n_rows)
        valid = rows < n_rows
        scores = tl.full([BM], float("-inf"), tl.float32)
        if tl.sum(valid.to(tl.int32), axis=0) > 0:
            dims = tl.arange(0, DP)
            c = tl.load(C + rows[:, None] * D + dims[None, :], mask=valid[:, None] & (dims < D)[None, :], other=0.0)
            q = tl.load(Q + query * D + dims, mask=dims < D, other=0.0)
            scores = tl.where(valid, tl.sum(c.to(tl.float32) * q.to(tl.float32)[None, :], axis=1), scores)
        tl.store(OUT + query * width + slots, scores, mask=slots < width)
        tl.store(OUT_ROWS + query * width + slots, rows, mask=slots < width)

    @triton.jit
    def select_top(V, OUT_V, OUT_I, SUB, SECOND, BASE, FLAGGED, PENDING, COUNT, width, n_rows,
                   K: tl.constexpr, WP: tl.constexpr, GROUPS: tl.constexpr, BN: tl.constexpr, F: tl.constexpr,
                   FP: tl.constexpr):
        # The K largest of one row, unordered: the K-th largest key built bit by bit (radix select in
        # registers), then every key above it and the first ties at it, compacted by a prefix sum.
        row = tl.program_id(0).to(tl.int64)
        columns = tl.arange(0, WP)
        values = tl.load(V + row * width + columns, mask=columns < width, other=float("-inf"))
        # Float bits whose integer order is the floats' order: negative floats get their magnitude bits
        # flipped (signed order), then the sign bit flipped (unsigned order).
        bits = values.to(tl.int32, bitcast=True)
        keys = ((bits ^ ((bits >> 31) & 0x7FFFFFFF)) ^ (-2147483648)).to(tl.uint32, bitcast=True)
        kth = tl.full([], 0, tl.uint32)
        for bit in tl.static_range(31, -1, -1):
            candidate = kth | tl.full([], 1 << bit, tl.uint32)
            kth = tl.where(tl.sum((keys >= candidate).to(tl.int32), axis=0) >= K, candidate, kth)
        above = keys > kth
        tied = (keys == kth).to(tl.int32)
        take = above | ((tied > 0) & (tl.cumsum(tied, axis=0) <= K - tl.sum(above.to(tl.int32), axis=0)))
        slot = tl.cumsum(take.to(tl.int32), axis=0) - 1
        if not GROUPS:
            tl.store(OUT_V + row * K + slot, values, mask=take)
            tl.store(OUT_I + row * K + slot, columns, mask=take)
        else:
            # The row holds one query's group maxima: write the candidates of its K best groups instead.
            # The K-th best maximum bounds the K-th best score from below; a group whose other subgroups
            # reach it is flagged: the first F whole (FLAGGED, compacted, -1 beyond), later ones PENDING.
            sub = tl.load(SUB + row * width + columns, mask=take, other=0)
            second = tl.load(SECOND + row * width + columns, mask=take, other=float("-inf"))
            bound = tl.min(tl.where(take, values, float("inf")), axis=0)
            flagged = take & (second >= bound)
            rank = tl.cumsum(flagged.to(tl.int32), axis=0) - 1
            tl.store(COUNT + row, tl.sum(flagged.to(tl.int32), axis=0))
            group_row = columns.to(tl.int64) * BN
            tl.store(BASE + row * K + slot, tl.where(flagged, n_rows, group_row + sub), mask=take)
            tl.store(PENDING + row * K + slot, tl.where(flagged & (rank >= F), columns, -1).to(tl.int64), mask=take)
            first = tl.arange(0, FP)
            tl.store(FLAGGED + row * F + first, tl.full([FP], -1, tl.int64), mask=first < F)
            tl.debug_barrier()  # the compacted entries below overwrite the -1 fill
            tl.store(FLAGGED + row * F + rank, columns.to(tl.int64), mask=flagged & (rank < F))

    @triton.jit
    def sort_top(V, ROWS, OUT_V, OUT_R, width, K: tl.constexpr, WP: tl.constexpr):
        # The K largest of one row in descending order (ties: the earlier column first): one bitonic sort of
        # (score key, column) packed in int64.
        row = tl.program_id(0).to(tl.int64)
        columns = tl.arange(0, WP)
        values = tl.load(V + row * width + columns, mask=columns < width, other=float("-inf"))
        bits = values.to(tl.int32, bitcast=True)  # as in select_top: signed order = float order
        packed = ((bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.int64) << 32) | (WP - 1 - columns).to(tl.int64)
        packed = tl.sort(packed, descending=True)
        column = (WP - 1) - (packed & 0xFFFFFFFF).to(tl.int32)
        keep = (columns < K) & (column < width)
        tl.store(OUT_V + row * K + columns, tl.load(V + row * width + column, mask=keep, other=float("-inf")), mask=columns < K)
        tl.store(OUT_R + row * K + columns, tl.load(ROWS + row * width + column, mask=keep, other=-1), mask=columns < K)

    _GROUP_TOP = (group_top, rescore, select_top, sort_top)
    return _GROUP_TOP


# Tuned on an H100 (benchmarks/gpu.py, section topk): 128 x 256 tiles, 4 stages (5 exceed shared memory),
# one program per multiprocessor; warp specialisation (without flattening, as Triton requires on Hopper)
# and non-persistent grids measured slower.
DEFAULT_GROUP_TOP = {"BQ": 128, "BN": 256, "BK": 64, "R": 32, "num_warps": 8, "num_stages": 4, "programs": 1,
                     "flatten": 1, "ws": 0}


def group_top_scan(catalog: Tensor, queries: Tensor, config: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The group-top kernel's three [queries, groups] arrays: best subgroup maximum, its index, and the best
    maximum of the group's other subgroups (``config`` as ``DEFAULT_GROUP_TOP``)."""
    import triton
    from triton.tools.tensor_descriptor import TensorDescriptor

    config = {**DEFAULT_GROUP_TOP, **(config or {})}
    n_queries, dim = queries.shape
    block_q = max(64, min(config["BQ"], 1 << (n_queries - 1).bit_length()))
    block_k = min(config["BK"], dim)
    groups = triton.cdiv(catalog.shape[0], config["BN"])
    best = torch.empty(n_queries, groups, dtype=torch.float32, device=catalog.device)
    sub = torch.empty(n_queries, groups, dtype=torch.int32, device=catalog.device)
    second = torch.empty(n_queries, groups, dtype=torch.float32, device=catalog.device)
    tiles = groups * triton.cdiv(n_queries, block_q)
    if catalog.is_cuda:  # resident programs: a multiple of the multiprocessors
        sms = torch.cuda.get_device_properties(catalog.device).multi_processor_count
        programs = min(tiles, sms * config["programs"]) if config["programs"] else tiles
    else:
        programs = min(tiles, 4)
    _group_top_kernels()[0][(programs,)](
        TensorDescriptor.from_tensor(queries, [block_q, block_k]), TensorDescriptor.from_tensor(catalog, [config["BN"], block_k]),
        best, sub, second, catalog.shape[0], n_queries, STEPS=triton.cdiv(tiles, programs),
        BQ=block_q, BN=config["BN"], BK=block_k, K_STEPS=triton.cdiv(dim, block_k), R=config["R"], PROGRAMS=programs,
        FLATTEN=bool(config["flatten"]), WS=bool(config["ws"]), IEEE=catalog.dtype == torch.float32,
        num_warps=config["num_warps"], num_stages=config["num_stages"])
    return best, sub, second


# Row widths up to SELECT_WIDTH are selected in registers by one Triton program per row (wider rows: torch.topk);
# rows wider than SORT_WIDTH are cut to their k best before the bitonic sort (a sort of 1024 costs ~35 us).
SELECT_WIDTH = 8192
SORT_WIDTH = 256
# Flagged groups per query whose rows are re-scored inside the sync-free part (a CUDA graph); more go through
# a host-synchronised merge (~0.5 ms: a dozen launches after the sync). 12 covers k <= 12 entirely and keeps
# the final selection within 4096 columns (k x BN/R + 12 x BN) up to k = 100 with the default tiles.
FLAGGED_IN_GRAPH = 12


def top_columns(values: Tensor, k: int, *, sort: bool = True, carry: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``torch.topk(values, k, dim=1)`` (FP32 [Q, W]) by one Triton program per row: its values and columns, or
    ``carry``'s entries at those columns; ``sort=False`` leaves each row's k in any order. torch.topk's
    several passes cost ~0.1 ms on [256, 4096] (H100), a quarter of the whole search."""
    import triton

    n, width = values.shape
    wide = triton.next_power_of_2(width)
    if not (triton_available(values.device) and wide <= SELECT_WIDTH and k <= SORT_WIDTH):
        top, columns = torch.topk(values, k, dim=1, sorted=sort)
        return top, (columns if carry is None else carry.gather(1, columns))
    values = values.contiguous()
    select, sort_top = _group_top_kernels()[2:]
    if not sort or wide > SORT_WIDTH:
        top = torch.empty(n, k, dtype=torch.float32, device=values.device)
        columns = torch.empty(n, k, dtype=torch.int32, device=values.device)
        select[(n,)](values, top, columns, *([values] * 6), width, 0, K=k, WP=wide, GROUPS=False, BN=1, F=1, FP=1,
                     num_warps=4 if wide <= 2048 else 8)
        columns = columns.long()
        picked = columns if carry is None else carry.gather(1, columns)
        if not sort:
            return top, picked
        values, carry, width, wide = top, picked, k, triton.next_power_of_2(k)
    source = torch.arange(width, device=values.device).expand(n, width) if carry is None else carry
    out = torch.empty(n, k, dtype=torch.float32, device=values.device)
    picked = torch.empty(n, k, dtype=source.dtype, device=values.device)
    sort_top[(n,)](values, source.contiguous(), out, picked, width, K=k, WP=wide, num_warps=4)
    return out, picked


def _rescore(catalog: Tensor, queries: Tensor, base: Tensor, groups: Tensor, config: dict) -> tuple[Tensor, Tensor]:
    """Scores and rows [Q, W] of each query's candidates: the subgroups starting at ``base`` [Q, B] (``n_rows``:
    none) then the whole groups ``groups`` [Q, G] (-1: none); see ``rescore``."""
    import triton

    n_queries, block, residues = queries.shape[0], config["BN"], config["R"]
    members = block // residues
    n_base = base.shape[1] * members
    width = n_base + groups.shape[1] * block
    scores = torch.empty(n_queries, width, dtype=torch.float32, device=catalog.device)
    rows = torch.empty(n_queries, width, dtype=torch.int64, device=catalog.device)
    slots = 32
    _group_top_kernels()[1][(n_queries, triton.cdiv(width, slots))](
        catalog, queries, base, groups, scores, rows, catalog.shape[0], n_base, base.shape[1], groups.shape[1], width,
        S=members, R=residues, BN=block, D=catalog.shape[1], DP=triton.next_power_of_2(catalog.shape[1]), BM=slots,
        num_warps=4)
    return scores, rows


def _may_leave_pending(n_rows: int, k: int, config: dict, device: torch.device) -> bool:
    """Whether ``_group_top_candidates`` can leave flagged groups to merge: never when a program selects the
    groups in registers and k <= ``FLAGGED_IN_GRAPH`` (flagged groups are among the k selected), so such a
    search needs no host sync at all."""
    wide = 1 << (triton_cdiv(n_rows, config["BN"]) - 1).bit_length()
    return not (triton_available(device) and wide <= SELECT_WIDTH and k <= FLAGGED_IN_GRAPH)


def _group_top_candidates(catalog: Tensor, queries: Tensor, k: int, config: dict) -> tuple[Tensor, ...]:
    """``group_top_topk`` up to its host sync (so a CUDA graph can hold it): the sorted top-k (values, rows)
    among the best subgroups of each query's k best groups and every row of its first ``FLAGGED_IN_GRAPH``
    flagged groups; the number of flagged groups per query, the flagged groups left to merge [Q, k] (-1:
    none) and whether there are any."""
    import triton

    n_queries, n_rows, device = queries.shape[0], catalog.shape[0], catalog.device
    best, sub, second = group_top_scan(catalog, queries, config)
    n_groups = best.shape[1]
    if not (triton_available(device) and triton.next_power_of_2(n_groups) <= SELECT_WIDTH):
        # Too many groups for one program's registers: torch.topk, and every flagged group merged later.
        values, groups = torch.topk(best, k, dim=1, sorted=False)
        flagged = second.gather(1, groups) >= values.min(dim=1, keepdim=True).values
        base = (groups * config["BN"] + sub.gather(1, groups)).masked_fill(flagged, n_rows)
        scores, rows = _rescore(catalog, queries, base, base[:, :0], config)
        return (*top_columns(scores, k, carry=rows), flagged.sum(1), groups.masked_fill(~flagged, -1), flagged.any())
    in_graph = max(1, min(FLAGGED_IN_GRAPH, k))
    base = torch.empty(n_queries, k, dtype=torch.int64, device=device)
    whole = torch.empty(n_queries, in_graph, dtype=torch.int64, device=device)
    pending = torch.empty(n_queries, k, dtype=torch.int64, device=device)
    count = torch.empty(n_queries, dtype=torch.int32, device=device)
    wide = triton.next_power_of_2(n_groups)
    _group_top_kernels()[2][(n_queries,)](best, best, best, sub, second, base, whole, pending, count, n_groups, n_rows,
                                          K=k, WP=wide, GROUPS=True, BN=config["BN"], F=in_graph,
                                          FP=triton.next_power_of_2(in_graph), num_warps=4 if wide <= 2048 else 8)
    scores, rows = _rescore(catalog, queries, base, whole, config)
    return (*top_columns(scores, k, carry=rows), count, pending, (pending >= 0).any())


def _merge_pending(catalog: Tensor, queries: Tensor, k: int, config: dict, values: Tensor, rows: Tensor,
                   pending: Tensor) -> tuple[Tensor, Tensor]:
    """Every row of the ``pending`` groups [Q, k] (-1: none) re-scored and merged into each query's top-k. The
    caller has checked that some group is pending (a host sync)."""
    order = torch.sort((pending >= 0).to(torch.uint8), dim=1, descending=True, stable=True).indices
    width = int((pending >= 0).sum(1).max())  # a second sync, only on this path
    groups = pending.gather(1, order[:, :width])
    scores, extra = _rescore(catalog, queries, groups[:, :0], groups, config)
    return top_columns(torch.cat([values, scores], dim=1), k, carry=torch.cat([rows, extra], dim=1))


def group_top_topk(catalog: Tensor, queries: Tensor, k: int, *, config: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Exact top-k from the group-top kernel (one pass over the catalog, no score matrix written).

    Every row scoring at least the k-th best is either in the best subgroup of one of the k groups with the
    largest maxima (those k maxima are k distinct scores, so the k-th of them bounds the k-th best score
    from below) or in a group whose other subgroups reach that bound ("flagged"). The best subgroups' rows
    (k x BN/R per query) and all rows of up to ``FLAGGED_IN_GRAPH`` flagged groups (groups holding two of the
    best rows in different subgroups: rare for small k on spread-out data, common where similar rows sit side
    by side) are re-scored in FP32 and the k best sorted, without a host sync; further flagged groups are
    re-scored and merged after one.
    Returns scores (FP32), rows (int64) and the number of flagged groups per query.
    """
    config = {**DEFAULT_GROUP_TOP, **(config or {})}
    queries = queries.to(catalog.dtype).contiguous()
    if triton_cdiv(catalog.shape[0], config["BN"]) < k:
        return (*chunked_topk(catalog, queries, k), torch.zeros(queries.shape[0], dtype=torch.int64, device=catalog.device))
    values, rows, count, pending, any_pending = _group_top_candidates(catalog, queries, k, config)
    if _may_leave_pending(catalog.shape[0], k, config, catalog.device) and bool(any_pending):
        values, rows = _merge_pending(catalog, queries, k, config, values, rows, pending)
    return values, rows, count


class _GroupTopGraphs:
    """``_group_top_candidates`` as CUDA graphs, one per (query bucket, k): issuing its ~10 kernels one by one
    (five Triton launches, whose Python launch path is the slow part) takes longer on the host than the
    ~0.31 ms of GPU work: 0.418 against 0.356 ms per search (H100). Queries are padded to a power of two
    (>= 64), so few shapes are captured."""

    def __init__(self, catalog: Tensor, config: dict, capacity: int = 16) -> None:
        self.catalog, self.config, self.capacity = catalog, config, capacity
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor, tuple[Tensor, ...], bool]] = {}

    def __call__(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        n_queries = queries.shape[0]
        key = (max(64, 1 << (n_queries - 1).bit_length()), k)
        if key not in self.graphs:
            if len(self.graphs) >= self.capacity:
                self.graphs.pop(next(iter(self.graphs)))
            static = torch.zeros(key[0], self.catalog.shape[1], dtype=self.catalog.dtype, device=self.catalog.device)
            side = torch.cuda.Stream(self.catalog.device)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # compiles and loads the kernels outside the capture
                _group_top_candidates(self.catalog, static, k, self.config)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = _group_top_candidates(self.catalog, static, k, self.config)
            self.graphs[key] = (graph, static, outputs, _may_leave_pending(self.catalog.shape[0], k, self.config,
                                                                           self.catalog.device))
        graph, static, (values, rows, count, pending, any_pending), may_pend = self.graphs[key]
        static[:n_queries].copy_(queries)
        if n_queries < key[0]:  # padding repeats the first query: zero rows would flag every group
            static[n_queries:].copy_(queries[:1].expand(key[0] - n_queries, -1))
        graph.replay()
        values, rows, count = values[:n_queries].clone(), rows[:n_queries].clone(), count[:n_queries].clone()
        if may_pend and bool(any_pending):  # the one host sync, where needed
            values, rows = _merge_pending(self.catalog, queries, k, self.config, values, rows, pending[:n_queries])
        return values, rows, count


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


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


class TorchFlatIndex:
    """Flat inner-product search over vectors held on a torch device, with FAISS's search signature."""

    def __init__(self, vectors: np.ndarray | Tensor, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 *, method: str = "auto", scan: dict | None = None) -> None:
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
        if method not in ("auto", "grouptop", "chunked", "naive"):
            raise ValueError(f"method must be auto, grouptop, chunked or naive, got {method!r}")
        self._config = {**DEFAULT_GROUP_TOP, **(scan or {})}
        if method == "auto":  # TMA needs 16-byte row strides
            aligned = self.d * self.vectors.element_size() % 16 == 0
            method = "grouptop" if triton_available(self.device) and self.ntotal >= 4096 and aligned else "chunked"
        self.method = method
        self.last_candidates: Tensor | None = None
        self._graphs: _GroupTopGraphs | None = None

    def search_tensor(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-k (scores FP32, rows int64) of ``queries`` [n, D] on this index's device; k <= ntotal."""
        queries = queries.to(self.device)
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be in 1..{self.ntotal}, got {k}")
        if self.method == "naive":
            return naive_topk(self.vectors, queries, k)
        if (self.method == "grouptop" and queries.shape[0] <= FEW_QUERIES and self.device.type == "cuda"
                and self.dtype in (torch.float16, torch.bfloat16)):
            self.last_candidates = None
            return mm_topk(self.vectors, queries, k)
        if self.method == "grouptop" and self.device.type == "cuda" and triton_cdiv(self.ntotal, self._config["BN"]) >= k:
            if self._graphs is None:
                self._graphs = _GroupTopGraphs(self.vectors, self._config)
            values, rows, self.last_candidates = self._graphs(queries.to(self.dtype).contiguous(), k)
            return values, rows
        if self.method == "grouptop":
            values, rows, self.last_candidates = group_top_topk(self.vectors, queries, k, config=self._config)
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
    """``serving.catalog_index.load_catalog`` (same verification, same per-track fusion) searching with torch."""
    return load_catalog(directory, expected_dim, expected_embedder_sha256, index=torch_index_loader(device, dtype, **options))
