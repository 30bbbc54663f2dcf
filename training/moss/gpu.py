"""A fast inference path of the MOSS encoder for GPUs, selected explicitly: ``FastMossEncoder(encoder, ...)``.

Same math and contract as ``MossEncoder.encode`` (float32 ``[B, 1, S]`` + int64 lengths -> int64 codes
``[B, Q, T]`` + frame counts); the reference modules and their ONNX export are untouched. What changes:

- Attention: causal SDPA (``is_causal=True``: flash / memory-efficient kernels, no mask tensor) whenever
  a stage's sequence fits its window (N <= context: every clip up to 10 s, so every serving window);
  longer sequences go through ``banded_attention`` (query blocks of one window against two key blocks,
  a ``[W, 2W]`` band mask per block instead of a dense ``[N, N]`` one). Both are exact.
- RoPE: cos/sin tables computed once per (length, head dim) exactly as the reference computes them, and
  applied in float32 in place in the fused q|k|v projection (one Triton kernel on GPU).
- Epilogues (``epilogues="cublas"``, the default for FP16/BF16/TF32 on CUDA): GELU in the cuBLASLt epilogue
  of the first feed-forward matmul (its tanh form; the reference uses erf), and the layer-scaled residual
  branches accumulated by cuBLAS into the float32 residual stream (the out-projection and the second
  feed-forward matmul take it as their C matrix, the layer scale folded into their weights), so the
  LayerNorm pass that follows only reads the stream. Otherwise (``"none"``; FP32, CPU) LayerNorm is fused
  with the layer-scaled residual add that precedes it (one Triton kernel) and GELU is a pass of its own.
  Either way the residual stream stays float32 whatever the compute dtype.
- Precision ``fp32`` / ``tf32`` / ``fp16`` / ``bf16``: the transformer matmuls and attention run in the
  compute dtype (weights converted once); LayerNorm statistics, RoPE, GELU's arithmetic (on the FP32
  accumulator in the cuBLASLt epilogue), the residual stream and the whole quantizer stay float32 (the
  quantizer's matmuls never use TF32).
- Quantizer: weight norm folded once, normalised codebooks and their squared norms precomputed; each level
  is otherwise the reference's op sequence (so its argmaxes match bit for bit on equal inputs). The level
  loop is sequential by nature (level q's input is the residual after level q-1).
- CUDA graphs: on CUDA the whole encode (every stage and all quantizer levels) is captured once per input
  shape and replayed; callers that see many shapes should bucket them (serving/torch_serving.py does).

On the CPU (no Triton) the same code runs with plain PyTorch ops, which is how tests compare it with the
reference. See docs/gpu-performance.md for measurements.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from training.moss.config import MossConfig, PatchConfig, TransformerConfig
from training.moss.model import MossEncoder, validate_inputs
from training.moss.quantizer import PointwiseConv
from training.moss.transformer import Patch, ProjectedTransformer

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
EPILOGUES = ("cublas", "triton", "none")
COMPUTE_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def float32_matmul_precision(mode: str) -> Iterator[None]:
    """``torch.set_float32_matmul_precision`` for a block: "highest" (IEEE FP32) or "high" (TF32)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def rope_tables(frames: int, head_dim: int, max_period: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin float32 ``[frames, head_dim / 2]``, computed with the reference's (``apply_rope``) ops."""
    freqs = torch.exp(torch.arange(head_dim // 2, device=device, dtype=torch.float32)
                      * (-2.0 * math.log(max_period) / head_dim))
    angles = torch.arange(frames, device=device, dtype=torch.float32)[:, None] * freqs[None, :]
    return torch.cos(angles), torch.sin(angles)


def banded_attention(q: Tensor, k: Tensor, v: Tensor, context: int) -> Tensor:
    """Exact sliding-window causal attention (query p sees key r iff 0 <= p - r < context) for long N.

    Queries are cut into blocks of ``context``; block b attends keys ``(b-1)W .. (b+1)W - 1`` through one
    SDPA call over all blocks with a ``[W, 2W]`` band mask (the first block also masks its left padding).
    """
    batch, heads, frames, head_dim = q.shape
    w = context
    blocks = -(-frames // w)
    pad = blocks * w - frames
    queries = F.pad(q, (0, 0, 0, pad)).reshape(batch, heads * blocks, w, head_dim)

    def key_windows(t: Tensor) -> Tensor:
        padded = F.pad(t, (0, 0, w, pad))  # [B, H, (blocks + 1) W, D]
        return padded.unfold(2, 2 * w, w).transpose(-1, -2).reshape(batch, heads * blocks, 2 * w, head_dim)

    i = torch.arange(w, device=q.device)[:, None]
    j = torch.arange(2 * w, device=q.device)[None, :]
    band = (j > i) & (j <= i + w)  # r = (b-1)W + j, p = bW + i: 0 <= p - r < W
    mask = band.expand(blocks, w, 2 * w).clone()
    mask[0] &= j >= w  # block 0: keys left of position 0 are padding
    out = F.scaled_dot_product_attention(queries, key_windows(k), key_windows(v), attn_mask=mask.repeat(heads, 1, 1))
    return out.reshape(batch, heads, blocks * w, head_dim)[:, :, :frames]


def windowed_attention(q: Tensor, k: Tensor, v: Tensor, context: int) -> Tensor:
    """``AttentionFn`` without a dense mask: causal SDPA when N <= context, else ``banded_attention``.

    Usable with ``MossEncoder.set_attention`` for eager PyTorch (not for the ONNX export, whose graph
    must keep N dynamic).
    """
    if q.shape[-2] <= context:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return banded_attention(q, k, v, context)


class TorchOps:
    """The fused element-wise steps in plain PyTorch (CPU, or GPUs without Triton): same math, more passes."""

    name = "torch"

    @staticmethod
    def residual_layernorm(x: Tensor, out: Tensor, residual: Tensor | None = None, scale: Tensor | None = None,
                           weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
        if residual is not None:
            x.add_(residual.float() * scale)  # the reference's x + (o * s), in place
        out.copy_(F.layer_norm(x, (x.shape[-1],), weight, bias, eps) if weight is not None else x)
        return out

    @staticmethod
    def rope_(qkv: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        batch, frames, _, heads, head_dim = qkv.shape
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        for part in (0, 1):
            t = qkv[:, :, part]
            pairs = t.float().reshape(batch, frames, heads, head_dim // 2, 2)
            real, imag = pairs[..., 0], pairs[..., 1]
            t.copy_(torch.stack((real * c - imag * s, real * s + imag * c), dim=-1).reshape(t.shape))
        return qkv


def _kernels(device: torch.device, kernels: str):
    if kernels == "torch":
        return TorchOps
    try:
        from training.moss import gpu_kernels
    except ImportError:
        if kernels == "triton":
            raise
        return TorchOps
    if kernels == "triton" or gpu_kernels.available(device):
        return gpu_kernels
    return TorchOps


@dataclass
class _Layer:
    ln1_w: Tensor
    ln1_b: Tensor
    qkv_w: Tensor
    out_w: Tensor
    scale1: Tensor
    ln2_w: Tensor
    ln2_b: Tensor
    w1: Tensor
    w2: Tensor
    scale2: Tensor


@dataclass
class _Stage:
    config: TransformerConfig
    input_w: Tensor | None
    layers: list[_Layer]
    output_w: Tensor | None
    ff_bias: Tensor | None = None  # zeros: cuBLASLt's GELU epilogue comes with a bias


@dataclass
class _Level:
    in_w: Tensor
    in_b: Tensor
    out_w: Tensor
    out_b: Tensor
    codebook: Tensor  # raw rows: the quantised vector
    normalised: Tensor  # L2-normalised rows: the distance's c
    squared_norms: Tensor  # c.pow(2).sum(-1)


def folded_weight(conv: PointwiseConv) -> Tensor:
    """The weight-normalised 1x1 conv's plain ``[out, in]`` weight (the reference's expression, computed once)."""
    return conv.parametrizations["weight"]().squeeze(-1).detach()


class _CapturedEncode:
    """One CUDA graph of the whole encode for one input shape; inputs are copied into static buffers."""

    def __init__(self, fn, waveform: Tensor, lengths: Tensor, n_quantizers: int, pool) -> None:
        self.waveform, self.lengths = waveform.clone(), lengths.clone()
        stream = torch.cuda.Stream(device=waveform.device)
        stream.wait_stream(torch.cuda.current_stream(waveform.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # compiles kernels, fills caches (RoPE tables), picks cuBLAS algorithms
                fn(self.waveform, self.lengths, n_quantizers)
        torch.cuda.current_stream(waveform.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = fn(self.waveform, self.lengths, n_quantizers)

    def __call__(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        self.waveform.copy_(waveform)
        self.lengths.copy_(lengths)
        self.graph.replay()
        return self.outputs[0].clone(), self.outputs[1].clone()


class FastMossEncoder:
    """Inference-only fast path over a loaded ``MossEncoder`` (its weights are shared or converted once).

    ``precision``: one of ``PRECISIONS``. ``kernels``: "auto" (Triton where it can run, else PyTorch ops),
    "triton" or "torch". ``cuda_graphs``: capture/replay per input shape on CUDA (default on).
    ``attention_backends``: optional ``torch.nn.attention.SDPBackend`` list to pin SDPA's kernel choice.
    ``epilogues``: which element-wise steps ride on the matmuls (precisions other than FP32 only; else
    "none"). "cublas" (CUDA): GELU in the first feed-forward matmul's cuBLASLt epilogue and the residual
    adds as the out-projection's and second feed-forward matmul's C matrix (see the module docstring).
    "triton": the q|k|v projection with RoPE and the first feed-forward matmul with exact GELU as Triton
    matmuls with those steps in their epilogue (Triton kernels, widths that are multiples of 64; measured
    slower than cuBLAS + a separate pass on H100). "none": cuBLAS matmuls, every step a pass of its own.
    ``streams``: on CUDA, encode the batch as that many independent slices on their own streams (captured
    into the same graph), so one slice's memory-bound passes can overlap another's matmuls.
    """

    def __init__(self, model: MossEncoder, precision: str = "fp16", *, kernels: str = "auto",
                 cuda_graphs: bool = True, attention_backends: Sequence | None = None,
                 epilogues: str = "cublas", streams: int = 1) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if epilogues not in EPILOGUES:
            raise ValueError(f"epilogues must be one of {EPILOGUES}, got {epilogues!r}")
        self.model = model
        self.config: MossConfig = model.config
        self.precision = precision
        self.dtype = COMPUTE_DTYPES[precision]
        self.device = next(model.parameters()).device
        self.ops = _kernels(self.device, kernels)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        if attention_backends is None and self.device.type == "cuda" and self.dtype != torch.float32:
            from torch.nn.attention import SDPBackend

            # cuDNN's fused attention measured fastest on H100 here; the others remain as fallbacks.
            attention_backends = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                  SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        self.attention_backends = list(attention_backends) if attention_backends else None
        self.streams = max(1, streams) if self.device.type == "cuda" else 1
        self._side_streams: list = []
        # FP32 keeps the reference's op sequence (its codes are compared bit for bit); the cuBLAS form needs
        # CUDA (fp16/bf16 x fp16/bf16 -> fp32 addmm), the Triton form Triton.
        supported = precision != "fp32" and (self.ops.name == "triton" if epilogues == "triton"
                                             else self.device.type == "cuda")
        self.epilogues = epilogues if supported else "none"
        self._rope: dict[tuple[int, int, float], tuple[Tensor, Tensor]] = {}
        self._graphs: dict[tuple, _CapturedEncode] = {}
        self._pool = None
        with torch.no_grad():
            self.modules: list[Patch | _Stage] = [
                module if isinstance(module, Patch) else self._stage(stage, module)
                for stage, module in zip(self.config.stages, model.encoder)
            ]
            quantizer = model.quantizer
            self.q_in_w, self.q_in_b = folded_weight(quantizer.input_proj), quantizer.input_proj.bias.detach()
            self.levels = []
            for level in quantizer.quantizers:
                codebook = level.codebook.weight.detach().float()
                normalised = F.normalize(codebook, dim=-1)
                self.levels.append(_Level(
                    folded_weight(level.in_proj), level.in_proj.bias.detach(),
                    folded_weight(level.out_proj), level.out_proj.bias.detach(),
                    codebook, normalised, normalised.pow(2).sum(-1)))

    def _convert(self, weight: Tensor | None) -> Tensor | None:
        return None if weight is None else weight.detach().to(self.dtype).contiguous()

    def _stage(self, config: PatchConfig | TransformerConfig, module: ProjectedTransformer) -> _Stage:
        assert isinstance(config, TransformerConfig)

        def branch_output(weight: Tensor, scale: Tensor) -> Tensor:
            # Accumulating matmuls take the layer scale folded into their weight's rows (s * (W a) = (s W) a).
            return self._convert(weight * scale[:, None] if self.epilogues == "cublas" else weight)

        layers = [
            _Layer(layer.norm1.weight.detach(), layer.norm1.bias.detach(), self._convert(layer.self_attn.in_proj.weight),
                   branch_output(layer.self_attn.out_proj.weight, layer.layer_scale_1.scale),
                   layer.layer_scale_1.scale.detach(),
                   layer.norm2.weight.detach(), layer.norm2.bias.detach(), self._convert(layer.linear1.weight),
                   branch_output(layer.linear2.weight, layer.layer_scale_2.scale), layer.layer_scale_2.scale.detach())
            for layer in module.transformer.layers
        ]
        ff_bias = (torch.zeros(config.dim_feedforward, device=self.device, dtype=self.dtype)
                   if self.epilogues == "cublas" else None)
        return _Stage(config, self._convert(module.input_proj.weight if module.input_proj is not None else None),
                      layers, self._convert(module.output_proj.weight if module.output_proj is not None else None),
                      ff_bias)

    # -- the math -------------------------------------------------------------------------------------
    def _tables(self, frames: int, config: TransformerConfig) -> tuple[Tensor, Tensor]:
        key = (frames, config.head_dim, config.max_period)
        if key not in self._rope:
            self._rope[key] = rope_tables(frames, config.head_dim, config.max_period, self.device)
        return self._rope[key]

    def _attention(self, q: Tensor, k: Tensor, v: Tensor, context: int) -> Tensor:
        if self.attention_backends is None:
            return windowed_attention(q, k, v, context)
        from torch.nn.attention import sdpa_kernel

        try:
            context_manager = sdpa_kernel(self.attention_backends, set_priority=True)
        except TypeError:  # older PyTorch: no priority order, the listed backends only
            context_manager = sdpa_kernel(self.attention_backends)
        with context_manager:
            return windowed_attention(q, k, v, context)

    def _transformer(self, stage: _Stage, inputs: Tensor) -> Tensor:
        config, ops, dtype = stage.config, self.ops, self.dtype
        batch, frames, _ = inputs.shape
        rows, width, heads = batch * frames, config.d_model, config.num_heads
        flat = inputs.reshape(rows, -1)
        if stage.input_w is not None:
            x = F.linear(flat.to(dtype), stage.input_w).float()
        else:
            x = flat.to(torch.float32, copy=True)  # the residual stream: updated in place below
        x = x.contiguous()
        y = torch.empty(rows, width, device=x.device, dtype=dtype)
        cos, sin = self._tables(frames, config)
        layers = stage.layers
        if layers:
            ops.residual_layernorm(x, y, weight=layers[0].ln1_w, bias=layers[0].ln1_b)
        else:
            y.copy_(x)
        fused = self.epilogues == "triton" and width % 64 == 0
        cublas = self.epilogues == "cublas"
        for index, layer in enumerate(layers):
            if fused:
                qkv = ops.linear(y, layer.qkv_w, ops.EPILOGUE_ROPE, cos=cos, sin=sin, n_frames=frames)
                qkv = qkv.view(batch, frames, 3, heads, config.head_dim)
            else:
                qkv = F.linear(y, layer.qkv_w).view(batch, frames, 3, heads, config.head_dim)
                ops.rope_(qkv, cos, sin)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, D] views
            attended = self._attention(q, k, v, config.context).transpose(1, 2).reshape(rows, width)
            if cublas:
                self._accumulate_into(x, attended, layer.out_w)
                ops.residual_layernorm(x, y, weight=layer.ln2_w, bias=layer.ln2_b)
            else:
                ops.residual_layernorm(x, y, F.linear(attended, layer.out_w), layer.scale1, layer.ln2_w, layer.ln2_b)
            if fused:
                hidden = ops.linear(y, layer.w1, ops.EPILOGUE_GELU)
            elif cublas:  # GELU's tanh form on the FP32 accumulator: that is the epilogue cuBLASLt has
                hidden = torch._addmm_activation(stage.ff_bias, y, layer.w1.t(), use_gelu=True)
            else:
                hidden = F.gelu(F.linear(y, layer.w1))
            following = layers[index + 1] if index + 1 < len(layers) else None
            norm = (following.ln1_w, following.ln1_b) if following is not None else (None, None)
            if cublas:
                self._accumulate_into(x, hidden, layer.w2)
                ops.residual_layernorm(x, y, weight=norm[0], bias=norm[1])
            else:  # without a following norm: y = x in the compute dtype
                ops.residual_layernorm(x, y, F.linear(hidden, layer.w2), layer.scale2, *norm)
        out = F.linear(y, stage.output_w) if stage.output_w is not None else y
        return out.view(batch, frames, -1)

    def _accumulate_into(self, x: Tensor, a: Tensor, w: Tensor) -> None:
        """``x += a @ w.T`` with ``x`` the float32 residual stream: cuBLAS reads and writes it as its C matrix."""
        if self.dtype == torch.float32:
            torch.addmm(x, a, w.t(), out=x)
        else:
            torch.addmm(x, a, w.t(), out_dtype=torch.float32, out=x)

    def _quantize(self, latent: Tensor, frame_counts: Tensor, n_quantizers: int) -> Tensor:
        """The reference ResidualLFQ's op sequence on float32, with per-level constants precomputed."""
        residual = F.linear(latent, self.q_in_w, self.q_in_b)
        frames = torch.arange(residual.shape[1], device=residual.device)
        mask = (frames[None, :] < frame_counts[:, None]).unsqueeze(-1).to(residual.dtype)
        codes = []
        fused = self.ops.name == "triton"
        for level in self.levels[:n_quantizers]:
            u = F.normalize(F.linear(residual * mask, level.in_w, level.in_b).float(), dim=-1)
            c = level.normalised
            if fused:  # one pass over the [rows, codebook] dot products instead of five
                dot = u @ c.t()
                level_codes = self.ops.nearest_code(dot.reshape(-1, dot.shape[-1]), u.pow(2).sum(-1).reshape(-1),
                                                    level.squared_norms).view(dot.shape[:-1])
            else:
                distance = u.pow(2).sum(-1, keepdim=True) - 2.0 * (u @ c.t()) + level.squared_norms
                level_codes = (-distance).argmax(-1)
            update = F.linear(F.embedding(level_codes, level.codebook), level.out_w, level.out_b)
            residual = residual - update * mask
            codes.append(level_codes)
        return torch.stack(codes, dim=1)

    def _encode_eager(self, waveform: Tensor, lengths: Tensor, n_quantizers: int) -> tuple[Tensor, Tensor]:
        slices = min(self.streams, waveform.shape[0])
        if slices <= 1:
            return self._encode_slice(waveform, lengths, n_quantizers)
        while len(self._side_streams) < slices:
            self._side_streams.append(torch.cuda.Stream(device=waveform.device))
        main = torch.cuda.current_stream(waveform.device)
        bounds = [round(i * waveform.shape[0] / slices) for i in range(slices + 1)]
        outputs = []
        for index, stream in enumerate(self._side_streams[:slices]):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                outputs.append(self._encode_slice(waveform[bounds[index]:bounds[index + 1]],
                                                  lengths[bounds[index]:bounds[index + 1]], n_quantizers))
        for stream in self._side_streams[:slices]:
            main.wait_stream(stream)
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])

    def _encode_slice(self, waveform: Tensor, lengths: Tensor, n_quantizers: int) -> tuple[Tensor, Tensor]:
        hop = self.config.hop
        x = waveform[:, 0]
        x = F.pad(x, (0, (hop - x.shape[-1] % hop) % hop))
        latent = x.unsqueeze(-1)
        with float32_matmul_precision("high" if self.precision == "tf32" else "highest"):
            for module in self.modules:
                latent = module(latent) if isinstance(module, Patch) else self._transformer(module, latent)
        frame_counts = torch.div(lengths, hop, rounding_mode="floor")
        with float32_matmul_precision("highest"):
            codes = self._quantize(latent.float(), frame_counts, n_quantizers)
        return codes, frame_counts

    # -- entry points ---------------------------------------------------------------------------------
    def encode(self, waveform: Tensor, lengths: Tensor, n_quantizers: int) -> tuple[Tensor, Tensor]:
        """Unchecked core with ``MossEncoder.encode``'s contract; replays a CUDA graph per input shape on CUDA."""
        with torch.inference_mode():
            if not self.cuda_graphs:
                return self._encode_eager(waveform, lengths, n_quantizers)
            key = (tuple(waveform.shape), waveform.dtype, n_quantizers)
            captured = self._graphs.get(key)
            if captured is None:
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                captured = self._graphs[key] = _CapturedEncode(self._encode_eager, waveform, lengths, n_quantizers, self._pool)
            return captured(waveform, lengths)

    def __call__(self, waveform: Tensor, lengths: Tensor | None = None,
                 n_quantizers: int | None = None) -> tuple[Tensor, Tensor]:
        n_quantizers = self.model.check_n_quantizers(n_quantizers)
        waveform, lengths = validate_inputs(waveform, lengths)
        return self.encode(waveform.to(self.device), lengths.to(self.device), n_quantizers)

    @property
    def captured_shapes(self) -> list[tuple]:
        return list(self._graphs)


def flops_per_clip(config: MossConfig, seconds: float = 10.0, n_quantizers: int | None = None) -> dict[str, float]:
    """Floating-point operations (2 per multiply-add) of encoding one clip, from the configuration.

    Attention counts the causal window only (each query against min(p + 1, context) keys), QK^T and PV.
    """
    samples = math.ceil(seconds * config.sampling_rate / config.hop) * config.hop
    frames = samples
    total = {"projections": 0.0, "attention": 0.0, "quantizer": 0.0}
    for stage in config.stages:
        if isinstance(stage, PatchConfig):
            frames //= stage.patch_size
            continue
        d, ff = stage.d_model, stage.dim_feedforward
        if stage.input_dim != d:
            total["projections"] += 2.0 * frames * stage.input_dim * d
        if stage.output_dim != d:
            total["projections"] += 2.0 * frames * d * stage.output_dim
        per_layer = 2.0 * frames * (3 * d * d + d * d + 2 * d * ff)
        w = stage.context
        keys = sum(min(p + 1, w) for p in range(frames))
        total["projections"] += stage.num_layers * per_layer
        total["attention"] += stage.num_layers * 2.0 * 2.0 * keys * d
    q = config.quantizer
    levels = q.num_quantizers if n_quantizers is None else n_quantizers
    total["quantizer"] = 2.0 * frames * (q.input_dim * q.rvq_dim
                                         + levels * (q.rvq_dim * q.codebook_dim * 2 + q.codebook_dim * q.codebook_size))
    total["total"] = sum(total.values())
    return total
