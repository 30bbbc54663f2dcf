"""NT-Xent (InfoNCE) over (catalog window, query view) pairs with in-batch negatives.

No memory of earlier batches' windows: without a momentum encoder those negatives go stale as the
embedder moves, and on the real-music corpus such a memory collapsed training (docs/retrieval-quality.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: torch.Tensor | float,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """z1[i] and z2[i] are two sides of one pair; every other row of both sides is a negative.

    Inputs are L2-normalised [B, D]; symmetric 2B-way cross entropy as in SimCLR. ``groups`` [B] (the
    track of each pair) masks rows of the same track, which are not negatives: retrieval ranks tracks,
    and another window of the right track is a right answer.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two [B, D] tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    logits = (z @ z.T) / temperature
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    rows = torch.arange(2 * b, device=z.device)
    excluded = torch.zeros(logits.shape, dtype=torch.bool, device=z.device)
    excluded[rows, rows] = True
    if groups is not None:
        row_groups = torch.cat([groups, groups])
        excluded |= row_groups[:, None] == row_groups[None, :]
        excluded[rows, targets] = False
    return F.cross_entropy(logits.masked_fill(excluded, float("-inf")), targets)

