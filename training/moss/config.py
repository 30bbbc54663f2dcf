"""Configuration of MOSS-Audio-Tokenizer: encoder, residual LFQ quantizer and (optionally) decoder.

Reads the official ``config.json`` layout (``encoder_kwargs`` / ``decoder_kwargs`` lists of module
dicts, ``quantizer_kwargs``) and knows three presets: ``official`` (the published architecture),
``small`` (the same stage types at ~25 M parameters, the codec we train on real music) and ``tiny``
(a scaled-down copy for tests). Presets carry no trained weights: models built from them get seeded
random weights and say so everywhere they are described.
"""
from __future__ import annotations

import argparse
import dataclasses
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
    # Latent -> waveform, mirroring the encoder; empty for encode-only configs (codes need no decoder).
    decoder_stages: tuple[StageConfig, ...] = ()

    def __post_init__(self) -> None:
        hop = 1
        width = 1  # the waveform is mono
        for index, stage in enumerate(self.stages):
            if isinstance(stage, PatchConfig):
                hop *= stage.patch_size
                width *= stage.patch_size
                continue
            _check_transformer("encoder", index, stage, width)
            width = stage.output_dim
        if hop != self.downsample_rate:
            raise ValueError(f"patch sizes multiply to {hop}, config says downsample_rate {self.downsample_rate}")
        if width != self.quantizer.input_dim:
            raise ValueError(f"encoder output width {width} != quantizer input_dim {self.quantizer.input_dim}")
        if not self.decoder_stages:
            return
        hop, width = 1, self.quantizer.output_dim
        for index, stage in enumerate(self.decoder_stages):
            if isinstance(stage, PatchConfig):  # unpatching: channels back into time
                if width % stage.patch_size:
                    raise ValueError(f"decoder module {index}: width {width} is not divisible by patch_size {stage.patch_size}")
                hop *= stage.patch_size
                width //= stage.patch_size
                continue
            _check_transformer("decoder", index, stage, width)
            width = stage.output_dim
        if hop != self.downsample_rate or width != 1:
            raise ValueError(f"decoder unpatches to {hop} samples x {width} channels per frame, need {self.downsample_rate} x 1")

    @property
    def has_decoder(self) -> bool:
        return bool(self.decoder_stages)

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
        """Parse the official config.json layout (``decoder_kwargs`` optional)."""
        sampling_rate = int(data["sampling_rate"])
        duration = float(data["causal_transformer_context_duration"])
        stages = _stages_from_dicts("encoder", data["encoder_kwargs"], float(sampling_rate), duration, downsampling=True)
        frame_rate = sampling_rate / int(data["downsample_rate"])
        decoder = _stages_from_dicts("decoder", data.get("decoder_kwargs") or [], frame_rate, duration, downsampling=False)
        q = dict(data["quantizer_kwargs"])
        quantizer_type = q.pop("quantizer_type", data.get("quantizer_type", "rlfq"))
        if quantizer_type not in _SUPPORTED_QUANTIZERS:
            raise ValueError(f"unsupported quantizer_type {quantizer_type!r}; supported: {_SUPPORTED_QUANTIZERS}")
        quantizer = QuantizerConfig(**{name: int(q[name]) for name in QuantizerConfig.__dataclass_fields__})
        return cls(
            sampling_rate=sampling_rate,
            downsample_rate=int(data["downsample_rate"]),
            context_duration=duration,
            stages=stages,
            quantizer=quantizer,
            decoder_stages=decoder,
        )

    def to_official_dict(self) -> dict[str, Any]:
        """The official config.json layout, readable by ``from_official_dict`` (decoder only if configured)."""
        data: dict[str, Any] = {
            "sampling_rate": self.sampling_rate,
            "downsample_rate": self.downsample_rate,
            "causal_transformer_context_duration": self.context_duration,
            "code_dim": self.quantizer.input_dim,
            "quantizer_type": "rlfq",
            "encoder_kwargs": [_stage_to_dict(stage) for stage in self.stages],
            "quantizer_kwargs": {
                name: getattr(self.quantizer, name) for name in QuantizerConfig.__dataclass_fields__
            },
        }
        if self.decoder_stages:
            data["decoder_kwargs"] = [_stage_to_dict(stage) for stage in self.decoder_stages]
        return data

    def without_decoder(self) -> MossConfig:
        return dataclasses.replace(self, decoder_stages=())


def _check_transformer(side: str, index: int, stage: TransformerConfig, width: int) -> None:
    if stage.input_dim != width:
        raise ValueError(f"{side} module {index}: input_dimension {stage.input_dim} != incoming width {width}")
    if stage.d_model % stage.num_heads or stage.head_dim % 2:
        raise ValueError(f"{side} module {index}: d_model {stage.d_model} / {stage.num_heads} heads must give an even head dim")


