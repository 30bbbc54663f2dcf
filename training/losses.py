"""NT-Xent (InfoNCE) over (catalog window, query view) pairs with in-batch negatives, and a memory of more windows."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: torch.Tensor | float,
    groups: torch.Tensor | None = None,
    memory: torch.Tensor | None = None,
    memory_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """z1[i] and z2[i] are two sides of one pair; every other row of both sides is a negative.

    Inputs are L2-normalised [B, D]; symmetric 2B-way cross entropy as in SimCLR. ``groups`` [B] (the
    track of each pair) masks rows of the same track, which are not negatives: retrieval ranks tracks,
    and another window of the right track is a right answer. ``memory`` [M, D] adds negatives (catalog
    windows of earlier batches), masked where ``memory_groups`` equals the row's group.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two [B, D] tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if memory is not None and (groups is None or memory_groups is None):
        raise ValueError("a memory of negatives needs groups and memory_groups: windows of the pair's own track are not negatives")
    b = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    keys = z if memory is None else torch.cat([z, memory], dim=0)
    logits = (z @ keys.T) / temperature
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    rows = torch.arange(2 * b, device=z.device)
    excluded = torch.zeros(logits.shape, dtype=torch.bool, device=z.device)
    excluded[rows, rows] = True
    if groups is not None:
        row_groups = torch.cat([groups, groups])
        key_groups = row_groups if memory is None else torch.cat([row_groups, memory_groups])
        excluded |= row_groups[:, None] == key_groups[None, :]
        excluded[rows, targets] = False
    return F.cross_entropy(logits.masked_fill(excluded, float("-inf")), targets)


class WindowMemory:
    """A first-in first-out store of recent catalog-window embeddings (detached) and their tracks."""

    def __init__(self, size: int, dim: int, device: torch.device) -> None:
        self.embeddings = torch.zeros(0, dim, device=device)
        self.groups = torch.zeros(0, dtype=torch.long, device=device)
        self.size = size

    def push(self, embeddings: torch.Tensor, groups: torch.Tensor) -> None:
        self.embeddings = torch.cat([embeddings.detach().float(), self.embeddings])[: self.size]
        self.groups = torch.cat([groups, self.groups])[: self.size]
