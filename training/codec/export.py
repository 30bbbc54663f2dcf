"""`python -m training codec-export`: a codec-train state (or a checkpoint folder) -> the official layout.

The result (config.json + model.safetensors, or shards with an index) loads anywhere a MOSS
checkpoint folder does (``--moss-weights DIR``); float16 halves the file (what ships in models/),
and codes are computed in float32 after loading either way. ``--shards`` splits the weights for
transports that cap file sizes (the GPU machine returns files of at most 16 MB); exporting that
folder again with one shard gives the single file back. ``--encoder-only`` leaves the decoder out (half
the size, the same codes): what a machine that only tokenizes needs, such as a GPU machine reached
through a 64 MiB carry.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training.codec.train import STATE_FILE
from training.moss.codec import MossCodec
from training.moss.config import resolve_moss
from training.moss.model import MossEncoder
from training.moss.weights import build_codec, empty_codec, save_official_layout

DTYPES = {"float32": torch.float32, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", type=Path, default=Path("artifacts/codec") / STATE_FILE,
                        help="codec-train's state.pt, or a checkpoint folder (config.json + *.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write config.json + model.safetensors into")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--shards", type=int, default=1, help="number of safetensors files (default: %(default)s)")
    parser.add_argument("--encoder-only", action="store_true", help="write the encoder and quantizer only (codes, no decoding)")


def load_codec(path: Path) -> tuple[MossCodec, int | None]:
    """The codec in a codec-train state file (with its step) or in a checkpoint folder."""
    if path.is_dir():
        return build_codec(str(path)), None
    if not path.is_file():
        raise SystemExit(f"codec-export: no state or checkpoint folder at {path} (run codec-train first)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = empty_codec(resolve_moss(state["config"]["moss_config"]).config, "cpu")
    model.load_state_dict(state["model"])
    return model, state["step"]


def encoder_of(codec: MossCodec) -> MossEncoder:
    """The codec's encoder and quantizer as a plain encoder (same weights, so the same codes)."""
    encoder = MossEncoder(codec.config.without_decoder())
    encoder.load_state_dict({k: v for k, v in codec.state_dict().items() if not k.startswith("decoder.")})
    return encoder


def main(args: argparse.Namespace) -> int:
    model, step = load_codec(args.state)
    if args.encoder_only:
        model = encoder_of(model)
    save_official_layout(model, args.out, shards=args.shards, dtype=DTYPES[args.dtype])
    size = sum(p.stat().st_size for p in args.out.glob("*.safetensors"))
    print(json.dumps({"out": str(args.out), "step": step, "dtype": args.dtype, "bytes": size}))
    return 0
