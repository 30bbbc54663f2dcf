"""The project's PyTorch models behind Triton's Python backend (the `gpu` model configs), without pb_utils.

`serving/triton_backends/torch_gpu/model.py` is the thin Triton shell around these runners; everything that
can be tested without a server lives here.

Version folder artifacts (written by `python -m export publish --moss-source ... --embedder-checkpoint ...`):
- moss_encoder/<v>/moss/ (config.json + *.safetensors in the official layout) or moss_source.txt holding a
  spec for `training.moss.resolve_moss` ("official" / "tiny": SEEDED RANDOM WEIGHTS, for benchmarks);
- token_embedder/<v>/embedder.pt (the training checkpoint), beside the model.onnx the catalog was built with.

Where the version folder also holds the model.onnx of the same model, the runner compares the PyTorch
weights with it once at start on a small probe (ONNX Runtime on CPU) and refuses to serve weights that
disagree: faiss_topk checks the catalog against that ONNX file's checksum, so the GPU models must be the
same models.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from serving.ragged import pad_concat
from training.embedder import EmbedderConfig, EmbedderFromCounts, TokenEmbedder
from training.moss.gpu import FastMossEncoder
from training.moss.weights import build_encoder

MOSS_FOLDER = "moss"
MOSS_SOURCE_FILE = "moss_source.txt"
EMBEDDER_CHECKPOINT = "embedder.pt"
DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


class ParityError(RuntimeError):
    """The PyTorch weights of a version folder do not reproduce its ONNX model."""


def pick_device(instance_kind: str, device_id: int | str) -> torch.device:
    """The instance's GPU when Triton placed it on one and CUDA works here, else the CPU."""
    if instance_kind == "GPU" and torch.cuda.is_available():
        return torch.device(f"cuda:{int(device_id)}")
    return torch.device("cpu")


def _onnx_session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def moss_spec(version_dir: Path, override: str = "") -> str:
    """What to build the encoder from: the parameter, else moss/ (a checkpoint), else moss_source.txt."""
    if override:
        return override
    if (version_dir / MOSS_FOLDER).is_dir():
        return str(version_dir / MOSS_FOLDER)
    if (version_dir / MOSS_SOURCE_FILE).is_file():
        return (version_dir / MOSS_SOURCE_FILE).read_text(encoding="utf-8").strip()
    raise FileNotFoundError(f"{version_dir}: neither {MOSS_FOLDER}/ (a MOSS checkpoint) nor {MOSS_SOURCE_FILE}; "
                            "publish with `python -m export publish --moss-source ...`")


def bucket(value: int, buckets: Sequence[int]) -> int:
    return next((b for b in buckets if b >= value), value)


