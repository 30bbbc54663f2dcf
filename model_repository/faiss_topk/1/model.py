"""Triton Python model `faiss_topk`: EMBEDDING [W, D] (+ TOP_K) -> TRACK_IDS [K], SCORES [K].

Parameter CATALOG_BACKEND (configs/serving.yaml `catalog`): `faiss` loads the catalog folder once; `milvus` searches
the collection MILVUS_COLLECTION at MILVUS_URI (serving/milvus_catalog.py). Either refuses to start when the catalog
does not belong to the deployed embedder. All requests of one execute() share one search: FAISS on CPU instances; on
GPU instances FAISS's GPU index, or without a FAISS GPU build exact top-K in torch (serving/catalog_instance.py);
with Milvus one grouped search. A Milvus that stops answering fails those requests; the model stays ready.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.catalog_index import CatalogMismatch
from serving.catalog_instance import load_catalog_for_instance
from serving.milvus_catalog import MilvusUnavailable, load_milvus_catalog
from serving.triton_model_utils import error_response, parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = parameters(config)
        model_dir = Path(args["model_repository"])
        self.dim = int(pb_utils.get_input_config_by_name(config, "EMBEDDING")["dims"][-1])
        self.default_k = int(params["DEFAULT_TOP_K"])
        self.max_k = int(params["MAX_TOP_K"])
        embedder = self._deployed_embedder(model_dir.parent / params["EMBEDDER_MANIFEST"])
        if params.get("CATALOG_BACKEND", "faiss") == "milvus":
            self.catalog = load_milvus_catalog(params["MILVUS_URI"], params["MILVUS_COLLECTION"], self.dim,
                                               embedder["onnx_sha256"], float(params["MILVUS_TIMEOUT_S"]))
            pb_utils.Logger.log_info(f"faiss_topk: {self.catalog.info.n_vectors} vectors, searched by Milvus at "
                                     f"{params['MILVUS_URI']} ({self.catalog.info.collection}, {self.catalog.info.index_type})")
            return
        index_dir = model_dir / args["model_version"] / params.get("INDEX_DIR", "index")
        self.catalog, where = load_catalog_for_instance(index_dir, self.dim, embedder["onnx_sha256"], args["model_instance_kind"],
                                                        int(args["model_instance_device_id"]), int(params.get("SEARCH_THREADS", "0")))
        pb_utils.Logger.log_info(f"faiss_topk: {self.catalog.index.ntotal} vectors, searched by {where}")

    def _deployed_embedder(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise CatalogMismatch(f"embedder manifest {path} is missing: publish token_embedder before faiss_topk")
        embedder = json.loads(path.read_text(encoding="utf-8"))
        if embedder["dim"] != self.dim:
            raise CatalogMismatch(f"the deployed embedder ({path}) has dim {embedder['dim']}, faiss_topk's EMBEDDING has dim {self.dim}")
        return embedder

    def _parse(self, request: Any) -> tuple[np.ndarray, int] | str:
        embedding = pb_utils.get_input_tensor_by_name(request, "EMBEDDING").as_numpy()
        if embedding.ndim != 2 or embedding.shape[0] == 0 or embedding.shape[1] != self.dim:
            return f"EMBEDDING must be [W >= 1, {self.dim}], got {list(embedding.shape)}"
        if not np.isfinite(embedding).all():
            return "EMBEDDING contains NaN or infinite values"
        top_k = pb_utils.get_input_tensor_by_name(request, "TOP_K")
        if top_k is None:
            return embedding, self.default_k
        values = top_k.as_numpy().reshape(-1)
        if values.size != 1 or not 1 <= int(values[0]) <= self.max_k:
            return f"TOP_K must be one integer in 1..{self.max_k}, got {values.tolist()}"
        return embedding, int(values[0])

    def execute(self, requests: list[Any]) -> list[Any]:
        parsed = [self._parse(request) for request in requests]
        queries = [item for item in parsed if not isinstance(item, str)]
        try:
            results = iter(self.catalog.search([q for q, _ in queries], [k for _, k in queries]) if queries else [])
        except MilvusUnavailable as error:
            return [error_response(item if isinstance(item, str) else f"catalog search failed: {error}") for item in parsed]
        responses = []
        for item in parsed:
            if isinstance(item, str):
                responses.append(error_response(item))
                continue
            result = next(results)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("TRACK_IDS", np.array([t.encode("utf-8") for t in result.track_ids], dtype=np.object_)),
                pb_utils.Tensor("SCORES", result.scores),
            ]))
        return responses
