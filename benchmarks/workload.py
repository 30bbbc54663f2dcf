"""The benchmark workload: the query mix, and perf_analyzer input files for a model derived from it."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.perf_inputs import audio_search_entries, faiss_topk_entries, token_embedder_entries, write_input_data
from benchmarks.query_mix import DEFAULT_CACHE, MixSpec, Query, load_mix
from benchmarks.real_inputs import query_tensors
from serving.catalog_index import sha256_file


def add_mix_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("query mix (must describe the served catalog's generated tracks)")
    defaults = MixSpec()
    group.add_argument("--queries", type=int, default=defaults.queries, help="excerpts in the mix (default: %(default)s)")
    group.add_argument("--mix-seed", type=int, default=defaults.seed)
    group.add_argument("--catalog-tracks", type=int, default=defaults.catalog_tracks, help="default: %(default)s")
    group.add_argument("--catalog-seconds", type=float, default=defaults.catalog_seconds, help="default: %(default)s")
    group.add_argument("--catalog-seed", type=int, default=defaults.catalog_seed)
    group.add_argument("--top-k", type=int, default=10)


def mix_spec(args: argparse.Namespace) -> MixSpec:
    return MixSpec(queries=args.queries, seed=args.mix_seed, catalog_tracks=args.catalog_tracks,
                   catalog_seconds=args.catalog_seconds, catalog_seed=args.catalog_seed)


class Workload:
    """Each model's input file, built once and cached (a mix of 30-s excerpts is tens of MB of JSON)."""

    def __init__(self, spec: MixSpec, embedder_onnx: Path | None, top_k: int = 10, cache_dir: Path = DEFAULT_CACHE) -> None:
        self.spec = spec
        self.embedder_onnx = embedder_onnx
        self.top_k = top_k
        self.cache_dir = cache_dir
        self.queries: list[Query] = load_mix(spec, cache_dir)

    def input_file(self, model: str) -> Path:
        """perf_analyzer --input-data for ``model`` (one of perf_inputs.MODELS)."""
        embedder = sha256_file(self.embedder_onnx)[:16] if self.embedder_onnx and model != "audio_search" else "none"
        path = self.cache_dir / f"perf-input-{model}-{self.spec.key()}-{embedder}-k{self.top_k}.json"
        if not path.is_file():
            if model == "audio_search":
                entries = audio_search_entries(self.queries, self.top_k)
            elif self.embedder_onnx is None:
                raise ValueError(f"input data for {model} needs the published token_embedder ONNX")
            else:
                tensors = query_tensors(self.spec, self.queries, self.embedder_onnx, cache_dir=self.cache_dir)
                entries = token_embedder_entries(tensors) if model == "token_embedder" else faiss_topk_entries(tensors, self.top_k)
            write_input_data(path, entries)
        return path
