"""The MOSS encode path on the tiny random-weight preset: shapes, causality, windows, quantizer math, inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.cli import dispatch
from training.__main__ import COMMANDS
from training.moss import (
    OFFICIAL_CONFIG,
    TINY_CONFIG,
    MossConfig,
    MossEncoder,
    apply_rope,
    build_encoder,
    empty_encoder,
    nearest_code,
    resolve_moss,
    windowed_causal_attention,
)
from training.moss.attention import blocked_windowed_causal_attention
from training.moss.transformer import Patch

SR = 24000
# Sum of every tiny-random parameter (seeded generator): pins the weights across processes.
TINY_WEIGHT_SUM = 656.2432625789602
HOP = 1920


@pytest.fixture(scope="module")
def encoder() -> MossEncoder:
    return build_encoder("tiny")


def noise(seconds: float, seed: int = 0, batch: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, 1, int(seconds * SR), generator=generator)


def stage_shapes(model: MossEncoder, waveform: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Each encoder module's output in the spec's conv layout [B, C, N], and the codes."""
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.transpose(1, 2).shape)))
             for m in model.encoder]
    try:
        lengths = torch.full((waveform.shape[0],), waveform.shape[-1], device=waveform.device)
        codes, _ = model.encode(waveform, lengths, 32)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes, codes


def test_official_shape_chain_on_meta_device() -> None:
    model = empty_encoder(OFFICIAL_CONFIG, "meta")
    shapes, codes = stage_shapes(model, torch.empty(2, 1, 240_000, device="meta"))
    assert shapes == [(2, 240, 1000), (2, 384, 1000), (2, 768, 500), (2, 384, 500),
                      (2, 768, 250), (2, 640, 250), (2, 1280, 125), (2, 768, 125)]
    assert tuple(codes.shape) == (2, 32, 125)


def test_tiny_shape_chain_and_frame_counts(encoder: MossEncoder) -> None:
    shapes, codes = stage_shapes(encoder, noise(10.0, batch=2))
    assert shapes == [(2, 240, 1000), (2, 16, 1000), (2, 32, 500), (2, 16, 500),
                      (2, 32, 250), (2, 24, 250), (2, 48, 125), (2, 32, 125)]
    assert tuple(codes.shape) == (2, 32, 125) and codes.dtype == torch.int64
    # S not a multiple of the hop: T = ceil(S / hop) frames, valid = floor(length / hop).
    waveform = noise(1.0, batch=2)[..., : 5 * HOP + 7]
    codes, counts = encoder(waveform, torch.tensor([5 * HOP + 7, 2 * HOP - 1]))
    assert tuple(codes.shape) == (2, 32, 6)
    assert counts.tolist() == [5, 1] and counts.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < TINY_CONFIG.quantizer.codebook_size
    codes_2d, _ = encoder(waveform[:, 0])  # [B, S] is read as mono
    assert torch.equal(codes_2d, encoder(waveform)[0])


def test_tiny_keeps_every_structural_feature(encoder: MossEncoder) -> None:
    stages = [encoder.encoder[i] for i, _ in TINY_CONFIG.transformers]
    assert [s.input_proj is not None for s in stages] == [True, False, False, False]
    assert all(s.output_proj is not None for s in stages)
    assert [s.transformer.layers[0].self_attn.context for s in stages] == [1000, 500, 250, 125]
    assert [c.context for _, c in OFFICIAL_CONFIG.transformers] == [1000, 500, 250, 125]
    assert TINY_CONFIG.quantizer.num_quantizers == 32 and TINY_CONFIG.quantizer.codebook_size == 64


def test_patch_is_channel_major() -> None:
    x = torch.arange(12.0).reshape(1, 6, 2)  # [B, N, C]: channel c at time n is 2n + c
    out = Patch(3)(x)  # [1, 2, 6]: channel c*3 + j at step n is input channel c at time 3n + j
    expected = [[x[0, 3 * n + j, c].item() for c in range(2) for j in range(3)] for n in range(2)]
    assert out[0].tolist() == expected


def test_rope_is_interleaved_complex_rotation() -> None:
    x = torch.randn(2, 3, 7, 8)
    freqs = 10000.0 ** (-torch.arange(4, dtype=torch.float64) * 2 / 8)
    angles = torch.arange(7, dtype=torch.float64)[:, None] * freqs
    as_complex = torch.view_as_complex(x.double().reshape(2, 3, 7, 4, 2).contiguous())
    expected = torch.view_as_real(as_complex * torch.polar(torch.ones_like(angles), angles)).reshape(x.shape)
    torch.testing.assert_close(apply_rope(x, 10000.0), expected.float(), atol=1e-5, rtol=1e-5)
    assert apply_rope(x.half(), 10000.0).dtype == torch.float16


