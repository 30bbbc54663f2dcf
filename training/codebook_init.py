"""Starting the TokenEmbedder's code vectors from the tokenizer's own, so codes close in the codec start close.

A trained tokenizer's codes are only partly stable (an excerpt at another offset, or under noise, often
gets a neighbouring code rather than the same one), so the embedder has to read which codes are near
each other. The codec knows: level l adds ``out_proj_l(codebook_l[c])`` to the quantised latent. Each
level's rows (centred per level) go through ONE shared linear map to the embedder width: PCA when the
codec's space is wider, a fixed random isometry when it is narrower. Because the map is linear and
shared, the sum over levels that the embedder forms at each frame starts as a projection of the
codec's quantised latent itself.
"""
from __future__ import annotations

import numpy as np
import torch

from training.embedder import TokenEmbedder
from training.moss.quantizer import ResidualLFQ
from training.moss.weights import build_encoder


def codec_code_vectors(quantizer: ResidualLFQ, n_levels: int) -> np.ndarray:
    """What each code of levels ``0..n_levels-1`` adds to the residual: ``[n_levels, codebook_size, rvq_dim]``."""
    if n_levels > len(quantizer.quantizers):
        raise ValueError(f"the embedder reads {n_levels} RVQ levels, the tokenizer has {len(quantizer.quantizers)}")
    with torch.no_grad():
        return np.stack([level.out_proj(level.codebook.weight.float()).cpu().numpy() for level in quantizer.quantizers[:n_levels]]).astype(np.float64)


def project_code_vectors(vectors: np.ndarray, width: int, seed: int) -> np.ndarray:
    """``[L, K, D]`` -> ``[L, K, width]``: centred per level, one shared PCA (D > width) or random isometry (D <= width)."""
    levels, codes, dim = vectors.shape
    centred = vectors - vectors.mean(axis=1, keepdims=True)
    flat = centred.reshape(levels * codes, dim)
    if dim > width:
        _, _, components = np.linalg.svd(flat, full_matrices=False)
        projection = components[:width].T  # [D, width]
    else:
        basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((width, dim)))
        projection = basis.T  # [D, width], orthonormal rows: distances are kept exactly
    return (flat @ projection).reshape(levels, codes, width)


def init_from_codebook(model: TokenEmbedder, quantizer: ResidualLFQ, seed: int = 0) -> None:
    """Overwrite ``model``'s code table rows of every code the tokenizer has with its projected code vectors.

    One global scale brings the rows to the random init's mean squared norm (d_model / n_levels), so the
    training dynamics stay those the rest of the model was tuned for while the relative sizes of the
    levels (coarse levels move the latent most) are kept. Rows past the tokenizer's codebook stay random.
    """
    cfg = model.cfg
    codebook_size = quantizer.quantizers[0].codebook.num_embeddings
    if codebook_size > cfg.codebook_size:
        raise ValueError(f"the tokenizer has {codebook_size} codes per level, the embedder's table only {cfg.codebook_size}")
    rows = project_code_vectors(codec_code_vectors(quantizer, cfg.n_levels), cfg.d_model, seed)
    rows *= np.sqrt((cfg.d_model / cfg.n_levels) / np.mean(np.sum(np.square(rows), axis=-1)))
    table = model.code_embedding.weight
    with torch.no_grad():
        for level in range(cfg.n_levels):
            first = level * cfg.codebook_size
            table[first : first + codebook_size] = torch.from_numpy(rows[level]).to(table)


def tokenizer_quantizer(spec: str) -> ResidualLFQ:
    """The quantizer of MOSS preset or weights folder ``spec`` (built with its encoder, on the CPU)."""
    return build_encoder(spec).quantizer
