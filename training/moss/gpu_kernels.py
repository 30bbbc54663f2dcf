"""Triton kernels of the fast MOSS encoder (training/moss/gpu.py): the element-wise work between the matmuls.

Imported only where Triton is present (CUDA builds of PyTorch carry it). Each kernel does one pass over
its rows; every reduction and every rotation is computed in float32 whatever the storage dtype:

- ``residual_layernorm``: ``x += o * scale`` (the layer-scaled residual branch, x float32, updated in
  place) fused with the next LayerNorm (eps 1e-5), written in the compute dtype for the next matmul;
  without a norm it writes ``x`` cast to the compute dtype (the input of a stage's output projection).
- ``rope_``: the interleaved rotary embedding of q and k, in place in the fused ``[.., 3, H, D]``
  projection output, with precomputed float32 cos/sin tables.

``TRITON_INTERPRET=1`` runs them on the CPU (slowly), which is how tests check them without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

name = "triton"


@triton.jit
def _residual_layernorm_kernel(X, O, S, W, B, Y, n_cols, eps,
                               HAS_RESIDUAL: tl.constexpr, HAS_NORM: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    offsets = row * n_cols + cols
    x = tl.load(X + offsets, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        o = tl.load(O + offsets, mask=mask, other=0.0).to(tl.float32)
        s = tl.load(S + cols, mask=mask, other=0.0)
        x = x + o * s
        tl.store(X + offsets, x, mask=mask)
    if HAS_NORM:
        mean = tl.sum(x, axis=0) / n_cols
        centred = tl.where(mask, x - mean, 0.0)
        variance = tl.sum(centred * centred, axis=0) / n_cols
        rstd = 1.0 / tl.sqrt(variance + eps)
        w = tl.load(W + cols, mask=mask, other=0.0)
        b = tl.load(B + cols, mask=mask, other=0.0)
        tl.store(Y + offsets, (centred * rstd * w + b).to(Y.dtype.element_ty), mask=mask)
    else:
        tl.store(Y + offsets, x.to(Y.dtype.element_ty), mask=mask)


def residual_layernorm(x: Tensor, out: Tensor, residual: Tensor | None = None, scale: Tensor | None = None,
                       weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``x`` float32 ``[M, C]`` (contiguous; updated in place when ``residual`` is given) -> ``out`` ``[M, C]``."""
    rows, cols = x.shape
    block = triton.next_power_of_2(cols)
    has_norm = weight is not None
    _residual_layernorm_kernel[(rows,)](
        x, residual if residual is not None else x, scale if scale is not None else x,
        weight if has_norm else x, bias if has_norm else x, out, cols, eps,
        HAS_RESIDUAL=residual is not None, HAS_NORM=has_norm, BLOCK=block,
        num_warps=4 if block <= 1024 else 8,
    )
    return out


@triton.jit
def _rope_kernel(QKV, COS, SIN, n_frames, n_pairs, half_dim, BLOCK: tl.constexpr):
    # One program per (clip, frame) row of the fused projection [B*N, 3, H, D]: q and k rotate in place.
    row = tl.program_id(0).to(tl.int64)
    position = row % n_frames
    pairs = tl.arange(0, BLOCK)
    mask = pairs < n_pairs
    frequency = pairs % half_dim
    cos = tl.load(COS + position * half_dim + frequency, mask=mask, other=0.0)
    sin = tl.load(SIN + position * half_dim + frequency, mask=mask, other=0.0)
    width = 2 * n_pairs
    offsets = 2 * pairs[:, None] + tl.arange(0, 2)[None, :]  # [BLOCK, 2]: (real, imag) side by side
    pair_mask = mask[:, None]
    for part in tl.static_range(2):  # q, then k
        ptrs = QKV + row * 3 * width + part * width + offsets
        real, imag = tl.split(tl.load(ptrs, mask=pair_mask, other=0.0).to(tl.float32))
        rotated = tl.join(real * cos - imag * sin, real * sin + imag * cos)
        tl.store(ptrs, rotated.to(QKV.dtype.element_ty), mask=pair_mask)