def _stages_from_dicts(side: str, entries: list[dict[str, Any]], rate: float, duration: float, downsampling: bool) -> tuple[StageConfig, ...]:
    """Module dicts -> stages; ``rate`` is the frame rate entering the first module (patches divide it
    on the encoder side and multiply it on the decoder side), which sets each stage's attention window."""
    stages: list[StageConfig] = []
    for index, entry in enumerate(entries):
        kind = entry.get("module_type")
        if kind == PATCH_MODULE:
            patch = int(entry["patch_size"])
            stages.append(PatchConfig(patch_size=patch))
            rate = rate / patch if downsampling else rate * patch
        elif kind == TRANSFORMER_MODULE:
            stages.append(_transformer_from_dict(f"{side} module {index}", entry, rate, duration))
        else:
            raise ValueError(f"{side} module {index}: unsupported module_type {kind!r}")
    return tuple(stages)


def _stage_to_dict(stage: StageConfig) -> dict[str, Any]:
    if isinstance(stage, PatchConfig):
        return {"module_type": PATCH_MODULE, "patch_size": stage.patch_size}
    return {
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
    }


def _transformer_from_dict(where: str, entry: dict[str, Any], frame_rate: float, duration: float) -> TransformerConfig:
    for option, expected in _REQUIRED_TRANSFORMER_OPTIONS.items():
        if option in entry and entry[option] != expected:
            raise ValueError(f"{where}: {option}={entry[option]!r} is not supported (need {expected!r})")
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


Widths = list[tuple[int, int, int, int, int, int]]  # per transformer: input, d_model, layers, heads, ff, output
ENCODER_PATCHES = (240, 2, 2, 2)
DECODER_UNPATCHES = (2, 2, 2, 240)


def _preset(encoder: Widths, quantizer: QuantizerConfig, decoder: Widths | None = None) -> MossConfig:
    """Four (patch, transformer) pairs with patch sizes 240, 2, 2, 2 at 24 kHz and a 10-s window, and
    optionally the mirrored decoder: four (transformer, unpatch) pairs with unpatch sizes 2, 2, 2, 240."""

    def transformer(inp: int, d: int, layers: int, heads: int, ff: int, out: int) -> dict[str, Any]:
        return {
            "module_type": TRANSFORMER_MODULE, "input_dimension": inp, "d_model": d, "num_layers": layers,
            "num_heads": heads, "dim_feedforward": ff, "output_dimension": out, "layer_scale": 0.01,
            "max_period": 10000,
        }

    data: dict[str, Any] = {
        "sampling_rate": 24000,
        "downsample_rate": 1920,
        "causal_transformer_context_duration": 10,
        "encoder_kwargs": [],
        "quantizer_kwargs": {name: getattr(quantizer, name) for name in QuantizerConfig.__dataclass_fields__},
    }
    for patch, widths in zip(ENCODER_PATCHES, encoder):
        data["encoder_kwargs"] += [{"module_type": PATCH_MODULE, "patch_size": patch}, transformer(*widths)]
    if decoder:
        data["decoder_kwargs"] = []
        for widths, patch in zip(decoder, DECODER_UNPATCHES):
            data["decoder_kwargs"] += [transformer(*widths), {"module_type": PATCH_MODULE, "patch_size": patch}]
    return MossConfig.from_official_dict(data)


OFFICIAL_CONFIG = _preset(
    [(240, 768, 12, 12, 3072, 384), (768, 768, 12, 12, 3072, 384),
     (768, 768, 12, 12, 3072, 640), (1280, 1280, 32, 20, 5120, 768)],
    QuantizerConfig(input_dim=768, rvq_dim=512, output_dim=768, num_quantizers=32, codebook_size=1024, codebook_dim=8),
    [(768, 1280, 32, 20, 5120, 1280), (640, 768, 12, 12, 3072, 768),
     (384, 768, 12, 12, 3072, 768), (384, 768, 12, 12, 3072, 240)],
)
# The codec we train here: MOSS's stage types, hop and codebooks at ~25 M parameters (encoder ~12.5 M),
# small enough to train within an hour of one GPU and to tokenize far above real time on a laptop CPU.
SMALL_CONFIG = _preset(
    [(240, 256, 3, 4, 1024, 128), (256, 256, 3, 4, 1024, 128),
     (256, 256, 3, 4, 1024, 192), (384, 384, 3, 6, 1536, 384)],
    QuantizerConfig(input_dim=384, rvq_dim=256, output_dim=384, num_quantizers=16, codebook_size=1024, codebook_dim=8),
    [(384, 384, 3, 6, 1536, 384), (192, 256, 3, 4, 1024, 256),
     (128, 256, 3, 4, 1024, 256), (128, 256, 3, 4, 1024, 240)],
)
TINY_CONFIG = _preset(
    [(240, 32, 1, 2, 64, 16), (32, 32, 1, 2, 64, 16), (32, 32, 1, 2, 64, 24), (48, 48, 1, 2, 96, 32)],
    QuantizerConfig(input_dim=32, rvq_dim=16, output_dim=32, num_quantizers=32, codebook_size=64, codebook_dim=4),
    [(32, 48, 1, 2, 96, 48), (24, 32, 1, 2, 64, 32), (16, 32, 1, 2, 64, 32), (16, 32, 1, 2, 64, 240)],
)
PRESETS = {"official": OFFICIAL_CONFIG, "small": SMALL_CONFIG, "tiny": TINY_CONFIG}


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