class EncoderRunner:
    """WAVEFORM [B, 1, S] float32 + LENGTHS [B] -> CODES int32 [B, Q, T] + FRAME_COUNTS int64 [B].

    Shapes are bucketed so CUDA graphs are reused: the batch is padded to the next of ``batch_buckets``
    with silent rows, and S to a whole number of ``frame_bucket`` frames (right-padding changes no valid
    code: every attention is causal). Codes are returned for the request's own T frames.

    The requests of a dynamic batch are copied once, straight into one reused host buffer of the padded
    bucket shape (pinned on CUDA, so the upload is one DMA): a batch of 32 10-s windows is 31 MB, and
    merging, padding and uploading it through fresh pageable arrays cost three passes and their page faults.
    """

    def __init__(self, version_dir: Path, device: torch.device, n_quantizers: int, *, precision: str = "fp16",
                 moss: str = "", batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS, frame_bucket: int = 25,
                 verify_onnx: bool = True, warmup_frames: Sequence[int] = ()) -> None:
        self.spec = moss_spec(version_dir, moss)
        model = build_encoder(self.spec, device)
        self.hop = model.config.hop
        self.n_quantizers = model.check_n_quantizers(n_quantizers)
        self.random_weights = self.spec.removesuffix("-random") in ("official", "tiny")
        onnx_path = version_dir / "model.onnx"
        if verify_onnx and onnx_path.is_file():
            self.parity = check_encoder_parity(model, onnx_path, self.n_quantizers)
        else:
            self.parity = None
        self.encoder = FastMossEncoder(model, precision if device.type == "cuda" else "fp32")
        self.device = device
        self.batch_buckets = tuple(sorted(batch_buckets))
        self.frame_bucket = max(1, frame_bucket)
        self._staging = torch.empty(0, dtype=torch.float32)
        # (staging s, enqueueing s, GPU start, GPU end) per call while ExecutionTimes watches (a list), else None
        self.timings: list[tuple[float, float, torch.cuda.Event, torch.cuda.Event]] | None = None
        for frames in warmup_frames:
            for batch in self.batch_buckets:
                self.run(np.zeros((batch, 1, frames * self.hop), np.float32), np.full(batch, frames * self.hop, np.int64))

    @property
    def encoder_runner(self) -> EncoderRunner:
        return self

    def run(self, waveform: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.run_requests([waveform], [lengths])

    def run_requests(self, waveforms: Sequence[np.ndarray], lengths: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Requests ([b_i, 1, S_i] + [b_i] each) as one batch: codes [sum b_i, Q, T] for T = the longest's frames."""
        codes, counts = self.encode_requests(waveforms, lengths)
        # Reading the codes back waits for the encode, and so for the upload: the buffer is free for the next call.
        return codes.to(torch.int32).cpu().numpy(), counts.cpu().numpy()

    def encode_requests(self, waveforms: Sequence[np.ndarray], lengths: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """``run_requests`` on the device: int64 codes [sum b_i, Q, T] and frame counts, not yet read back (the
        staging buffer's upload may still run: read them, or queue work behind them, before the next call)."""
        began = time.perf_counter()
        batch = sum(waveform.shape[0] for waveform in waveforms)
        frames = math.ceil(max(waveform.shape[-1] for waveform in waveforms) / self.hop)
        padded_samples = math.ceil(frames / self.frame_bucket) * self.frame_bucket * self.hop
        padded_batch = bucket(batch, self.batch_buckets)
        wave = self._staged(padded_batch * padded_samples).view(padded_batch, 1, padded_samples)
        lens = torch.full((padded_batch,), padded_samples, dtype=torch.int64)
        # numpy's copies are one plain memcpy each: torch's CPU copy splits a 10-s window over its intra-op threads,
        # which contend with every other process of a loaded GPU host (docs/gpu-performance.md, "Host staging").
        host, host_lens = wave.numpy(), lens.numpy()
        row = 0
        for waveform, length in zip(waveforms, lengths):
            rows, samples = waveform.shape[0], waveform.shape[-1]
            np.copyto(host[row:row + rows, :, :samples], waveform)
            host[row:row + rows, :, samples:] = 0.0  # the buffer holds the last batch's samples
            host_lens[row:row + rows] = length.reshape(-1)
            row += rows
        host[batch:] = 0.0
        staged = time.perf_counter()
        timed = self.timings is not None and self.device.type == "cuda"
        if timed:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        codes, counts = self.encoder.encode(wave.to(self.device, non_blocking=True), lens.to(self.device), self.n_quantizers)
        if timed:
            end.record()
            self.timings.append((staged - began, time.perf_counter() - staged, start, end))
        return codes[:batch, :, :frames], counts[:batch]

    def _staged(self, elements: int) -> torch.Tensor:
        """The first ``elements`` of the host staging buffer, grown (never shrunk) to the largest batch served."""
        if self._staging.numel() < elements:
            self._staging = torch.empty(elements, dtype=torch.float32, pin_memory=self.device.type == "cuda")
        return self._staging[:elements]


def check_encoder_parity(model, onnx_path: Path, n_quantizers: int, min_level0: float = 0.99) -> dict | None:
    """Codes of the PyTorch weights (FP32) vs the ONNX model on a 2-s probe; raises ParityError when they differ."""
    session = _onnx_session(onnx_path)
    if session is None:
        return None
    rng = np.random.default_rng(0)
    samples = 2 * model.config.sampling_rate
    waveform = (0.3 * rng.standard_normal((2, 1, samples))).astype(np.float32)
    lengths = np.array([samples, samples // 2], np.int64)
    expected, counts = session.run(["CODES", "FRAME_COUNTS"], {"WAVEFORM": waveform, "LENGTHS": lengths})
    device = next(model.parameters()).device
    with torch.inference_mode():
        codes, _ = model.encode(torch.from_numpy(waveform).to(device), torch.from_numpy(lengths).to(device), n_quantizers)
    codes = codes.cpu().numpy()
    if codes.shape != expected.shape:
        raise ParityError(f"{onnx_path}: the ONNX model gives codes {expected.shape}, the PyTorch weights {codes.shape}")
    valid = np.arange(codes.shape[-1])[None, :] < counts[:, None]
    level0 = float((codes[:, 0] == expected[:, 0])[valid].mean())
    if level0 < min_level0:
        raise ParityError(f"{onnx_path}: the PyTorch weights agree with the ONNX model on {level0:.1%} of level-0 "
                          "codes: they are not the same model (publish both from one export)")
    return {"level0": level0}


def load_embedder_checkpoint(path: Path, device: torch.device) -> TokenEmbedder:
    """A TokenEmbedder from the training checkpoint (`training.train.save_checkpoint` layout)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = TokenEmbedder(EmbedderConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


class EmbedderRunner:
    """CODES int32 [B, Q, T] + FRAME_COUNTS int64 [B] -> EMBEDDING float32 [B, D] (FP32: it is small)."""

    def __init__(self, version_dir: Path, device: torch.device, *, verify_onnx: bool = True) -> None:
        path = version_dir / EMBEDDER_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: publish with `python -m export publish --embedder-checkpoint ...`")
        self.model = EmbedderFromCounts(load_embedder_checkpoint(path, device)).eval()
        self.device = device
        onnx_path = version_dir / "model.onnx"
        self.parity = check_embedder_parity(self, onnx_path) if verify_onnx and onnx_path.is_file() else None

    def run_requests(self, codes: Sequence[np.ndarray], counts: Sequence[np.ndarray]) -> np.ndarray:
        """Requests ([b_i, Q, T_i] + [b_i] each) as one batch: embeddings [sum b_i, D] (codes are small: merged plainly)."""
        return self.run(pad_concat(codes), np.concatenate([count.reshape(-1) for count in counts]))

    def run(self, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.embed(torch.from_numpy(codes).to(self.device), torch.from_numpy(counts.reshape(-1)).to(self.device))

    def embed(self, codes: torch.Tensor, counts: torch.Tensor) -> np.ndarray:
        """Codes and counts already on the device (the fused runner's) -> embeddings on the host."""
        with torch.inference_mode():
            return self.model(codes, counts).float().cpu().numpy()


TIMING_ENV = "TORCH_GPU_TIMING_EVERY"


def timing_every(environ: Mapping[str, str]) -> int:
    """How many executions ``TORCH_GPU_TIMING_EVERY`` sums per timing report; 0 (unset or empty): no timing."""
    value = environ.get(TIMING_ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(f"{TIMING_ENV} must be a whole number of executions per report (0: off), got {value!r}")
    return int(value)


class ExecutionTimes:
    """Where a backend's executions spend their time, summed over ``every`` executions, then reported once: the
    requests and rows per execution, host milliseconds reading requests / running / writing responses, and where an
    encoder runs: its host milliseconds copying the batch into the staging buffer and enqueueing the upload and
    encode, and its GPU milliseconds (upload + encode, CUDA events)."""

    def __init__(self, every: int, encoder: EncoderRunner | None) -> None:
        self.every, self.encoder = every, encoder
        if encoder is not None:
            encoder.timings = []
        self._reset()

    def _reset(self) -> None:
        self.executions, self.requests, self.rows = 0, 0, 0
        self.seconds = [0.0, 0.0, 0.0]

    def add(self, requests: int, rows: int, read_s: float, run_s: float, respond_s: float) -> str:
        """Counts one execution; every ``every``-th call returns the report (else "")."""
        self.executions += 1
        self.requests += requests
        self.rows += rows
        for index, value in enumerate((read_s, run_s, respond_s)):
            self.seconds[index] += value
        if self.executions < self.every:
            return ""
        n = self.executions
        read, run, respond = (1e3 * value / n for value in self.seconds)
        report = (f"{n} executions, {self.requests / n:.2f} requests / {self.rows / n:.2f} rows each; per execution "
                  f"read {read:.2f} ms, run {run:.2f} ms, respond {respond:.2f} ms")
        if self.encoder is not None and self.encoder.timings:
            timings = self.encoder.timings
            count = len(timings)
            staging = 1e3 * sum(staged for staged, *_ in timings) / count
            enqueue = 1e3 * sum(queued for _, queued, *_ in timings) / count
            gpu = sum(start.elapsed_time(end) for *_, start, end in timings) / count  # past their readback: complete
            report += f", encoder staging {staging:.2f} ms + enqueue {enqueue:.2f} ms, encoder GPU {gpu:.2f} ms"
            timings.clear()
        self._reset()
        return report


class FusedRunner:
    """WAVEFORM + LENGTHS -> EMBEDDING: the encoder and the embedder in one process (``with_fused_steps``), the
    codes handed over on the device — no host copy, no second model's queue, one CUDA context fewer."""

    def __init__(self, encoder_dir: Path, embedder_dir: Path, device: torch.device, n_quantizers: int, **options) -> None:
        self.encoder = EncoderRunner(encoder_dir, device, n_quantizers, **options)
        self.embedder = EmbedderRunner(embedder_dir, device, verify_onnx=options.get("verify_onnx", True))
        self.parity = {"encoder": self.encoder.parity, "embedder": self.embedder.parity}

    @property
    def encoder_runner(self) -> EncoderRunner:
        return self.encoder

    def run_requests(self, waveforms: Sequence[np.ndarray], lengths: Sequence[np.ndarray]) -> np.ndarray:
        codes, counts = self.encoder.encode_requests(waveforms, lengths)
        return self.embedder.embed(codes, counts)


def check_embedder_parity(runner: EmbedderRunner, onnx_path: Path, min_cosine: float = 0.999) -> dict | None:
    session = _onnx_session(onnx_path)
    if session is None:
        return None
    levels = session.get_inputs()[0].shape[1]
    levels = levels if isinstance(levels, int) else runner.model.embedder.cfg.n_levels
    rng = np.random.default_rng(0)
    counts = np.array([40, 13], np.int64)
    codes = rng.integers(0, runner.model.embedder.cfg.codebook_size, (2, levels, 40), dtype=np.int32)
    expected = session.run(["EMBEDDING"], {"CODES": codes, "FRAME_COUNTS": counts})[0]
    got = runner.run(codes, counts)
    if got.shape != expected.shape:
        raise ParityError(f"{onnx_path}: the ONNX model gives embeddings {expected.shape}, the checkpoint {got.shape}")
    cosine = float(np.min(np.sum(got * expected, axis=1)))
    if cosine < min_cosine:
        raise ParityError(f"{onnx_path}: the checkpoint's embeddings match the ONNX model's only to cosine {cosine:.4f}: "
                          "they are not the same model (publish both from one training run)")
    return {"min_cosine": cosine}


def runner_options(parameters: Mapping[str, str]) -> dict:
    """EncoderRunner keyword arguments from Triton model parameters."""
    options: dict = {}
    if "PRECISION" in parameters:
        options["precision"] = parameters["PRECISION"]
    if "MOSS_SOURCE" in parameters:
        options["moss"] = parameters["MOSS_SOURCE"]
    if "BATCH_BUCKETS" in parameters:
        options["batch_buckets"] = tuple(int(v) for v in parameters["BATCH_BUCKETS"].split(","))
    if "FRAME_BUCKET" in parameters:
        options["frame_bucket"] = int(parameters["FRAME_BUCKET"])
    if "WARMUP_FRAMES" in parameters:
        options["warmup_frames"] = tuple(int(v) for v in parameters["WARMUP_FRAMES"].split(",") if v.strip())
    if "VERIFY_ONNX" in parameters:
        options["verify_onnx"] = parameters["VERIFY_ONNX"] not in ("0", "false", "no")
    return options
