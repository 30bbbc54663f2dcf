"""Triton's per-model counters: how many requests a model served and in how many executions (batches)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Counts:
    inferences: int
    executions: int

    def average_batch_since(self, before: Counts) -> float | None:
        executions = self.executions - before.executions
        return (self.inferences - before.inferences) / executions if executions else None


def model_counts(protocol: str, url: str, model: str) -> Counts:
    module = importlib.import_module(f"tritonclient.{protocol}")
    client = module.InferenceServerClient(url)
    try:
        kwargs = {"as_json": True} if protocol == "grpc" else {}
        stats = client.get_inference_statistics(model, **kwargs)["model_stats"][0]
    finally:
        client.close()
    return Counts(int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0)))