def rope_(qkv: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate q and k of the contiguous fused projection ``[B, N, 3, H, D]`` in place; cos/sin float32 ``[N, D/2]``."""
    batch, frames, three, heads, head_dim = qkv.shape
    assert three == 3 and qkv.is_contiguous() and cos.shape == (frames, head_dim // 2)
    n_pairs = heads * head_dim // 2
    block = triton.next_power_of_2(n_pairs)
    _rope_kernel[(batch * frames,)](qkv, cos, sin, frames, n_pairs, head_dim // 2, BLOCK=block,
                                    num_warps=2 if block <= 512 else 4)
    return qkv


def available(device: torch.device) -> bool:
    """Whether these kernels can run on ``device`` (CUDA, or the CPU under TRITON_INTERPRET=1)."""
    import os

    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


# -- matmuls with fused epilogues -------------------------------------------------------------------------
EPILOGUE_GELU = 1  # out = GELU(a @ w^T), exact erf form, computed on the FP32 accumulator
EPILOGUE_ROPE = 2  # out = a @ w^T with RoPE applied to its q and k thirds (the fused [q | k | v] projection)


@triton.jit
def _linear_kernel(A, W, OUT, COS, SIN, M, N, K: tl.constexpr, n_frames, d_model, half_dim,
                   EPILOGUE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    # K is a compile-time constant (a handful of model widths): the loop bound is then a plain int, which
    # Triton's CPU interpreter needs under NumPy 2 (it cannot range() over its one-element scalar arrays).
    pid = tl.program_id(0)
    blocks_m = tl.cdiv(M, BM)
    blocks_n = tl.cdiv(N, BN)
    group = pid // (GROUP_M * blocks_n)
    first_m = group * GROUP_M
    size_m = min(blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * blocks_n)) % size_m
    pid_n = (pid % (GROUP_M * blocks_n)) // size_m
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    a_ptrs = A + offs_m.to(tl.int64)[:, None] * K + offs_k[None, :]
    w_ptrs = W + offs_n.to(tl.int64)[None, :] * K + offs_k[:, None]  # [BK, BN]: w transposed
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for _ in range(0, K // BK):
        a = tl.load(a_ptrs, mask=m_ok[:, None], other=0.0)
        w = tl.load(w_ptrs, mask=n_ok[None, :], other=0.0)
        acc = tl.dot(a, w, acc)
        a_ptrs += BK
        w_ptrs += BK
    if EPILOGUE == 1:
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    elif EPILOGUE == 2:
        # Columns (2i, 2i+1) of q and k (the first two thirds) rotate by angle(position, i).
        real, imag = tl.split(tl.reshape(acc, (BM, BN // 2, 2)))
        pair = pid_n * (BN // 2) + tl.arange(0, BN // 2)
        rotate = (2 * pair) < 2 * d_model
        frequency = pair % half_dim
        position = offs_m % n_frames
        table = position[:, None] * half_dim + frequency[None, :]
        cos = tl.load(COS + table, mask=m_ok[:, None], other=1.0)
        sin = tl.load(SIN + table, mask=m_ok[:, None], other=0.0)
        rotated_real = tl.where(rotate[None, :], real * cos - imag * sin, real)
        rotated_imag = tl.where(rotate[None, :], real * sin + imag * cos, imag)
        acc = tl.reshape(tl.join(rotated_real, rotated_imag), (BM, BN))
    out_ptrs = OUT + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(out_ptrs, acc.to(OUT.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


# (BM, BN, BK, num_warps, num_stages): tried per (M, N, K, dtype, epilogue) on first use, the fastest kept.
LINEAR_CONFIGS = ((128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (256, 128, 64, 8, 3), (128, 128, 64, 4, 4),
                  (64, 256, 64, 4, 4), (128, 128, 128, 8, 3))
_linear_choice: dict[tuple, tuple] = {}


def _launch(a: Tensor, w: Tensor, out: Tensor, epilogue: int, config: tuple, cos: Tensor | None, sin: Tensor | None,
            n_frames: int, d_model: int) -> None:
    bm, bn, bk, warps, stages = config
    m, k = a.shape
    n = w.shape[0]
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    table = cos if cos is not None else out
    _linear_kernel[grid](a, w, out, table, sin if sin is not None else out, m, n, k, max(1, n_frames), d_model,
                         cos.shape[1] if cos is not None else 1, EPILOGUE=epilogue, BM=bm, BN=bn, BK=bk, GROUP_M=8,
                         num_warps=warps, num_stages=stages)


def linear(a: Tensor, w: Tensor, epilogue: int, *, cos: Tensor | None = None, sin: Tensor | None = None,
           n_frames: int = 1, config: tuple | None = None) -> Tensor:
    """``a @ w.T`` (a ``[M, K]``, w ``[N, K]``, both contiguous, K a multiple of 64) with a fused epilogue.

    ``EPILOGUE_ROPE`` needs the float32 cos/sin tables ``[n_frames, head_dim / 2]`` and rows ordered
    (clip, frame); N is 3 * d_model. Tries ``LINEAR_CONFIGS`` once per shape on CUDA (never while a CUDA
    graph is being captured: warm-ups come first).
    """
    m, k = a.shape
    n = w.shape[0]
    out = torch.empty(m, n, device=a.device, dtype=a.dtype)
    d_model = n // 3
    if config is None:
        key = (m, n, k, a.dtype, epilogue)
        config = _linear_choice.get(key)
        if config is None:
            config = _choose(a, w, out, epilogue, cos, sin, n_frames, d_model) if a.is_cuda else LINEAR_CONFIGS[1]
            _linear_choice[key] = config
    _launch(a, w, out, epilogue, config, cos, sin, n_frames, d_model)
    return out


def _choose(a, w, out, epilogue, cos, sin, n_frames, d_model) -> tuple:
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError("fused linear not tuned for this shape before CUDA graph capture")
    timings = {}
    for config in LINEAR_CONFIGS:
        if a.shape[1] % config[2]:
            continue
        try:
            _launch(a, w, out, epilogue, config, cos, sin, n_frames, d_model)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(3):
                _launch(a, w, out, epilogue, config, cos, sin, n_frames, d_model)
            end.record()
            end.synchronize()
            timings[config] = start.elapsed_time(end)
        except Exception:  # noqa: BLE001 - e.g. a config needing more shared memory than the chip has
            continue
    if not timings:
        raise RuntimeError(f"no fused-linear configuration ran for {tuple(a.shape)} x {tuple(w.shape)}")
    return min(timings, key=timings.get)


# -- the quantizer's nearest code ---------------------------------------------------------------------------
@triton.jit
def _nearest_code_kernel(DOT, U2, C2, OUT, n_codes, BLOCK: tl.constexpr):
    # The reference's argmax(-(|u|^2 - 2 u.c + |c|^2)) for one row, from the matmul's u.c: the same float32
    # operations in the same order, so the same codes; first index on ties, as torch.argmax.
    row = tl.program_id(0).to(tl.int64)
    codes = tl.arange(0, BLOCK)
    mask = codes < n_codes
    dot = tl.load(DOT + row * n_codes + codes, mask=mask, other=0.0)
    c2 = tl.load(C2 + codes, mask=mask, other=0.0)
    u2 = tl.load(U2 + row)
    distance = (u2 - 2.0 * dot) + c2
    score = tl.where(mask, -distance, float("-inf"))
    tl.store(OUT + row, tl.argmax(score, axis=0, tie_break_left=True).to(tl.int64))


def nearest_code(dot: Tensor, u2: Tensor, c2: Tensor) -> Tensor:
    """Codes int64 ``[R]`` from ``dot = u @ c.T`` ``[R, C]``, ``u2 = |u|^2`` ``[R]`` and ``c2 = |c|^2`` ``[C]`` (float32)."""
    rows, n_codes = dot.shape
    out = torch.empty(rows, device=dot.device, dtype=torch.int64)
    block = triton.next_power_of_2(n_codes)
    _nearest_code_kernel[(rows,)](dot, u2, c2, out, n_codes, BLOCK=block, num_warps=4 if block <= 1024 else 8)
    return out
