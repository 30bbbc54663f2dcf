"""`python -m training moss-info`: parameter counts and frame geometry of a MOSS encoder config."""
from __future__ import annotations

import argparse

from training.moss.config import MossSource, moss_source_arg
from training.moss.weights import empty_codec, empty_encoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--moss-config", type=moss_source_arg, default="official",
        help="'official', 'small' or 'tiny' (architecture presets, random weights) or a folder with config.json + *.safetensors",
    )


def describe(source: MossSource) -> str:
    """The report printed by moss-info; the encoder is built on the meta device, so it costs no memory."""
    config = source.config
    counts = empty_encoder(config, "meta").parameter_counts()
    windows = " / ".join(str(stage.context) for _, stage in config.transformers)
    rows = [
        ("moss config", source.name),
        ("weights", source.weights_label),
        ("sampling rate", f"{config.sampling_rate} Hz"),
        ("hop", f"{config.hop} samples"),
        ("frames per second", f"{config.frame_rate:g}"),
        ("quantizer levels", str(config.quantizer.num_quantizers)),
        ("codebook size", f"{config.quantizer.codebook_size} x {config.quantizer.codebook_dim}"),
        ("attention windows", f"{windows} frames"),
        ("parameters encoder", f"{counts.encoder:,}"),
        ("parameters quantizer", f"{counts.quantizer:,} (decoder-side output projection: {counts.quantizer_output_proj:,})"),
        ("parameters total", f"{counts.total:,} (encode path)"),
    ]
    if config.has_decoder:
        rows.append(("parameters decoder", f"{empty_codec(config, 'meta').decoder_parameter_count():,}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(args: argparse.Namespace) -> int:
    print(describe(args.moss_config))
    return 0
