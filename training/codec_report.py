"""`python -m training codec-report`: is a MOSS tokenizer a good codec, and are its codes stable?

On held-out real music (the corpus's test split; generated audio when there is no corpus, and
the JSON says so), for the given tokenizer and, side by side, the tiny RANDOM-weight encoder:
reconstruction (log-mel distance, SI-SDR) from the first 8 and from all levels where the model
has a decoder; codebook health per level (codes in use, entropy); and per level the share of
unchanged codes, against chance, under sample shifts, excerpts tokenized alone (frame-aligned
and at arbitrary sample offsets, as a curve over the distance from the excerpt's start), pink
noise, reverb, phone EQ and Ogg re-encoding. Writes the JSON (layout in docs/contracts.md) and
two PNGs beside it.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE, AudioError, load_audio
from training.code_stability import (
    FrameAgreement,
    Probe,
    chance_agreement,
    degrade_probe,
    excerpt_probe,
    measure_probes,
    noise_probe,
    shift_probe,
)
from training.codec.health import CodeUsage, entropy_bits
from training.codec.losses import log_mel_distance, si_sdr
from training.conditions import OGG_QUALITY
from training.encode import HOP, encode_clips
from training.moss.codec import MossCodec
from training.moss.config import MossSource, resolve_moss
from training.moss.weights import CheckpointMismatchError, build_codec, build_encoder
from training.reencode import ogg_roundtrip
from training.splits import SPLIT_NAMES, manifest_splits
from training.synth import synthesize_track
from training.tokenize import add_moss_arguments, moss_spec
from training.train import resolve_device

BASELINE = "tiny"  # the random-weight encoder every report is set beside
SHIFTS = (1, 15, 480, 960)
PINK_SNR_DB = (20, 10, 0)
FEW_LEVELS = 8
STABLE_FROM_S = 2.0  # excerpt frames this far from the start are summarised on their own
SPECTROGRAM_CLIPS = 3
SPECTROGRAM_SECONDS = 6.0


@dataclass
class HeldOut:
    """The clips measured and where they came from."""

    clips: list[np.ndarray]
    track_ids: list[str]
    source: str  # "corpus" | "generated"
    note: str
    skipped: list[dict] = field(default_factory=list)


@dataclass
class Reconstruction:
    levels: int
    mel_distance: float
    si_sdr_db: float
    examples: list[np.ndarray]  # the last SPECTROGRAM_SECONDS of the first SPECTROGRAM_CLIPS clips


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-json", type=Path, default=Path("reports/codec.json"), help="PNGs are written beside it")
    parser.add_argument("--corpus", type=Path, default=Path("artifacts/corpus"), help="folder with manifest.csv and audio/<track_id>.wav")
    parser.add_argument("--split", default="test", help="corpus split to measure on")
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured segment per track (its middle)")
    parser.add_argument("--excerpt-start", type=float, default=5.0, help="seconds into the segment where the excerpts start")
    parser.add_argument("--seed", type=int, default=5, help="track choice, noise, rooms, EQ and excerpt offsets")
    add_moss_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.tracks < 1 or args.seconds <= 0 or args.n_quantizers < 1:
        raise SystemExit("error: --tracks and --n-quantizers must be >= 1 and --seconds > 0")
    start_frame = int(round(args.excerpt_start * SAMPLE_RATE / HOP))
    stable_from = int(round(STABLE_FROM_S * SAMPLE_RATE / HOP))
    if start_frame < 1 or (start_frame + stable_from) * HOP >= args.seconds * SAMPLE_RATE:
        raise SystemExit(f"error: --excerpt-start must be at least one frame and leave more than {STABLE_FROM_S:g} s of the {args.seconds:g}-s segment")
    try:
        sources = tokenizer_sources(moss_spec(args))
        held_out = load_held_out(args.corpus, args.split, args.tracks, args.seconds, args.seed)
    except (ValueError, OSError) as error:
        raise SystemExit(f"error: {error}") from None
    device = resolve_device(args.device)
    probes = stability_probes(start_frame)
    report = {
        "data": {
            "source": held_out.source,
            "note": held_out.note,
            "tracks": len(held_out.clips),
            "track_ids": held_out.track_ids,
            "seconds_per_track": round(len(held_out.clips[0]) / SAMPLE_RATE, 3),
            "total_seconds": round(sum(len(c) for c in held_out.clips) / SAMPLE_RATE, 3),
            "skipped": held_out.skipped,
        },
        "seed": args.seed,
        "hop": HOP,
        "frame_rate_hz": SAMPLE_RATE / HOP,
        "conditions": [p.name for p in probes],
        "excerpt": {"start_s": start_frame * HOP / SAMPLE_RATE, "start_frame": start_frame, "stable_from_s": STABLE_FROM_S, "stable_from_frame": stable_from},
        "ogg_quality": OGG_QUALITY,
        "tokenizers": {},
    }
    examples: dict[str, list[np.ndarray]] = {}
    for role, source in sources.items():
        try:
            entry, recon = measure_tokenizer(source, held_out.clips, probes, stable_from, args, device)
        except CheckpointMismatchError as error:
            raise SystemExit(f"error: {error}") from None
        report["tokenizers"][role] = entry
        if role == "tokenizer" and recon:
            examples = {f"{r.levels} levels": r.examples for r in recon}
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    args.output_json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    from training.codec_plots import plot_spectrograms, plot_stability

    plot_stability(report, args.output_json.with_suffix(".png"))
    spectrograms = args.output_json.with_name(f"{args.output_json.stem}_spectrograms.png")
    if examples:
        originals = [clip[-int(SPECTROGRAM_SECONDS * SAMPLE_RATE) :] for clip in held_out.clips[:SPECTROGRAM_CLIPS]]
        plot_spectrograms(originals, held_out.track_ids, examples, spectrograms)
    print_summary(report)
    return 0


def tokenizer_sources(spec: str) -> dict[str, MossSource]:
    """The tokenizer asked for and the random baseline (once, when they are the same)."""
    tokenizer, baseline = resolve_moss(spec), resolve_moss(BASELINE)
    return {"tokenizer": tokenizer} if tokenizer.name == baseline.name else {"tokenizer": tokenizer, "random": baseline}


def stability_probes(excerpt_start_frame: int) -> list[Probe]:
    return [
        *(shift_probe(s) for s in SHIFTS),
        excerpt_probe("excerpt_aligned", excerpt_start_frame),
        excerpt_probe("excerpt_offset", excerpt_start_frame, sample_offset=True),
        *(noise_probe("pink", snr) for snr in PINK_SNR_DB),
        degrade_probe("reverb"),
        degrade_probe("eq"),
        Probe("ogg", lambda x, rng: (ogg_roundtrip(x, OGG_QUALITY), 0)),
    ]


def load_held_out(corpus: Path, split: str, tracks: int, seconds: float, seed: int) -> HeldOut:
    """The middle ``seconds`` (whole frames) of ``tracks`` seeded-random corpus tracks of ``split``; generated
    music when the corpus has no manifest."""
    samples = int(seconds * SAMPLE_RATE) // HOP * HOP
    if samples < HOP:
        raise ValueError(f"--seconds {seconds:g} is shorter than one {HOP}-sample frame")
    manifest = corpus / "manifest.csv"
    if not manifest.is_file():
        clips = [synthesize_track(i, samples / SAMPLE_RATE, seed)[:samples] for i in tqdm(range(tracks), desc="generate", unit="track")]
        note = f"no corpus manifest at {manifest}: GENERATED audio (training.synth, seed {seed}), not real music"
        return HeldOut(clips, [f"generated_{i:05d}" for i in range(tracks)], "generated", note)
    if split not in SPLIT_NAMES:
        raise ValueError(f"--split {split!r}: expected one of {SPLIT_NAMES}")
    track_ids = manifest_splits(manifest)[split]
    if not track_ids:
        raise ValueError(f"{manifest}: no tracks in split {split!r}")
    held_out = HeldOut([], [], "corpus", f"held-out real music: split {split!r} of {manifest}, the middle of each track")
    order = np.random.default_rng(seed).permutation(len(track_ids))
    with tqdm(total=min(tracks, len(track_ids)), desc="load", unit="track") as progress:
        for index in order:
            if len(held_out.clips) == tracks:
                break
            track_id = track_ids[int(index)]
            try:
                audio = load_audio(corpus / "audio" / f"{track_id}.wav")
            except AudioError as error:
                tqdm.write(f"warning: skipping {error}")
                held_out.skipped.append({"track_id": track_id, "error": str(error)})
                continue
            length = min(samples, audio.size // HOP * HOP)
            if length < HOP:
                held_out.skipped.append({"track_id": track_id, "error": "shorter than one frame"})
                continue
            start = (audio.size - length) // 2
            held_out.clips.append(audio[start : start + length])
            held_out.track_ids.append(track_id)
            progress.update()
    if not held_out.clips:
        raise ValueError(f"{manifest}: none of the split {split!r} tracks could be read")
    return held_out


def measure_tokenizer(
    source: MossSource, clips: list[np.ndarray], probes: list[Probe], stable_from: int, args: argparse.Namespace, device: torch.device
) -> tuple[dict, list[Reconstruction]]:
    model = build_codec(source, device) if source.config.has_decoder else build_encoder(source, device)
    levels = min(args.n_quantizers, source.config.quantizer.num_quantizers)
    reference = encode_clips(model, clips, levels, args.batch_size, device)
    in_use, entropy = codebook_health(reference, source.config.quantizer.codebook_size)
    stability = measure_probes(model, clips, reference, probes, levels, args.batch_size, device, args.seed, desc=f"stability {source.name}")
    counts = model.parameter_counts()
    entry: dict = {
        "moss": source.name,
        "weights": source.weights_label,
        "random_weights": source.random_weights,
        "parameters": {"encoder_quantizer": counts.total, "decoder": model.decoder_parameter_count() if isinstance(model, MossCodec) else None},
        "levels": levels,
        "codebook_size": source.config.quantizer.codebook_size,
        "codes_in_use": in_use,
        "entropy_bits": entropy,
        "chance": chance_agreement(reference),
        "agreement": {name: summarise(name, result, stable_from) for name, result in stability.items()},
        "excerpt_curve": {name: np.round(result.curve(), 4).tolist() for name, result in stability.items() if name.startswith("excerpt")},
    }
    recon: list[Reconstruction] = []
    if isinstance(model, MossCodec):
        depths = {f"levels_{FEW_LEVELS}": min(FEW_LEVELS, levels), "levels_all": levels}
        recon = [reconstruct(model, clips, reference, depth, args.batch_size, device) for depth in sorted(set(depths.values()))]
        by_depth = {r.levels: {"levels": r.levels, "mel_distance": r.mel_distance, "si_sdr_db": r.si_sdr_db} for r in recon}
        entry["reconstruction"] = {key: by_depth[depth] for key, depth in depths.items()}
    else:
        entry["reconstruction"] = None
        entry["reconstruction_note"] = "n/a: this checkpoint has no decoder"
    return entry, recon


def codebook_health(codes: list[np.ndarray], codebook_size: int) -> tuple[list[int], list[float]]:
    """Per level over every frame of ``codes``: distinct codes used and the entropy (bits) of their distribution."""
    usage = CodeUsage(codes[0].shape[0], codebook_size)
    for clip_codes in codes:
        usage.add(torch.from_numpy(clip_codes)[None], torch.tensor([clip_codes.shape[0]]))
    return [int((level > 0).sum()) for level in usage.counts], [entropy_bits(level) for level in usage.counts]


def summarise(name: str, result: FrameAgreement, stable_from: int) -> list[float]:
    """Excerpts: frames at least STABLE_FROM_S after their start (the context the excerpt lacks matters less there)."""
    return result.by_level(stable_from if name.startswith("excerpt") else 0)


def reconstruct(codec: MossCodec, clips: list[np.ndarray], codes: list[np.ndarray], levels: int, batch_size: int, device: torch.device) -> Reconstruction:
    decoded = decode_clips(codec, [c[:levels] for c in codes], batch_size, device)
    tail = int(SPECTROGRAM_SECONDS * SAMPLE_RATE)
    return Reconstruction(
        levels=levels,
        mel_distance=float(np.mean([log_mel_distance(torch.from_numpy(y)[None], torch.from_numpy(x)[None]) for x, y in zip(clips, decoded)])),
        si_sdr_db=float(np.mean([float(si_sdr(torch.from_numpy(y)[None], torch.from_numpy(x)[None])[0]) for x, y in zip(clips, decoded)])),
        examples=[y[-tail:] for y in decoded[:SPECTROGRAM_CLIPS]],
    )


def decode_clips(codec: MossCodec, codes: list[np.ndarray], batch_size: int, device: torch.device) -> list[np.ndarray]:
    """Codes ``[Q, T_i]`` per clip -> waveforms of ``T_i * hop`` samples. Batches group similar lengths; right-padding
    with code 0 cannot reach earlier samples through the causal decoder."""
    order = np.argsort([c.shape[1] for c in codes], kind="stable")
    out: list[np.ndarray] = [np.empty(0)] * len(codes)
    for start in tqdm(range(0, len(order), batch_size), desc=f"decode {codes[0].shape[0]} levels", unit="batch", leave=False):
        index = order[start : start + batch_size]
        frames = max(codes[i].shape[1] for i in index)
        batch = np.zeros((len(index), codes[index[0]].shape[0], frames), dtype=np.int64)
        for row, i in enumerate(index):
            batch[row, :, : codes[i].shape[1]] = codes[i]
        with torch.inference_mode():
            audio = codec.decode(torch.from_numpy(batch).to(device))[:, 0].float().cpu().numpy()
        for row, i in enumerate(index):
            out[i] = audio[row, : codes[i].shape[1] * HOP]
    return out


def print_summary(report: dict) -> None:
    print(f"{report['data']['tracks']} tracks x {report['data']['seconds_per_track']:g} s ({report['data']['source']})")
    for role, entry in report["tokenizers"].items():
        print(f"{role}: {entry['moss']} — level 0: {entry['codes_in_use'][0]} codes in use, {entry['entropy_bits'][0]:.2f} bits, chance {entry['chance'][0]:.3f}")
        print("  level-0 agreement: " + ", ".join(f"{name} {values[0]:.2f}" for name, values in entry["agreement"].items()))
        for key, recon in (entry["reconstruction"] or {}).items():
            print(f"  reconstruction {key}: mel distance {recon['mel_distance']:.3f}, SI-SDR {recon['si_sdr_db']:.2f} dB")
