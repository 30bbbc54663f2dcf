"""`python -m training codec-export`: a codec-train state -> the official layout (config.json + model.safetensors).

The result loads anywhere a MOSS checkpoint folder does (``--moss-weights DIR``); float16 halves the
file (what ships in models/), and codes are computed in float32 after loading either way.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training.codec.train import STATE_FILE
from training.moss.config import MossConfig, resolve_moss
from training.moss.weights import empty_codec, save_official_layout

DTYPES = {"float32": torch.float32, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", type=Path, default=Path("artifacts/codec") / STATE_FILE, help="codec-train's state.pt")
    parser.add_argument("--out", type=Path, required=True, help="folder to write config.json + model.safetensors into")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")


def main(args: argparse.Namespace) -> int:
    if not args.state.is_file():
        raise SystemExit(f"codec-export: no state at {args.state} (run codec-train first)")
    state = torch.load(args.state, map_location="cpu", weights_only=False)
    config: MossConfig = resolve_moss(state["config"]["moss_config"]).config
    model = empty_codec(config, "cpu")
    model.load_state_dict(state["model"])
    save_official_layout(model, args.out, dtype=DTYPES[args.dtype])
    size = sum(p.stat().st_size for p in args.out.glob("*.safetensors"))
    print(json.dumps({"out": str(args.out), "step": state["step"], "dtype": args.dtype, "bytes": size}))
    return 0
