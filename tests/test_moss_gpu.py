"""The fast MOSS path (training/moss/gpu.py): its math on the CPU against the reference, its Triton kernels
under Triton's CPU interpreter where Triton is installed, and on CUDA where a GPU is present."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from training.moss import OFFICIAL_CONFIG, MossEncoder, apply_rope, build_encoder, windowed_causal_attention
from training.moss.gpu import (
    FastMossEncoder,
    TorchOps,
    banded_attention,
    flops_per_clip,
    rope_tables,
    windowed_attention,
)

SR = 24000
REPO = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def encoder() -> MossEncoder:
    return build_encoder("tiny")


def batch(seconds: float, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    waveform = 0.3 * torch.randn(size, 1, int(seconds * SR), generator=generator)
    lengths = torch.full((size,), waveform.shape[-1], dtype=torch.int64)
    lengths[1:] = waveform.shape[-1] // 2 + 777  # unequal lengths: padding must not matter
    return waveform, lengths


def valid_mask(codes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return (torch.arange(codes.shape[-1])[None, None, :] < counts[:, None, None]).expand_as(codes)


@pytest.mark.parametrize("seconds", [10.0, 23.0, 2.7])  # N == window at stage 1, N > window (banded), short
def test_fast_fp32_codes_equal_the_reference(encoder: MossEncoder, seconds: float) -> None:
    waveform, lengths = batch(seconds, 3)
    expected, expected_counts = encoder(waveform, lengths)
    codes, counts = FastMossEncoder(encoder, "fp32", kernels="torch")(waveform, lengths)
    assert torch.equal(counts, expected_counts)
    valid = valid_mask(codes, counts)
    assert torch.equal(codes[valid], expected[valid])


def test_fast_half_precision_runs_and_mostly_agrees(encoder: MossEncoder) -> None:
    waveform, lengths = batch(4.0, 2, seed=1)
    expected, counts = encoder(waveform, lengths)
    for precision in ("fp16", "bf16"):
        codes, _ = FastMossEncoder(encoder, precision, kernels="torch")(waveform, lengths)
        assert codes.shape == expected.shape and codes.dtype == torch.int64
        level0 = (codes[:, 0] == expected[:, 0])[valid_mask(codes, counts)[:, 0]].float().mean()
        assert level0 > 0.9, (precision, float(level0))


def test_n_quantizers_prefix(encoder: MossEncoder) -> None:
    waveform, lengths = batch(3.0, 2)
    fast = FastMossEncoder(encoder, "fp32", kernels="torch")
    full, _ = fast(waveform, lengths)
    prefix, _ = fast(waveform, lengths, n_quantizers=5)
    assert torch.equal(prefix, full[:, :5])
    with pytest.raises(ValueError, match="n_quantizers"):
        fast(waveform, lengths, n_quantizers=0)


def test_epilogues_fall_back_where_they_cannot_run(encoder: MossEncoder) -> None:
    # FP32 keeps the reference's op sequence; the cuBLAS epilogues need CUDA, the Triton ones Triton.
    assert FastMossEncoder(encoder, "fp32").epilogues == "none"
    assert FastMossEncoder(encoder, "fp16", kernels="torch", epilogues="triton").epilogues == "none"
    if torch.cuda.is_available():
        assert FastMossEncoder(build_encoder("tiny", "cuda"), "fp16").epilogues == "cublas"
    else:
        assert FastMossEncoder(encoder, "fp16").epilogues == "none"
    with pytest.raises(ValueError, match="epilogues"):
        FastMossEncoder(encoder, "fp16", epilogues="fused")


@pytest.mark.parametrize(("frames", "context"), [(10, 4), (12, 4), (9, 9), (7, 3), (5, 8)])
def test_banded_and_windowed_attention_equal_the_dense_mask(frames: int, context: int) -> None:
    generator = torch.Generator().manual_seed(frames * 31 + context)
    q, k, v = (torch.randn(2, 3, frames, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    expected = windowed_causal_attention(q, k, v, context)
    torch.testing.assert_close(windowed_attention(q, k, v, context), expected)
    torch.testing.assert_close(banded_attention(q, k, v, context), expected)


def test_rope_tables_and_in_place_rope_match_apply_rope() -> None:
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 11, 3, 4, 16, generator=generator)
    cos, sin = rope_tables(11, 16, 10000.0, torch.device("cpu"))
    expected = [apply_rope(qkv[:, :, part].transpose(1, 2), 10000.0).transpose(1, 2) for part in (0, 1)]
    rotated = TorchOps.rope_(qkv.clone(), cos, sin)
    assert torch.equal(rotated[:, :, 0], expected[0]) and torch.equal(rotated[:, :, 1], expected[1])
    assert torch.equal(rotated[:, :, 2], qkv[:, :, 2])


def test_flops_from_the_official_config() -> None:
    flops = flops_per_clip(OFFICIAL_CONFIG, 10.0)
    # The spec's "about 4.5e11" is the weight matmuls; causal attention adds about 2.6e10.
    assert 4.5e11 < flops["projections"] < 4.6e11
    assert 2.0e10 < flops["attention"] < 3.0e10
    assert flops["total"] == pytest.approx(sum(v for k, v in flops.items() if k != "total"))


_INTERPRETED = textwrap.dedent("""
    import os, torch
    from training.moss import gpu_kernels as K
    from training.moss.gpu import TorchOps as T, rope_tables, FastMossEncoder
    from training.moss import build_encoder
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        x = torch.randn(3, 48); o = torch.randn(3, 48).to(dtype); s, w, b = torch.rand(48), torch.randn(48), torch.randn(48)
        for kw in ({}, dict(residual=o, scale=s), dict(residual=o, scale=s, weight=w, bias=b)):
            x1, x2 = x.clone(), x.clone(); y1 = torch.empty(3, 48, dtype=dtype); y2 = y1.clone()
            K.residual_layernorm(x1, y1, **kw); T.residual_layernorm(x2, y2, **kw)
            torch.testing.assert_close(x1, x2); torch.testing.assert_close(y1, y2, atol=1e-4, rtol=1e-3)
        qkv = torch.randn(2, 5, 3, 2, 16).to(dtype); cos, sin = rope_tables(5, 16, 1e4, torch.device("cpu"))
        torch.testing.assert_close(K.rope_(qkv.clone(), cos, sin), T.rope_(qkv.clone(), cos, sin), atol=1e-5, rtol=1e-3)
    import torch.nn.functional as F
    a = torch.randn(70, 64); w = torch.randn(256, 64) / 8
    torch.testing.assert_close(K.linear(a, w, K.EPILOGUE_GELU, config=(32, 64, 32, 4, 2)), F.gelu(F.linear(a, w)), atol=1e-5, rtol=1e-4)
    w = torch.randn(96, 64) / 8  # d_model 32 = 2 heads of 16; 10 clips of 7 frames
    cos, sin = rope_tables(7, 16, 1e4, torch.device("cpu"))
    expected = T.rope_(F.linear(a, w).view(10, 7, 3, 2, 16), cos, sin)
    got = K.linear(a, w, K.EPILOGUE_ROPE, cos=cos, sin=sin, n_frames=7, config=(32, 32, 32, 4, 2))
    torch.testing.assert_close(got.view(10, 7, 3, 2, 16), expected, atol=1e-5, rtol=1e-4)
    encoder = build_encoder("tiny")
    waveform = 0.3 * torch.randn(2, 1, 2 * 24000)
    expected, _ = encoder(waveform)
    codes, _ = FastMossEncoder(encoder, "fp32", kernels="triton")(waveform)
    assert (codes == expected).float().mean() > 0.99
    print("ok")
