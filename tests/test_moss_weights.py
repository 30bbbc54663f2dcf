"""Official-layout safetensors checkpoints: round trips, sharding, key variants, strict errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from training.moss import (
    CheckpointMismatchError,
    MossEncoder,
    build_encoder,
    load_official_weights,
    resolve_moss,
    save_official_layout,
)
from training.moss.weights import INDEX_FILE, empty_encoder


@pytest.fixture(scope="module")
def encoder() -> MossEncoder:
    return build_encoder("tiny")


@pytest.fixture(scope="module")
def waveform() -> torch.Tensor:
    return 0.3 * torch.randn(2, 1, 2 * 24000, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def expected_codes(encoder: MossEncoder, waveform: torch.Tensor) -> torch.Tensor:
    return encoder(waveform)[0]


def rewrite_keys(folder: Path, rename: dict[str, str]) -> None:
    """Rename keys in place in an unsharded checkpoint (to write the variant spellings)."""
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    save_file({rename.get(k, k): v for k, v in tensors.items()}, str(path))


def assert_same_model(folder: Path, encoder: MossEncoder, waveform: torch.Tensor, expected: torch.Tensor) -> None:
    loaded = build_encoder(str(folder))
    assert not loaded.training
    reference = encoder.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    assert torch.equal(loaded(waveform)[0], expected)


def test_unsharded_round_trip_uses_official_names(tmp_path: Path, encoder: MossEncoder, waveform: torch.Tensor,
                                                  expected_codes: torch.Tensor) -> None:
    save_official_layout(encoder, tmp_path)
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert "encoder.1.transformer.layers.0.self_attn.in_projs.0.weight" in keys
    assert "encoder.7.transformer.layers.0.self_attn.out_projs.0.weight" in keys
    assert "quantizer.quantizers.31.in_proj.parametrizations.weight.original0" in keys
    assert "encoder.3.input_proj.weight" not in keys  # equal widths: no projection
    assert json.loads((tmp_path / "config.json").read_text())["quantizer_kwargs"]["num_quantizers"] == 32
    source = resolve_moss(str(tmp_path))
    assert not source.random_weights and "RANDOM" not in source.weights_label
    assert_same_model(tmp_path, encoder, waveform, expected_codes)


def test_sharded_round_trip_skips_decoder(tmp_path: Path, encoder: MossEncoder, waveform: torch.Tensor,
                                          expected_codes: torch.Tensor) -> None:
    save_official_layout(encoder, tmp_path, shards=3)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) == 3
    # A decoder tensor in its own shard, listed in the index, must be ignored.
    save_file({"decoder.0.weight": torch.zeros(3)}, str(tmp_path / "decoder.safetensors"))
    index["weight_map"]["decoder.0.weight"] = "decoder.safetensors"
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    assert_same_model(tmp_path, encoder, waveform, expected_codes)


def test_several_files_without_index(tmp_path: Path, encoder: MossEncoder, waveform: torch.Tensor,
                                     expected_codes: torch.Tensor) -> None:
    save_official_layout(encoder, tmp_path, shards=2)
    (tmp_path / INDEX_FILE).unlink()
    save_file({"decoder.1.transformer.layers.0.norm1.weight": torch.ones(4)}, str(tmp_path / "extra.safetensors"))
    assert_same_model(tmp_path, encoder, waveform, expected_codes)


def test_variant_key_spellings(tmp_path: Path, encoder: MossEncoder, waveform: torch.Tensor,
                               expected_codes: torch.Tensor) -> None:
    save_official_layout(encoder, tmp_path)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    rename = {}
    for key in keys:
        new = key.replace(".parametrizations.weight.original0", ".weight_g")
        new = new.replace(".parametrizations.weight.original1", ".weight_v")
        # Both single-tensor attention spellings, on different stages.
        new = new.replace("encoder.1.transformer.layers.0.self_attn.in_projs.0.weight",
                          "encoder.1.transformer.layers.0.self_attn.in_proj_weight")
        new = new.replace("encoder.3.transformer.layers.0.self_attn.in_projs.0.weight",
                          "encoder.3.transformer.layers.0.self_attn.in_proj.weight")
        new = new.replace("encoder.5.transformer.layers.0.self_attn.out_projs.0.weight",
                          "encoder.5.transformer.layers.0.self_attn.out_proj.weight")
        rename[key] = new
    rewrite_keys(tmp_path, rename)
    assert "quantizer.input_proj.weight_g" in load_file(str(tmp_path / "model.safetensors"))
    assert_same_model(tmp_path, encoder, waveform, expected_codes)


def test_strict_loader_lists_every_problem(tmp_path: Path, encoder: MossEncoder) -> None:
    save_official_layout(encoder, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["encoder.7.transformer.layers.0.linear1.weight"]
    tensors["encoder.3.input_proj.weight"] = torch.zeros(32, 32)
    tensors["quantizer.quantizers.2.codebook.weight"] = torch.zeros(65, 4)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as error:
        load_official_weights(empty_encoder(encoder.config, "cpu"), tmp_path)
    message = str(error.value)
    assert "missing (1)" in message and "encoder.7.transformer.layers.0.linear1.weight" in message
    assert "unexpected (1)" in message and "encoder.3.input_proj.weight" in message
    assert "wrong shape (1)" in message and "quantizer.quantizers.2.codebook.weight: checkpoint [65, 4], model [64, 4]" in message


def test_duplicate_spellings_are_rejected(tmp_path: Path, encoder: MossEncoder) -> None:
    save_official_layout(encoder, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    name = "encoder.1.transformer.layers.0.self_attn.in_projs.0.weight"
    tensors["encoder.1.transformer.layers.0.self_attn.in_proj_weight"] = tensors[name].clone()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="given twice"):
        load_official_weights(empty_encoder(encoder.config, "cpu"), tmp_path)


def test_folder_without_config_or_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        resolve_moss(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(build_encoder("tiny").config.to_official_dict()))
    with pytest.raises(ValueError, match="safetensors"):
        resolve_moss(str(tmp_path))