def test_attention_window_semantics() -> None:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 300, 8, generator=generator) for _ in range(3))
    context, changed = 125, 40
    base = windowed_causal_attention(q, k, v, context)
    k2, v2 = k.clone(), v.clone()
    k2[..., changed, :] += 1.0
    v2[..., changed, :] += 1.0
    moved = (windowed_causal_attention(q, k2, v2, context) - base).abs().amax(dim=(0, 1, 3)) > 0
    # Query p sees key r iff 0 <= p - r < context.
    assert moved.tolist() == [changed <= p < changed + context for p in range(300)]


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: int) -> torch.Tensor:
    n = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    delta = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    scores = scores.masked_fill(~((delta >= 0) & (delta < context)), float("-inf"))
    return scores.softmax(-1) @ v


def test_attention_backend_swap_gives_same_codes(encoder: MossEncoder) -> None:
    waveform = noise(2.0, seed=3)
    expected, _ = encoder(waveform)
    swapped = build_encoder("tiny")
    swapped.set_attention(reference_attention)
    assert torch.equal(swapped(waveform)[0], expected)


def test_blocked_attention_equals_the_one_mask_attention(encoder: MossEncoder) -> None:
    """The memory-linear backend tokenize uses for whole tracks: same outputs, and the same codes past the window."""
    q, k, v = (torch.randn(2, 3, 2600, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    torch.testing.assert_close(blocked_windowed_causal_attention(q, k, v, 1000), windowed_causal_attention(q, k, v, 1000), atol=1e-5, rtol=1e-5)
    waveform = noise(23.0, seed=6)  # longer than every stage's 10-s window
    swapped = build_encoder("tiny")
    swapped.set_attention(blocked_windowed_causal_attention)
    assert torch.equal(swapped(waveform)[0], encoder(waveform)[0])


def test_causality(encoder: MossEncoder) -> None:
    waveform = noise(4.0, seed=4)
    cut = 20 * HOP + 100
    changed = waveform.clone()
    changed[..., cut:] = noise(4.0, seed=5)[..., cut:]
    before, after = encoder(waveform)[0], encoder(changed)[0]
    settled = cut // HOP  # frames ending at or before the cut
    assert torch.equal(before[..., :settled], after[..., :settled])
    assert not torch.equal(before[..., settled:], after[..., settled:])


def test_padded_batch_matches_each_clip_alone(encoder: MossEncoder) -> None:
    lengths = [3 * SR + 123, int(1.3 * SR), SR // 2, HOP - 5]
    clips = [noise(length / SR, seed=10 + i)[0, 0, :length] for i, length in enumerate(lengths)]
    batch = torch.zeros(len(clips), 1, max(lengths))
    for i, clip in enumerate(clips):
        batch[i, 0, : len(clip)] = clip
    codes, counts = encoder(batch, torch.tensor(lengths))
    assert counts.tolist() == [length // HOP for length in lengths]
    for i, clip in enumerate(clips):
        alone, alone_counts = encoder(clip[None, None])
        valid = int(counts[i])
        assert int(alone_counts[0]) == valid
        assert torch.equal(codes[i, :, :valid], alone[0, :, :valid])


def test_sliding_window_limits_how_far_back_codes_depend(encoder: MossEncoder) -> None:
    # Tiny has one layer per stage, four stages, each with a 10-s window: a change in the
    # first second reaches at most ~41 s further; full causal attention would reach the end.
    waveform = noise(46.0, seed=6)
    changed = waveform.clone()
    changed[..., :SR] = noise(1.0, seed=7)
    before, after = encoder(waveform)[0], encoder(changed)[0]
    frame_rate = SR / HOP
    assert not torch.equal(before[..., int(5 * frame_rate):int(15 * frame_rate)],
                           after[..., int(5 * frame_rate):int(15 * frame_rate)])
    assert torch.equal(before[..., int(43 * frame_rate):], after[..., int(43 * frame_rate):])


def reference_quantize(model: MossEncoder, latent: np.ndarray, counts: np.ndarray, levels: int) -> np.ndarray:
    """Frame-by-frame residual LFQ in float64 straight from the parameters."""
    def conv(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
        g = module.parametrizations.weight.original0.detach().double().numpy()[:, :, 0]
        v = module.parametrizations.weight.original1.detach().double().numpy()[:, :, 0]
        weight = g * v / np.linalg.norm(v, axis=1, keepdims=True)
        return weight @ x + module.bias.detach().double().numpy()

    quantizer = model.quantizer
    batch, frames, _ = latent.shape
    codes = np.zeros((batch, levels, frames), dtype=np.int64)
    for b in range(batch):
        for t in range(frames):
            valid = 1.0 if t < counts[b] else 0.0
            residual = conv(quantizer.input_proj, latent[b, t].astype(np.float64))
            for q in range(levels):
                level = quantizer.quantizers[q]
                u = conv(level.in_proj, residual * valid)
                codebook = level.codebook.weight.detach().double().numpy()
                u_n = u / np.linalg.norm(u)
                c_n = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
                code = int(np.argmin(((c_n - u_n) ** 2).sum(axis=1)))
                codes[b, q, t] = code
                residual = residual - conv(level.out_proj, codebook[code]) * valid
    return codes


def test_quantizer_matches_reference(encoder: MossEncoder) -> None:
    generator = torch.Generator().manual_seed(8)
    latent = torch.randn(2, 9, TINY_CONFIG.quantizer.input_dim, generator=generator)
    counts = torch.tensor([9, 4])
    codes = encoder.quantizer(latent, counts, 32)
    assert np.array_equal(codes.numpy(), reference_quantize(encoder, latent.double().numpy(), counts.numpy(), 32))
    # Invalid frames see a zeroed residual at every level, so their codes do not depend on the latent.
    assert torch.equal(codes[1, :, 4:], encoder.quantizer(torch.zeros_like(latent), counts, 32)[1, :, 4:])


def test_nearest_code_ties_go_to_lowest_index() -> None:
    codebook = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # rows 1 and 2 normalise alike
    assert nearest_code(torch.tensor([[3.0, 0.1]]), codebook).tolist() == [1]
    assert nearest_code(torch.tensor([[0.0, 0.5]]), codebook).tolist() == [0]


def test_n_quantizers_prefix_and_range(encoder: MossEncoder) -> None:
    waveform = noise(2.0, seed=9)
    full, _ = encoder(waveform, n_quantizers=32)
    assert torch.equal(encoder(waveform, n_quantizers=8)[0], full[:, :8])
    assert tuple(encoder(waveform, n_quantizers=1)[0].shape) == (1, 1, full.shape[-1])
    assert torch.equal(encoder(waveform)[0], full)
    for bad in (0, 33, -1, 2.0, True):
        with pytest.raises(ValueError, match="n_quantizers"):
            encoder(waveform, n_quantizers=bad)


@pytest.mark.parametrize(("waveform", "lengths", "message"), [
    (torch.zeros(1, 1, 0), None, "empty"),
    (torch.zeros(0, 1, 100), None, "empty"),
    (torch.zeros(100), None, r"\[B, 1, S\]"),
    (torch.zeros(1, 1, 1, 100), None, r"\[B, 1, S\]"),
    (torch.zeros(1, 2, 100), None, "mono"),
    (torch.tensor([[[0.0, float("nan")]]]), None, "NaN or inf"),
    (torch.tensor([[[0.0, float("inf")]]]), None, "NaN or inf"),
    (torch.zeros(1, 1, 100, dtype=torch.int16), None, "floating"),
    (torch.zeros(2, 1, 100), torch.tensor([100, 0]), "lengths must be in"),
    (torch.zeros(2, 1, 100), torch.tensor([100, 101]), "lengths must be in"),
    (torch.zeros(2, 1, 100), torch.tensor([100, -5]), "lengths must be in"),
    (torch.zeros(2, 1, 100), torch.tensor([100]), "shape"),
    (torch.zeros(2, 1, 100), torch.tensor([100.0, 50.0]), "integer"),
])
def test_bad_inputs_raise_clear_errors(encoder: MossEncoder, waveform: torch.Tensor,
                                       lengths: torch.Tensor | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encoder(waveform, lengths)


def test_random_weights_are_seeded_not_global() -> None:
    torch.manual_seed(123)
    first = build_encoder("tiny").state_dict()
    torch.manual_seed(456)
    second = build_encoder("tiny-random").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    # A checksum pinned across processes and machines: the generator's stream is stable.
    assert math.isclose(sum(float(v.double().sum()) for v in first.values()), TINY_WEIGHT_SUM, rel_tol=1e-9)


def test_config_reads_official_layout() -> None:
    data = OFFICIAL_CONFIG.to_official_dict()
    assert MossConfig.from_official_dict(data) == OFFICIAL_CONFIG
    encode_only = {key: value for key, value in data.items() if key != "decoder_kwargs"}
    assert MossConfig.from_official_dict(encode_only) == OFFICIAL_CONFIG.without_decoder()
    data["decoder_kwargs"][0]["gating"] = "swiglu"  # the decoder's stages are checked like the encoder's
    with pytest.raises(ValueError, match="decoder module 0: gating"):
        MossConfig.from_official_dict(data)
    data["decoder_kwargs"][0]["gating"] = "none"
    data["encoder_kwargs"][1]["gating"] = "swiglu"
    with pytest.raises(ValueError, match="gating"):
        MossConfig.from_official_dict(data)
    with pytest.raises(ValueError, match="not a preset"):
        resolve_moss("/nonexistent/moss")  # neither preset nor folder
    assert resolve_moss("tiny").random_weights and resolve_moss("tiny").name == "tiny-random"


def test_moss_info_prints_official_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatch("python -m training", "", COMMANDS, ["moss-info", "--moss-config", "official"]) == 0
    out = capsys.readouterr().out
    for expected in ("887,956,480", "886,609,920", "1,346,560", "394,752", "12.5", "1920", "1024", "RANDOM WEIGHTS"):
        assert expected in out
    counts = empty_encoder(OFFICIAL_CONFIG, "meta").parameter_counts()
    assert (counts.total, counts.encoder, counts.quantizer) == (887_956_480, 886_609_920, 1_346_560)
