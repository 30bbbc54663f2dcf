"""Exact top-K over torch tensors (serving/torch_topk.py): against NumPy and FAISS on the CPU, the group-top
Triton kernels under Triton's CPU interpreter where Triton is installed, and on CUDA where a GPU is present."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.catalog_index import build_index, load_catalog, write_catalog
from serving.torch_topk import (
    FlatVectors,
    TorchFlatIndex,
    chunked_topk,
    flat_index_bytes,
    load_torch_catalog,
    naive_topk,
    read_flat_index,
)

REPO = Path(__file__).resolve().parents[1]


def unit(rows: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_chunked_topk_is_exact() -> None:
    catalog, queries = unit(3000, 32, 0), unit(7, 32, 1)
    scores, rows = chunked_topk(torch.from_numpy(catalog), torch.from_numpy(queries), 12, chunk_rows=500)
    expected = np.argsort(-(queries @ catalog.T), axis=1, kind="stable")[:, :12]
    assert np.array_equal(rows.numpy(), expected)
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(queries @ catalog.T, expected, 1), rtol=1e-5, atol=1e-6)
    naive_scores, naive_rows = naive_topk(torch.from_numpy(catalog), torch.from_numpy(queries), 12)
    assert np.array_equal(naive_rows.numpy(), expected)


def test_flat_index_search_matches_faiss() -> None:
    faiss = pytest.importorskip("faiss")
    catalog, queries = unit(2000, 16, 2), unit(5, 16, 3)
    reference = faiss.IndexFlatIP(16)
    reference.add(catalog)
    expected_scores, expected_rows = reference.search(queries, 9)
    scores, rows = TorchFlatIndex(catalog).search(queries, 9)
    assert np.array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    small = TorchFlatIndex(catalog[:4])  # k beyond ntotal: FAISS pads with -1
    _, padded = small.search(queries, 6)
    assert (padded[:, 4:] == -1).all() and (padded[:, :4] >= 0).all()


def test_flat_index_file_format_both_ways(tmp_path: Path) -> None:
    faiss = pytest.importorskip("faiss")
    vectors = unit(50, 8, 4)
    ours = faiss.deserialize_index(np.frombuffer(flat_index_bytes(vectors), dtype=np.uint8))
    assert isinstance(ours, faiss.IndexFlatIP) and ours.ntotal == 50 and ours.d == 8
    assert np.array_equal(ours.reconstruct_n(0, 50), vectors)
    index = faiss.IndexFlatIP(8)
    index.add(vectors)
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    read, metric = read_flat_index(tmp_path / "index.faiss")
    assert metric == "ip" and np.array_equal(read, vectors)
    (tmp_path / "bad").write_bytes(b"IwPQ" + bytes(60))
    with pytest.raises(ValueError, match="not a FAISS flat index"):
        read_flat_index(tmp_path / "bad")


def test_torch_catalog_gives_the_faiss_catalogs_results(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    vectors = unit(600, 16, 5)
    segments = np.arange(600) // 6
    tracks = [{"track_id": f"t{i:03d}"} for i in range(100)]
    write_catalog(tmp_path / "faiss", build_index(vectors, "flat"), segments, tracks, "sha", "flat")
    write_catalog(tmp_path / "numpy", FlatVectors(vectors), segments, tracks, "sha", "flat")  # written without FAISS
    queries = [unit(3, 16, 6), unit(1, 16, 7)]
    expected = load_catalog(tmp_path / "faiss").search(queries, [5, 2])
    for folder in ("faiss", "numpy"):
        assert load_catalog(tmp_path / folder).manifest["n_vectors"] == 600
        got = load_torch_catalog(tmp_path / folder, expected_dim=16, expected_embedder_sha256="sha").search(queries, [5, 2])
        for a, b in zip(got, expected):
            assert a.track_ids == b.track_ids
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)


def test_torch_catalog_refuses_other_index_types(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from serving.catalog_index import CatalogMismatch

    vectors = unit(400, 16, 8)
    write_catalog(tmp_path, build_index(vectors, "hnsw"), np.arange(400), [{"track_id": f"t{i}"} for i in range(400)], "sha", "hnsw")
    with pytest.raises(CatalogMismatch, match="flat"):
        load_torch_catalog(tmp_path)


_INTERPRETED = textwrap.dedent("""
    import numpy as np, torch
    from serving.torch_topk import TorchFlatIndex, top_columns
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    # near-copies of one vector in two groups (of 64 rows)
    x[64:70] = x[64] + 1e-3 * rng.standard_normal((6, 32)).astype(np.float32)
    x[130:134] = x[64] + 1e-3 * rng.standard_normal((4, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((20, 32)).astype(np.float32); q /= np.linalg.norm(q, axis=1, keepdims=True)
    index = TorchFlatIndex(x, "cpu", torch.float32, method="grouptop", scan={"BN": 64, "BQ": 64, "BK": 32, "R": 8, "num_warps": 4})
    scores, rows = index.search(q, 8)
    assert np.array_equal(rows, np.argsort(-(q @ x.T), axis=1)[:, :8]), rows
    np.testing.assert_allclose(scores, np.sort(q @ x.T, axis=1)[:, ::-1][:, :8], rtol=1e-5, atol=1e-6)
    # both groups are flagged and all their rows re-scored: in the sync-free part, or one of them after it
    import serving.torch_topk as torch_topk
    for in_graph in (8, 1):
        torch_topk.FLAGGED_IN_GRAPH = in_graph
        _, rows = index.search(x[64:65], 10)
        assert set(rows[0].tolist()) == set(range(64, 70)) | set(range(130, 134)) and int(index.last_candidates[0]) >= 2
    values = torch.from_numpy(rng.standard_normal((4, 300)).astype(np.float32))
    values[0, 10:20] = 0.5  # ties: the earlier columns first, as torch.topk
    for k in (1, 12):
        top, columns = top_columns(values, k)
        expected = torch.topk(values, k, dim=1)
        assert torch.equal(top, expected.values) and torch.equal(values.gather(1, columns), top)
        top, columns = top_columns(values, k, sort=False)
        assert torch.equal(torch.sort(top, 1, descending=True).values, expected.values)
    print("ok")
""")


def test_fused_topk_kernels_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def _same_rows(rows: torch.Tensor, expected: torch.Tensor) -> float:
    return float((torch.sort(rows, 1).values == torch.sort(expected, 1).values).float().mean())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_group_top_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.torch_topk as torch_topk
    from serving.torch_topk import group_top_topk, top_columns

    generator = torch.Generator(device="cuda").manual_seed(0)
    catalog = torch.nn.functional.normalize(torch.randn(200_003, 256, device="cuda", generator=generator), dim=1)
    # 40 near-copies in one group of 256 rows: their queries' top-k come from a flagged group
    catalog[5000:5040] = torch.nn.functional.normalize(catalog[5000] + 0.02 * torch.randn(40, 256, device="cuda", generator=generator), dim=1)
    catalog = catalog.half()
    queries = torch.nn.functional.normalize(torch.randn(200, 256, device="cuda", generator=generator), dim=1)
    queries[:3] = catalog[5000:5003].float()
    index = TorchFlatIndex(catalog, "cuda", torch.float16)
    assert index.method == "grouptop"
    for k in (1, 10, 100, 300):
        scores, rows = index.search_tensor(queries, k)
        exact_scores, exact_rows = chunked_topk(catalog, queries.half(), k)
        assert _same_rows(rows, exact_rows) > 0.999, k
        torch.testing.assert_close(scores, exact_scores, atol=2e-3, rtol=0)
        assert (scores[:, :-1] >= scores[:, 1:]).all()  # sorted, as FAISS returns them
        if k > 1:
            assert int(index.last_candidates[:3].min()) >= 1  # the near-copies' group was flagged
        few_scores, few_rows = index.search_tensor(queries[:3], k)  # a request's few windows: one cuBLAS pass
        assert _same_rows(few_rows, exact_rows[:3]) > 0.999
        torch.testing.assert_close(few_scores, exact_scores[:3], atol=2e-3, rtol=0)
    # the CUDA graph replayed for other queries of another count (same bucket of 256)
    other = queries.flip(0)[:150]
    scores, rows = index.search_tensor(other, 10)
    exact_scores, exact_rows = chunked_topk(catalog, other.half(), 10)
    assert _same_rows(rows, exact_rows) > 0.999
    torch.testing.assert_close(scores, exact_scores, atol=2e-3, rtol=0)
    # BF16 and a tile shape other than the default, without a graph
    values, rows, _ = group_top_topk(catalog.bfloat16(), queries, 10, config={"BN": 128, "R": 16})
    exact_rows = chunked_topk(catalog.bfloat16(), queries.bfloat16(), 10)[1]
    assert _same_rows(rows, exact_rows) > 0.999
    # flagged groups beyond the in-graph capacity: merged after a host sync
    monkeypatch.setattr(torch_topk, "FLAGGED_IN_GRAPH", 1)
    values, rows, flagged = group_top_topk(catalog, queries, 100)
    exact_scores, exact_rows = chunked_topk(catalog, queries.half(), 100)
    assert int(flagged.max()) >= 2 and _same_rows(rows, exact_rows) > 0.999
    torch.testing.assert_close(values, exact_scores, atol=2e-3, rtol=0)
    wide = torch.randn(64, 5000, device="cuda", generator=generator)
    wide[:, 100:200] = 3.0  # ties
    for k in (1, 50):
        expected = torch.topk(wide, k, dim=1)
        top, columns = top_columns(wide, k)
        assert torch.equal(top, expected.values) and torch.equal(wide.gather(1, columns), top)
        top, columns = top_columns(wide, k, sort=False)
        assert torch.equal(torch.sort(top, 1, descending=True).values, expected.values)
        assert torch.equal(wide.gather(1, columns), top)
