"""The catalog as one Triton instance of `faiss_topk` searches it: FAISS on CPU; on a GPU instance FAISS's GPU
index where FAISS has a GPU build, else exact top-K in torch (serving/torch_topk.py, flat catalogs only).

The choice sits above both modules, so they import in one direction only (torch_topk uses catalog_index's loader
and verification); torch is imported only for a GPU instance without FAISS's GPU build.
"""
from __future__ import annotations

from pathlib import Path

from serving.catalog_index import Catalog, faiss, faiss_gpus, load_catalog


def load_catalog_for_instance(
    directory: str | Path, expected_dim: int | None, expected_embedder_sha256: str | None,
    instance_kind: str = "CPU", device_id: int = 0, cpu_threads: int = 0,
) -> tuple[Catalog, str]:
    """The verified catalog and where it is searched (for the model's log line); raises CatalogMismatch.

    ``cpu_threads`` > 0 sets FAISS's OpenMP threads for CPU search (0 keeps its default, one per core).
    """
    gpus = faiss_gpus()
    if instance_kind == "GPU" and gpus == 0:
        import torch

        if torch.cuda.is_available():
            from serving.torch_topk import load_torch_catalog

            device = f"cuda:{device_id}"
            catalog = load_torch_catalog(directory, expected_dim, expected_embedder_sha256, device=device)
            return catalog, f"torch exact top-K on {device} ({catalog.index.method}, {catalog.index.dtype})"
    catalog = load_catalog(directory, expected_dim, expected_embedder_sha256)
    if instance_kind == "GPU" and gpus > 0:
        return catalog.to_gpu(device_id), f"FAISS GPU {device_id}"
    if cpu_threads > 0:  # load_catalog has needed FAISS to get here
        faiss.omp_set_num_threads(cpu_threads)
    return catalog, f"FAISS CPU ({faiss.omp_get_max_threads()} threads)"
