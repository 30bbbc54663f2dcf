"""MOSS-Audio-Tokenizer encode path (waveform -> residual-LFQ codes), implemented from its specification."""
from __future__ import annotations

from training.moss.attention import AttentionFn, apply_rope, sliding_window_mask, windowed_causal_attention
from training.moss.config import (
    OFFICIAL_CONFIG,
    PRESETS,
    RANDOM_WEIGHTS_MARKER,
    TINY_CONFIG,
    MossConfig,
    MossSource,
    PatchConfig,
    QuantizerConfig,
    TransformerConfig,
    resolve_moss,
)
from training.moss.model import MossEncoder, ParameterCounts, validate_inputs
from training.moss.quantizer import nearest_code
from training.moss.weights import (
    CheckpointMismatchError,
    build_encoder,
    empty_encoder,
    init_random_weights,
    load_official_weights,
    save_official_layout,
)

__all__ = [
    "AttentionFn", "apply_rope", "sliding_window_mask", "windowed_causal_attention",
    "OFFICIAL_CONFIG", "PRESETS", "RANDOM_WEIGHTS_MARKER", "TINY_CONFIG", "MossConfig", "MossSource",
    "PatchConfig", "QuantizerConfig", "TransformerConfig", "resolve_moss",
    "MossEncoder", "ParameterCounts", "validate_inputs", "nearest_code",
    "CheckpointMismatchError", "build_encoder", "empty_encoder", "init_random_weights",
    "load_official_weights", "save_official_layout",
]
