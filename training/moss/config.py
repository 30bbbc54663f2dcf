"""Configuration of the MOSS-Audio-Tokenizer encode path (encoder + residual LFQ quantizer).

Reads the official ``config.json`` layout (``encoder_kwargs`` list of module dicts,
``quantizer_kwargs``) and knows two presets: ``official`` (the published architecture)
and ``tiny`` (a scaled-down copy for tests). Presets carry no trained weights: encoders
built from them get seeded random weights and say so everywhere they are described.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

PATCH_MODULE = "PatchedPretransform"
TRANSFORMER_MODULE = "Transformer"
# Options the official config spells out; any other value would change the math we implement.
_REQUIRED_TRANSFORMER_OPTIONS = {
    "causal": True,
    "gating": "none",
    "norm": "layer_norm",
    "positional_embedding": "rope",
}
_SUPPORTED_QUANTIZERS = ("rlfq",)
RANDOM_WEIGHTS_SEED = 20250214
RANDOM_WEIGHTS_MARKER = "RANDOM WEIGHTS"


@dataclass(frozen=True)
class PatchConfig:
    patch_size: int


@dataclass(frozen=True)
class TransformerConfig:
    input_dim: int
    d_model: int
    num_layers: int
    num_heads: int
    dim_feedforward: int
    output_dim: int
    context: int  # attention window in this stage's frames (10 s at its frame rate)
    layer_scale: float = 0.01
    max_period: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


StageConfig = Union[PatchConfig, TransformerConfig]


@dataclass(frozen=True)
class QuantizerConfig:
    input_dim: int
    rvq_dim: int
    output_dim: int
    num_quantizers: int
    codebook_size: int
    codebook_dim: int


@dataclass(frozen=True)
class MossConfig:
    sampling_rate: int
    downsample_rate: int
    context_duration: float  # seconds; per-stage windows are stored resolved in TransformerConfig.context
    stages: tuple[StageConfig, ...]
    quantizer: QuantizerConfig

    def __post_init__(self) -> None:
        hop = 1
        width = 1  # the waveform is mono
        for index, stage in enumerate(self.stages):
            if isinstance(stage, PatchConfig):
                hop *= stage.patch_size
                width *= stage.patch_size
                continue
            if stage.input_dim != width:
                raise ValueError(f"encoder module {index}: input_dimension {stage.input_dim} != incoming width {width}")
            if stage.d_model % stage.num_heads or stage.head_dim % 2:
                raise ValueError(f"encoder module {index}: d_model {stage.d_model} / {stage.num_heads} heads must give an even head dim")
            width = stage.output_dim
        if hop != self.downsample_rate:
            raise ValueError(f"patch sizes multiply to {hop}, config says downsample_rate {self.downsample_rate}")
        if width != self.quantizer.input_dim:
            raise ValueError(f"encoder output width {width} != quantizer input_dim {self.quantizer.input_dim}")

    @property
    def hop(self) -> int:
        return self.downsample_rate

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.downsample_rate

    @property
    def transformers(self) -> list[tuple[int, TransformerConfig]]:
        return [(i, s) for i, s in enumerate(self.stages) if isinstance(s, TransformerConfig)]

    @classmethod
    def from_official_dict(cls, data: dict[str, Any]) -> MossConfig:
        """Parse the official config.json layout; decoder entries are ignored."""
        sampling_rate = int(data["sampling_rate"])
        duration = float(data["causal_transformer_context_duration"])
        stages: list[StageConfig] = []
        rate = float(sampling_rate)
        for index, entry in enumerate(data["encoder_kwargs"]):
            kind = entry.get("module_type")
            if kind == PATCH_MODULE:
                stages.append(PatchConfig(patch_size=int(entry["patch_size"])))
                rate /= int(entry["patch_size"])
            elif kind == TRANSFORMER_MODULE:
                stages.append(_transformer_from_dict(index, entry, rate, duration))
            else:
                raise ValueError(f"encoder module {index}: unsupported module_type {kind!r}")
        q = dict(data["quantizer_kwargs"])
        quantizer_type = q.pop("quantizer_type", data.get("quantizer_type", "rlfq"))
        if quantizer_type not in _SUPPORTED_QUANTIZERS:
            raise ValueError(f"unsupported quantizer_type {quantizer_type!r}; supported: {_SUPPORTED_QUANTIZERS}")
        quantizer = QuantizerConfig(**{name: int(q[name]) for name in QuantizerConfig.__dataclass_fields__})
        return cls(
            sampling_rate=sampling_rate,
            downsample_rate=int(data["downsample_rate"]),
            context_duration=duration,
            stages=tuple(stages),
            quantizer=quantizer,
        )

    def to_official_dict(self) -> dict[str, Any]:
        """The official config.json layout (encode side only), readable by ``from_official_dict``."""
        encoder: list[dict[str, Any]] = []
        for stage in self.stages:
            if isinstance(stage, PatchConfig):
                encoder.append({"module_type": PATCH_MODULE, "patch_size": stage.patch_size})
                continue
            encoder.append({
                "module_type": TRANSFORMER_MODULE,
                "input_dimension": stage.input_dim,
                "output_dimension": stage.output_dim,
                "d_model": stage.d_model,
                "num_heads": stage.num_heads,
                "num_layers": stage.num_layers,
                "dim_feedforward": stage.dim_feedforward,
                "conv_layout": True,
                "layer_scale": stage.layer_scale,
                "max_period": stage.max_period,
                **_REQUIRED_TRANSFORMER_OPTIONS,
            })
        return {
            "sampling_rate": self.sampling_rate,
            "downsample_rate": self.downsample_rate,
            "causal_transformer_context_duration": self.context_duration,
            "code_dim": self.quantizer.input_dim,
            "quantizer_type": "rlfq",
            "encoder_kwargs": encoder,
            "quantizer_kwargs": {
                name: getattr(self.quantizer, name) for name in QuantizerConfig.__dataclass_fields__
            },
        }


def _transformer_from_dict(index: int, entry: dict[str, Any], frame_rate: float, duration: float) -> TransformerConfig:
    for option, expected in _REQUIRED_TRANSFORMER_OPTIONS.items():
        if option in entry and entry[option] != expected:
            raise ValueError(f"encoder module {index}: {option}={entry[option]!r} is not supported (need {expected!r})")
    # A per-module context_duration (later checkpoints) takes precedence over the global one.
    stage_duration = float(entry.get("context_duration", duration))
    d_model = int(entry["d_model"])
    return TransformerConfig(
        input_dim=int(entry.get("input_dimension", d_model)),
        d_model=d_model,
        num_layers=int(entry["num_layers"]),
        num_heads=int(entry["num_heads"]),
        dim_feedforward=int(entry["dim_feedforward"]),
        output_dim=int(entry.get("output_dimension", d_model)),
        context=int(frame_rate * stage_duration),
        layer_scale=float(entry.get("layer_scale", 0.01)),
        max_period=float(entry.get("max_period", 10000.0)),
    )


def _preset(widths: list[tuple[int, int, int, int, int, int]], quantizer: QuantizerConfig) -> MossConfig:
    """Four (patch, transformer) pairs with patch sizes 240, 2, 2, 2 at 24 kHz and a 10-s window."""
    data = {
        "sampling_rate": 24000,
        "downsample_rate": 1920,
        "causal_transformer_context_duration": 10,
        "encoder_kwargs": [],
        "quantizer_kwargs": {name: getattr(quantizer, name) for name in QuantizerConfig.__dataclass_fields__},
    }
    for patch, (inp, d, layers, heads, ff, out) in zip((240, 2, 2, 2), widths):
        data["encoder_kwargs"].append({"module_type": PATCH_MODULE, "patch_size": patch})
        data["encoder_kwargs"].append({
            "module_type": TRANSFORMER_MODULE, "input_dimension": inp, "d_model": d, "num_layers": layers,
            "num_heads": heads, "dim_feedforward": ff, "output_dimension": out, "layer_scale": 0.01,
            "max_period": 10000,
        })
    return MossConfig.from_official_dict(data)


OFFICIAL_CONFIG = _preset(
    [(240, 768, 12, 12, 3072, 384), (768, 768, 12, 12, 3072, 384),
     (768, 768, 12, 12, 3072, 640), (1280, 1280, 32, 20, 5120, 768)],
    QuantizerConfig(input_dim=768, rvq_dim=512, output_dim=768, num_quantizers=32, codebook_size=1024, codebook_dim=8),
)
TINY_CONFIG = _preset(
    [(240, 32, 1, 2, 64, 16), (32, 32, 1, 2, 64, 16), (32, 32, 1, 2, 64, 24), (48, 48, 1, 2, 96, 32)],
    QuantizerConfig(input_dim=32, rvq_dim=16, output_dim=32, num_quantizers=32, codebook_size=64, codebook_dim=4),
)
PRESETS = {"official": OFFICIAL_CONFIG, "tiny": TINY_CONFIG}


@dataclass(frozen=True)
class MossSource:
    """Where an encoder comes from: a preset (seeded random weights) or a local checkpoint folder."""

    name: str
    config: MossConfig
    weights_dir: Path | None  # None: seeded random weights, not a trained model

    @property
    def random_weights(self) -> bool:
        return self.weights_dir is None

    @property
    def weights_label(self) -> str:
        if self.weights_dir is None:
            return f"{RANDOM_WEIGHTS_MARKER} (seed {RANDOM_WEIGHTS_SEED}, not a trained model)"
        return f"checkpoint {self.weights_dir}"

    def metadata(self) -> dict[str, str]:
        return {"moss_source": self.name, "moss_weights": self.weights_label}


def resolve_moss(spec: str) -> MossSource:
    """``official`` / ``tiny`` (random-weight presets) or a folder with config.json + *.safetensors."""
    preset = spec.removesuffix("-random")
    if preset in PRESETS:
        return MossSource(name=f"{preset}-random", config=PRESETS[preset], weights_dir=None)
    folder = Path(spec)
    if not folder.is_dir():
        raise ValueError(f"MOSS config {spec!r} is not a preset ({', '.join(PRESETS)}) nor an existing folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder}: no config.json")
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{folder}: no *.safetensors weights")
    try:
        config = MossConfig.from_official_dict(json.loads(config_path.read_text()))
    except KeyError as error:
        raise ValueError(f"{config_path}: missing field {error}") from None
    return MossSource(name=str(folder), config=config, weights_dir=folder)


def moss_source_arg(spec: str) -> MossSource:
    """``argparse`` type for ``--moss-config``: a bad value becomes a usage error, not a traceback."""
    try:
        return resolve_moss(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
