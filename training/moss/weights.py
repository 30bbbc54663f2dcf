"""Weights of MOSS models: seeded random init, strict loading of official checkpoints, saving in their layout.

Checkpoints are read from a local folder only (``config.json`` + ``*.safetensors``, optionally
sharded with ``model.safetensors.index.json``); nothing is downloaded and no remote code runs.
An encoder reads only ``encoder.*`` and ``quantizer.*`` keys (a codec checkpoint's decoder is
skipped); a codec (``MossCodec``) also reads ``decoder.*``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from training.moss.codec import MossCodec
from training.moss.config import RANDOM_WEIGHTS_SEED, MossConfig, MossSource, resolve_moss
from training.moss.model import MossEncoder
from training.moss.quantizer import PointwiseConv
from training.moss.transformer import LayerScale

ENCODE_PREFIXES = ("encoder.", "quantizer.")
CODEC_PREFIXES = (*ENCODE_PREFIXES, "decoder.")
INDEX_FILE = "model.safetensors.index.json"
_MAX_LISTED = 20

# Checkpoint spellings -> this model's parameter names. The first two rules are also
# the official spelling that ``save_official_layout`` writes back.
_TO_MODEL = [
    (re.compile(r"\.self_attn\.in_projs\.0\.weight$"), ".self_attn.in_proj.weight"),
    (re.compile(r"\.self_attn\.out_projs\.0\.weight$"), ".self_attn.out_proj.weight"),
    (re.compile(r"\.self_attn\.in_proj_weight$"), ".self_attn.in_proj.weight"),
    (re.compile(r"\.weight_g$"), ".parametrizations.weight.original0"),
    (re.compile(r"\.weight_v$"), ".parametrizations.weight.original1"),
]
_TO_OFFICIAL = [
    (re.compile(r"\.self_attn\.in_proj\.weight$"), ".self_attn.in_projs.0.weight"),
    (re.compile(r"\.self_attn\.out_proj\.weight$"), ".self_attn.out_projs.0.weight"),
]


class CheckpointMismatchError(ValueError):
    """The checkpoint's encoder/quantizer tensors do not match the configured model."""


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, replacement in rules:
        key, count = pattern.subn(replacement, key)
        if count:
            return key
    return key


def model_key(checkpoint_key: str) -> str:
    return _rename(checkpoint_key, _TO_MODEL)


def official_key(model_key_: str) -> str:
    return _rename(model_key_, _TO_OFFICIAL)


def _prefixes(model: MossEncoder) -> tuple[str, ...]:
    return CODEC_PREFIXES if isinstance(model, MossCodec) else ENCODE_PREFIXES


def empty_encoder(config: MossConfig, device: str | torch.device = "meta") -> MossEncoder:
    """An encoder with uninitialised storage (no memory at all on ``meta``): fill it before use."""
    return _empty(MossEncoder, config, device)


def empty_codec(config: MossConfig, device: str | torch.device = "meta") -> MossCodec:
    """A codec (encoder + quantizer + decoder) with uninitialised storage: fill it before use."""
    return _empty(MossCodec, config, device)


def _empty(cls: type[MossEncoder], config: MossConfig, device: str | torch.device) -> MossEncoder:
    with torch.device("meta"):
        model = cls(config)
    return model if torch.device(device).type == "meta" else model.to_empty(device=device)


def init_random_weights(model: MossEncoder, seed: int = RANDOM_WEIGHTS_SEED) -> None:
    """Fill every parameter from a private generator: the same weights in every process.

    Layer scales and norms are drawn too (not left at 0.01 / 1 / 0) so that every branch
    visibly moves the codes, and quantizer biases stay small so the codes (directions
    of normalised vectors) follow the input rather than the bias: tests of a
    random-weight model need codes that react to what they test.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: Tensor, fan_in: int) -> None:
        bound = 1.0 / math.sqrt(fan_in)
        tensor.uniform_(-bound, bound, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                uniform(module.weight, module.in_features)
            elif isinstance(module, nn.LayerNorm):
                module.weight.normal_(1.0, 0.1, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
            elif isinstance(module, LayerScale):
                module.scale.uniform_(0.0, 1.0, generator=generator)
            elif isinstance(module, PointwiseConv):
                weight = module.parametrizations.weight
                uniform(weight.original1, weight.original1.shape[1])
                weight.original0.copy_(weight.original1.norm(dim=(1, 2), keepdim=True))
                module.bias.uniform_(-0.01, 0.01, generator=generator)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 1.0, generator=generator)


def _checkpoint_files(folder: Path) -> dict[Path, set[str] | None]:
    """Files to read and, for a sharded index, which keys each file is the owner of (None: all)."""
    index = folder / INDEX_FILE
    if index.is_file():
        owners: dict[Path, set[str]] = {}
        for key, name in json.loads(index.read_text())["weight_map"].items():
            owners.setdefault(folder / name, set()).add(key)
        return {path: keys for path, keys in owners.items()}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatchError(f"{folder}: no *.safetensors files")
    return {path: None for path in files}


def init_codec_weights(model: MossCodec, seed: int) -> None:
    """The starting point for training a codec from scratch: small normal linears, unit norms, layer
    scales at the config's value, weight-normalised convs with ``g = |v|`` and zero bias, and
    codebooks drawn like the vectors their level's input projection produces at the start."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.02, generator=generator)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, LayerScale):
                module.scale.fill_(module.init)
            elif isinstance(module, PointwiseConv):
                weight = module.parametrizations.weight
                fan_in = weight.original1.shape[1]
                weight.original1.normal_(0.0, fan_in ** -0.5, generator=generator)
                weight.original0.copy_(weight.original1.norm(dim=(1, 2), keepdim=True))
                module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 1.0, generator=generator)


