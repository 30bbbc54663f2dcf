"""Codebook health while the codec trains: codes in use and entropy per level, and dead-code re-seeding.

A level whose encoder outputs all fall near a few codebook rows wastes the rest (the collapse seen in
short probes: level 0 down to 3 codes). Every usage window, rows never picked are moved next to rows
picked often, with a small perturbation, so they split the crowded regions of the code space; the
lookup is by direction (normalised vectors), so the perturbation is relative to the row's norm.
"""
from __future__ import annotations

import torch
from torch import Tensor

from training.moss.quantizer import ResidualLFQ

RESEED_NOISE = 0.1


def entropy_bits(counts: Tensor) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0].double() / total
    return float(-(p * p.log2()).sum())


class CodeUsage:
    def __init__(self, levels: int, codebook_size: int) -> None:
        self.counts = torch.zeros(levels, codebook_size, dtype=torch.int64)

    def add(self, codes: Tensor, levels: Tensor) -> None:
        """Count the codes of every level an item actually used (``levels[b]`` levels for item ``b``)."""
        codes, levels = codes.detach().cpu(), levels.detach().cpu()
        for level in range(codes.shape[1]):
            used = codes[levels > level, level].flatten()
            self.counts[level] += torch.bincount(used, minlength=self.counts.shape[1])

    def summary(self) -> dict[str, float]:
        entropies = [entropy_bits(level) for level in self.counts]
        in_use = [int((level > 0).sum()) for level in self.counts]
        return {"codes_level0": in_use[0], "entropy_level0": entropies[0],
                "codes_mean": sum(in_use) / len(in_use), "entropy_mean": sum(entropies) / len(entropies)}

    def reseed_dead(self, quantizer: ResidualLFQ, dead_below: int, generator: torch.Generator) -> dict[str, float]:
        """Summarise the window, re-seed its dead rows, start a new window; returns the summary."""
        health = self.summary()
        reseeded = 0
        with torch.no_grad():
            for level, counts in zip(quantizer.quantizers, self.counts):
                dead = torch.nonzero(counts < dead_below).flatten()
                if dead.numel() == 0 or counts.sum() == 0:
                    continue
                book = level.codebook.weight
                source = torch.multinomial(counts.double(), dead.numel(), replacement=True, generator=generator)
                rows = book[source.to(book.device)].float()
                noise = torch.randn(rows.shape, generator=generator).to(book.device)
                noise *= RESEED_NOISE * rows.norm(dim=-1, keepdim=True) / rows.shape[-1] ** 0.5
                book[dead.to(book.device)] = (rows + noise).to(book.dtype)
                reseeded += dead.numel()
        health["reseeded"] = reseeded
        self.counts.zero_()
        return health

    def state(self) -> Tensor:
        return self.counts.clone()

    def load(self, counts: Tensor) -> None:
        self.counts.copy_(counts.cpu())
