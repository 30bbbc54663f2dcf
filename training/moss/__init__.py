"""MOSS-Audio-Tokenizer (waveform -> residual-LFQ codes, and the decoder back), implemented from its specification."""
from __future__ import annotations

from training.moss.attention import AttentionFn, apply_rope, sliding_window_mask, windowed_causal_attention
from training.moss.config import (
    OFFICIAL_CONFIG,
    PRESETS,
    SMALL_CONFIG,
    RANDOM_WEIGHTS_MARKER,
    TINY_CONFIG,
    MossConfig,
    MossSource,
    PatchConfig,
    QuantizerConfig,
    TransformerConfig,
    resolve_moss,
)
from training.moss.codec import CodecOutput, MossCodec
from training.moss.model import MossEncoder, ParameterCounts, validate_inputs
from training.moss.quantizer import nearest_code
from training.moss.weights import (
    CheckpointMismatchError,
    build_codec,
    build_encoder,
    empty_codec,
    empty_encoder,
    init_codec_weights,
    init_random_weights,
    load_official_weights,
    save_official_layout,
)

__all__ = [
    "AttentionFn", "apply_rope", "sliding_window_mask", "windowed_causal_attention",
    "OFFICIAL_CONFIG", "PRESETS", "SMALL_CONFIG", "CodecOutput", "MossCodec", "RANDOM_WEIGHTS_MARKER", "TINY_CONFIG", "MossConfig", "MossSource",
    "PatchConfig", "QuantizerConfig", "TransformerConfig", "resolve_moss",
    "MossEncoder", "ParameterCounts", "validate_inputs", "nearest_code",
    "CheckpointMismatchError", "build_codec", "build_encoder", "empty_codec", "empty_encoder",
    "init_codec_weights", "init_random_weights",
    "load_official_weights", "save_official_layout",
]