def read_encode_tensors(folder: str | Path, prefixes: tuple[str, ...] = ENCODE_PREFIXES) -> dict[str, Tensor]:
    """The tensors of a local checkpoint whose names start with ``prefixes``, under their checkpoint names."""
    folder = Path(folder)
    tensors: dict[str, Tensor] = {}
    duplicates: list[str] = []
    for path, owned in _checkpoint_files(folder).items():
        if not path.is_file():
            raise CheckpointMismatchError(f"{folder}: {INDEX_FILE} names {path.name}, which does not exist")
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                if not key.startswith(prefixes) or (owned is not None and key not in owned):
                    continue
                if key in tensors:
                    duplicates.append(f"{key} ({path.name})")
                tensors[key] = handle.get_tensor(key)
    if duplicates:
        raise CheckpointMismatchError(f"{folder}: tensors stored twice: {', '.join(duplicates[:_MAX_LISTED])}")
    return tensors


def _listing(title: str, items: list[str]) -> str:
    shown = "\n    ".join(items[:_MAX_LISTED])
    more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}):\n    {shown}{more}"


def load_official_weights(model: MossEncoder, folder: str | Path) -> None:
    """Strictly load a checkpoint folder into ``model``: every name and shape must match, in one report."""
    expected = model.state_dict()
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    problems: dict[str, list[str]] = {"missing": [], "unexpected": [], "wrong shape": [], "given twice": []}
    for key, tensor in read_encode_tensors(folder, _prefixes(model)).items():
        name = model_key(key)
        if name in state:
            problems["given twice"].append(f"{key} and {origin[name]}")
        state[name], origin[name] = tensor, key
    problems["missing"] = sorted(official_key(k) for k in expected.keys() - state.keys())
    problems["unexpected"] = sorted(origin[k] for k in state.keys() - expected.keys())
    problems["wrong shape"] = sorted(
        f"{origin[k]}: checkpoint {list(state[k].shape)}, model {list(expected[k].shape)}"
        for k in state.keys() & expected.keys()
        if state[k].shape != expected[k].shape
    )
    if any(problems.values()):
        report = "\n".join(_listing(title, items) for title, items in problems.items() if items)
        raise CheckpointMismatchError(f"checkpoint {folder} does not match the MOSS {type(model).__name__} config:\n{report}")
    # assign: the checkpoint's tensors become the parameters, so a meta-device model loads without a second copy.
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True, assign=True)


def save_official_layout(model: MossEncoder, folder: str | Path, shards: int = 1, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``config.json`` + safetensors under official key names (sharded with an index if ``shards > 1``).

    A plain encoder writes the encode side of its config; a codec writes its decoder too.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config if isinstance(model, MossCodec) else model.config.without_decoder()
    (folder / "config.json").write_text(json.dumps(config.to_official_dict(), indent=2))
    tensors = {official_key(k): v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
        return folder
    keys = list(tensors)
    per_shard = math.ceil(len(keys) / shards)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = keys[i * per_shard:(i + 1) * per_shard]
        save_file({k: tensors[k] for k in chunk}, str(folder / name))
        weight_map.update(dict.fromkeys(chunk, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return folder


def build_encoder(spec: str | MossSource, device: str | torch.device = "cpu") -> MossEncoder:
    """Eval-mode encoder: presets get seeded random weights, folders their checkpoint."""
    return _build(MossEncoder, spec, device)


def build_codec(spec: str | MossSource, device: str | torch.device = "cpu") -> MossCodec:
    """Eval-mode codec (needs a config with ``decoder_kwargs``): presets random, folders their checkpoint."""
    return _build(MossCodec, spec, device)


def _build(cls: type[MossEncoder], spec: str | MossSource, device: str | torch.device) -> MossEncoder:
    source = resolve_moss(spec) if isinstance(spec, str) else spec
    if source.weights_dir is None:
        model = _empty(cls, source.config, "cpu")
        init_random_weights(model)
    else:
        model = _empty(cls, source.config, "meta")
        load_official_weights(model, source.weights_dir)
    return model.to(device).eval()
