"""Merging the requests of one dynamic batch whose non-batch axes differ (ragged batching)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate along axis 0, zero-padding every other axis to the largest request (contracts carry lengths)."""
    if len(arrays) == 1:
        return arrays[0]
    shape = np.max([array.shape for array in arrays], axis=0)
    shape[0] = sum(array.shape[0] for array in arrays)
    out = np.zeros(shape, dtype=arrays[0].dtype)
    row = 0
    for array in arrays:
        out[(slice(row, row + array.shape[0]), *(slice(0, n) for n in array.shape[1:]))] = array
        row += array.shape[0]
    return out
