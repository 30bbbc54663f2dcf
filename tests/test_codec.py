"""The MOSS-architecture codec: decoder geometry, official-layout round trips, training steps and resumed slices."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.yaml_config import from_dict
from training.audio_io import write_wav
from training.codec.data import CropSampler, list_audio
from training.codec.losses import ReconstructionLoss, si_sdr
from training.codec.train import CodecTrainConfig, CodecTrainer
from training.moss import OFFICIAL_CONFIG, SMALL_CONFIG, TINY_CONFIG, MossConfig, build_codec, build_encoder, empty_codec, save_official_layout
from training.moss.decoder import Unpatch
from training.moss.transformer import Patch
from training.music import synthesize_track

ROOT = Path(__file__).resolve().parents[1]


def test_unpatch_inverts_patch() -> None:
    x = torch.randn(2, 12, 5)
    for size in (2, 3, 4):
        assert torch.equal(Unpatch(size)(Patch(size)(x)), x)


@pytest.mark.parametrize("config", [TINY_CONFIG, SMALL_CONFIG, OFFICIAL_CONFIG], ids=["tiny", "small", "official"])
def test_config_round_trip_keeps_the_decoder(config: MossConfig) -> None:
    again = MossConfig.from_official_dict(json.loads(json.dumps(config.to_official_dict())))
    assert again == config and again.has_decoder


def test_official_decoder_has_as_many_parameters_as_the_encoder() -> None:
    model = empty_codec(OFFICIAL_CONFIG, "meta")
    assert model.decoder_parameter_count() == model.parameter_counts().encoder == 886_609_920


def test_decoder_window_grows_with_frame_rate() -> None:
    contexts = [stage.context for stage in TINY_CONFIG.decoder_stages if hasattr(stage, "context")]
    assert contexts == [125, 250, 500, 1000]


def test_decode_shapes_and_level_counts() -> None:
    codec = build_codec("tiny")
    audio = torch.randn(2, 1, 3 * 24000)
    codes, counts = codec(audio)
    assert codes.shape == (2, 32, 38) and counts.tolist() == [37, 37]
    for levels in (1, 8, 32):
        out = codec.decode(codes[:, :levels])
        assert out.shape == (2, 1, 38 * 1920) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        codec.decode(torch.zeros(1, 33, 4, dtype=torch.long))


def test_training_pass_codes_equal_inference_codes() -> None:
    codec = build_codec("tiny")
    audio = torch.randn(2, 1, 2 * 24000)
    out = codec.train_forward(audio, torch.tensor([32, 32]))
    codes, _ = codec(audio)
    assert torch.equal(out.codes, codes)
    # the straight-through update has the codebook rows' value: the reconstruction matches decode(codes)
    assert torch.allclose(out.reconstruction, codec.decode(codes), atol=1e-4)


def test_a_config_without_decoder_cannot_build_a_codec() -> None:
    with pytest.raises(ValueError, match="no decoder"):
        empty_codec(TINY_CONFIG.without_decoder(), "cpu")


def test_official_layout_save_load_gives_identical_codes_and_audio(tmp_path: Path) -> None:
    codec = build_codec("tiny")
    save_official_layout(codec, tmp_path, dtype=torch.float32)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "decoder_kwargs" in saved
    audio = torch.randn(1, 1, 2 * 24000)
    again = build_codec(str(tmp_path))
    codes, _ = codec(audio)
    assert torch.equal(again(audio)[0], codes)
    assert torch.equal(again.decode(codes), codec.decode(codes))
    # an encoder reads a codec checkpoint (decoder.* skipped) and computes the same codes
    assert torch.equal(build_encoder(str(tmp_path))(audio)[0], codes)


def test_si_sdr_and_reconstruction_loss_sanity() -> None:
    x = torch.randn(2, 24000)
    assert si_sdr(x, x).min() > 60
    assert si_sdr(torch.randn(2, 24000), x).max() < 0
    assert float(si_sdr(3.0 * x, x).min()) > 60  # scale-invariant
    terms = ReconstructionLoss()(x[:, None], x[:, None])
    assert float(terms["mel"]) == 0.0 and float(terms["stft"]) == 0.0


@pytest.fixture(scope="module")
def audio_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("codec_audio")
    for i in range(3):
        write_wav(root / f"t{i}.wav", synthesize_track(i, 6.0, seed=0))
    return root


def tiny_config(audio_root: Path, output: Path, **changes) -> CodecTrainConfig:
    config = from_dict(CodecTrainConfig, {
        "moss_config": "tiny", "output_dir": str(output), "batch_size": 3, "checkpoint_every": 1000, "log_every": 2,
        "data": {"audio_root": str(audio_root), "split": None, "crop_seconds": 0.5, "min_track_seconds": 1.0},
        "optim": {"warmup_steps": 2, "total_steps": 20, "lr": 0.003},
        "codebook": {"reset_every": 2},
    })
    return replace(config, **changes)


def test_one_training_step_lowers_the_loss(audio_root: Path, tmp_path: Path) -> None:
    trainer = CodecTrainer(tiny_config(audio_root, tmp_path), torch.device("cpu"))
    sampler = CropSampler(list_audio(audio_root, None), torch.device("cpu"), 1.0)
    audio = sampler.crops(3, 4 * 1920, (0.0, 0.0), torch.Generator().manual_seed(0))
    levels = torch.tensor([32, 32, 32])
    with torch.no_grad():
        before = float(trainer.losses(audio, levels)[0])
    trainer.train_on(audio, levels, lr=1e-3)
    with torch.no_grad():
        after = float(trainer.losses(audio, levels)[0])
    assert after < before


def test_resumed_slices_continue_exactly(audio_root: Path, tmp_path: Path) -> None:
    device = torch.device("cpu")
    sampler = CropSampler(list_audio(audio_root, None), device, 1.0)
    straight = CodecTrainer(tiny_config(audio_root, tmp_path / "straight"), device)
    straight.run(sampler, max_minutes=None, max_steps=6)

    first = CodecTrainer(tiny_config(audio_root, tmp_path / "sliced"), device)
    first.run(sampler, max_minutes=None, max_steps=3)
    second = CodecTrainer(tiny_config(audio_root, tmp_path / "sliced"), device)
    assert second.resume() and second.step == 3
    second.run(sampler, max_minutes=None, max_steps=3)

    assert second.step == straight.step == 6
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    last = {k: v for k, v in second.history[-1].items() if k != "elapsed_s"}
    assert last == {k: v for k, v in straight.history[-1].items() if k != "elapsed_s"}
    assert any("entropy_level0" in row for row in second.history)  # the usage window was summarised
    assert (tmp_path / "sliced" / "history.png").is_file()
    assert (tmp_path / "sliced" / "latest" / "model.safetensors").is_file()


def test_resume_refuses_another_config(audio_root: Path, tmp_path: Path) -> None:
    device = torch.device("cpu")
    sampler = CropSampler(list_audio(audio_root, None), device, 1.0)
    CodecTrainer(tiny_config(audio_root, tmp_path), device).run(sampler, None, 1)
    other = CodecTrainer(tiny_config(audio_root, tmp_path, batch_size=2), device)
    with pytest.raises(SystemExit, match="another config"):
        other.resume()


def test_codec_export_cli_writes_a_loadable_float16_checkpoint(audio_root: Path, tmp_path: Path) -> None:
    device = torch.device("cpu")
    sampler = CropSampler(list_audio(audio_root, None), device, 1.0)
    trainer = CodecTrainer(tiny_config(audio_root, tmp_path / "run"), device)
    trainer.run(sampler, None, 1)
    out = tmp_path / "shipped"
    subprocess.run([sys.executable, "-m", "training", "codec-export", "--state", str(tmp_path / "run" / "state.pt"),
                    "--out", str(out), "--dtype", "float16"], check=True, cwd=ROOT, capture_output=True)
    loaded = build_codec(str(out))
    audio = torch.randn(1, 1, 24000)
    reference = trainer.model.eval()
    with torch.no_grad():
        rounded = empty_codec(TINY_CONFIG, "cpu")
        rounded.load_state_dict({k: v.half().float() for k, v in reference.state_dict().items()})
    assert torch.equal(loaded(audio)[0], rounded(audio)[0])
    # a checkpoint folder exports too: sharded for a size-capped transport, and back to one file
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    for source, target, shards in ((out, sharded, "2"), (sharded, single, "1")):
        subprocess.run([sys.executable, "-m", "training", "codec-export", "--state", str(source), "--out", str(target),
                        "--shards", shards], check=True, cwd=ROOT, capture_output=True)
    assert len(list(sharded.glob("*.safetensors"))) == 2 and [p.name for p in single.glob("*.safetensors")] == ["model.safetensors"]
    assert torch.equal(build_codec(str(single))(audio)[0], rounded(audio)[0])
    # --encoder-only: no decoder keys or config, the same codes
    encoder_only = tmp_path / "encoder-only"
    subprocess.run([sys.executable, "-m", "training", "codec-export", "--state", str(out), "--out", str(encoder_only), "--encoder-only"],
                   check=True, cwd=ROOT, capture_output=True)
    assert "decoder_kwargs" not in json.loads((encoder_only / "config.json").read_text())
    assert not [k for k in load_file(str(encoder_only / "model.safetensors")) if k.startswith("decoder.")]
    assert torch.equal(build_encoder(str(encoder_only))(audio)[0], rounded(audio)[0])


def test_codec_train_cli_reports_missing_audio(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "training", "codec-train", "--audio-root", str(tmp_path / "none"),
                             "--output-dir", str(tmp_path / "out"), "--split", "none", "--max-steps", "1"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "no training audio" in result.stderr


def test_the_shipped_small_codec_loads_strictly_in_the_official_layout() -> None:
    folder = ROOT / "models" / "moss-small"
    codec = build_codec(str(folder))
    assert codec.config == SMALL_CONFIG
    audio = torch.randn(1, 1, 24000) * 0.1
    codes, counts = codec(audio)
    assert codes.shape == (1, 16, 13) and counts.tolist() == [12]
    assert torch.equal(build_encoder(str(folder))(audio)[0], codes)


def test_a_run_can_start_from_a_saved_codec_and_refuses_another_architecture(audio_root: Path, tmp_path: Path) -> None:
    device = torch.device("cpu")
    sampler = CropSampler(list_audio(audio_root, None), device, 1.0)
    first = CodecTrainer(tiny_config(audio_root, tmp_path / "first"), device)
    first.run(sampler, None, 2)
    started = CodecTrainer(tiny_config(audio_root, tmp_path / "second", init_from=str(tmp_path / "first" / "latest")), device)
    assert started.step == 0
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, started.model.state_dict()[key]), key
    fresh = CodecTrainer(tiny_config(audio_root, tmp_path / "third"), device)
    assert not all(torch.equal(v, fresh.model.state_dict()[k]) for k, v in first.model.state_dict().items())
    with pytest.raises(SystemExit, match="another architecture"):
        CodecTrainer(tiny_config(audio_root, tmp_path / "fourth", moss_config="small", init_from=str(tmp_path / "first" / "latest")), device)
    with pytest.raises(SystemExit, match="init_from: .*nothing"):
        CodecTrainer(tiny_config(audio_root, tmp_path / "fifth", init_from=str(tmp_path / "nothing")), device)
    with pytest.raises(SystemExit, match="preset"):
        CodecTrainer(tiny_config(audio_root, tmp_path / "sixth", init_from="tiny"), device)