""")


def test_triton_kernels_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@needs_cuda
def test_cuda_fast_path_against_eager_reference() -> None:
    model = build_encoder("tiny", "cuda")
    waveform, lengths = batch(10.0, 4, seed=3)
    waveform, lengths = waveform.cuda(), lengths.cuda()
    with torch.inference_mode():
        expected, counts = model(waveform, lengths)
    valid = valid_mask(expected.cpu(), counts.cpu()).cuda()
    for precision, minimum in (("fp32", 0.99), ("tf32", 0.95), ("fp16", 0.95), ("bf16", 0.8)):
        graphed = FastMossEncoder(model, precision)
        codes, got_counts = graphed(waveform, lengths)
        again, _ = graphed(waveform, lengths)  # a replay of the captured graph
        eager, _ = FastMossEncoder(model, precision, cuda_graphs=False)(waveform, lengths)
        assert torch.equal(got_counts, counts) and torch.equal(codes, again) and torch.equal(codes, eager)
        assert (codes[:, 0] == expected[:, 0])[valid[:, 0]].float().mean() >= minimum, precision
        for variant in (dict(epilogues="triton"), dict(epilogues="none"), dict(streams=2)):
            other, other_counts = FastMossEncoder(model, precision, **variant)(waveform, lengths)
            assert torch.equal(other_counts, counts)
            assert (other[:, 0] == expected[:, 0])[valid[:, 0]].float().mean() >= minimum, (precision, variant)
