"""NT-Xent (InfoNCE) over two views with in-batch negatives."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """z1[i] and z2[i] are views of one track; every other row of both views is a negative.

    Inputs are L2-normalised [B, D]. Symmetric 2B-way cross entropy as in SimCLR.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two [B, D] tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, targets)
