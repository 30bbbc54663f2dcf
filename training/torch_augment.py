"""training.augment's degradations for a whole batch at once, in torch, on the training device.

Fresh views every step (training.online_views) need thousands of degraded excerpts a second, which the
NumPy path cannot make. The sounds themselves are not re-implemented: noises, room responses and
microphone curves are drawn once by training.augment / training.noise into a ``DegradationBank``, and
each view takes a random entry (a random stretch of a noise) and applies it with batched FFTs. Order and
probabilities are ``AugmentConfig``'s: room, noise, microphone, gain, dropouts. Ogg re-encoding has no
batched form and is not applied here; the evaluation's ``ogg`` condition measures what that costs.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch

from training.audio_io import SAMPLE_RATE
from training.augment import TRACK_BABBLE, AugmentConfig, draw_laptop_curve, draw_phone_curve, draw_speaker_drive, synthetic_rir
from training.noise import make_noise

# Microphone curves are smooth: this many points from 0 Hz to Nyquist, interpolated to each FFT grid.
CURVE_POINTS = 4097
EQ_CODES = {"phone": 0, "laptop": 1}

@dataclass
class BankSizes:
    noises_per_kind: int = 32
    noise_s: float = 12.0  # longer than the longest view, so every view gets a random stretch of one
    rooms: int = 256
    curves_per_kind: int = 256


@dataclass
class DegradationBank:
    """Sounds drawn once with training.augment's own generators, held on the training device."""

    noise_kinds: tuple[str, ...]  # generated kinds, without TRACK_BABBLE
    noises: torch.Tensor  # [kinds, per kind, samples], unit RMS
    rooms: torch.Tensor  # [rooms, samples] unit-energy impulse responses, zero-padded to the longest
    curves: torch.Tensor  # [2 (phone, laptop), per kind, CURVE_POINTS] magnitude responses
    drives: torch.Tensor  # [per kind] phone speaker drive

    @classmethod
    def draw(cls, cfg: AugmentConfig, rng: np.random.Generator, device: torch.device, sizes: BankSizes | None = None) -> DegradationBank:
        sizes = sizes or BankSizes()
        kinds = tuple(k for k in cfg.noise_kinds if k != TRACK_BABBLE)
        samples = int(sizes.noise_s * SAMPLE_RATE)
        noises = np.stack([[make_noise(kind, samples, rng) for _ in range(sizes.noises_per_kind)] for kind in kinds]) if kinds else np.zeros((0, 1, samples))
        rooms = [synthetic_rir(rng, float(rng.uniform(*cfg.rt60_s))) for _ in range(sizes.rooms)]
        padded = np.zeros((len(rooms), max(r.size for r in rooms)))
        for i, room in enumerate(rooms):
            padded[i, : room.size] = room
        grid = np.linspace(0.0, SAMPLE_RATE / 2.0, CURVE_POINTS)
        curves = np.stack([[draw_phone_curve(rng)(grid) for _ in range(sizes.curves_per_kind)], [draw_laptop_curve(rng)(grid) for _ in range(sizes.curves_per_kind)]])
        drives = np.array([draw_speaker_drive(rng) for _ in range(sizes.curves_per_kind)])
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        return cls(kinds, as_tensor(noises), as_tensor(padded), as_tensor(curves), as_tensor(drives))


def degrade_batch(x: torch.Tensor, gen: torch.Generator, bank: DegradationBank, cfg: AugmentConfig, babble: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Degraded copies of the clips ``x`` [B, samples] and what each got (per-view tensors, for tests and logs).

    Each degradation is drawn per view with ``AugmentConfig``'s probabilities and ranges from ``gen`` (a CPU
    generator: the draws are the same on any device); ``babble`` [B, samples], unit RMS, is each view's
    ``tracks`` noise (a mix of other tracks); without it that kind is never drawn.
    """
    b, n = x.shape
    uniform = lambda *shape: torch.rand(shape, generator=gen).to(x.device)  # noqa: E731
    pick = lambda high, *shape: torch.randint(high, shape, generator=gen).to(x.device)  # noqa: E731
    span = lambda low_high: low_high[0] + (low_high[1] - low_high[0]) * uniform(b)  # noqa: E731
    y = x.float()
    applied: dict[str, torch.Tensor] = {}

    applied["reverb"] = uniform(b) < cfg.reverb_prob
    rooms = bank.rooms[pick(bank.rooms.shape[0], b)]
    wet = fft_convolve(y, rooms)
    y = torch.where(applied["reverb"][:, None], wet * safe_ratio(rms(y), rms(wet)), y)
    y = fit_peak(y)

    kinds = list(bank.noise_kinds) + ([TRACK_BABBLE] if babble is not None and TRACK_BABBLE in cfg.noise_kinds else [])
    applied["noise"] = (uniform(b) < cfg.noise_prob) & (len(kinds) > 0)
    applied["noise_kind"] = pick(max(len(kinds), 1), b)
    applied["snr_db"] = span(cfg.snr_db)
    noise = torch.zeros_like(y)
    if bank.noise_kinds:
        start = (uniform(b) * (bank.noises.shape[2] - n + 1)).long().clamp_max(bank.noises.shape[2] - n)
        rows = bank.noises[applied["noise_kind"].clamp_max(len(bank.noise_kinds) - 1), pick(bank.noises.shape[1], b)]
        noise = torch.stack([rows[i, start[i] : start[i] + n] for i in range(b)])
    if kinds and kinds[-1] == TRACK_BABBLE:
        noise = torch.where((applied["noise_kind"] == len(kinds) - 1)[:, None], babble, noise)
    y = torch.where(applied["noise"][:, None], mix_at_snr(y, noise, applied["snr_db"]), y)

    applied["eq"] = uniform(b) < cfg.eq_prob
    eq_kinds = torch.tensor([EQ_CODES[k] for k in cfg.eq_kinds], device=x.device)
    applied["eq_kind"] = eq_kinds[pick(len(eq_kinds), b)]
    entry = pick(bank.curves.shape[1], b)
    filtered = spectral_gain(y, bank.curves[applied["eq_kind"], entry])
    phone = applied["eq_kind"] == EQ_CODES["phone"]
    filtered = torch.where(phone[:, None], soft_clip(filtered, bank.drives[entry]), filtered)
    y = fit_peak(torch.where(applied["eq"][:, None], filtered, y))

    applied["gain_db"] = span(cfg.gain_db)
    y = fit_peak(y * 10.0 ** (applied["gain_db"][:, None] / 20.0))

    applied["dropouts"] = (uniform(b) < cfg.dropout_prob)
    most = cfg.dropouts[1]
    count = cfg.dropouts[0] + pick(cfg.dropouts[1] - cfg.dropouts[0] + 1, b)
    lengths = ((cfg.dropout_ms[0] + (cfg.dropout_ms[1] - cfg.dropout_ms[0]) * uniform(b, most)) * SAMPLE_RATE / 1000.0).long().clamp_max(n)
    starts = (uniform(b, most) * (n - lengths + 1)).long()
    active = applied["dropouts"][:, None] & (torch.arange(most, device=x.device)[None, :] < count[:, None])
    t = torch.arange(n, device=x.device)[None, None, :]
    silent = (active[:, :, None] & (t >= starts[:, :, None]) & (t < (starts + lengths)[:, :, None])).any(dim=1)
    return y.masked_fill(silent, 0.0), applied


def rms(y: torch.Tensor) -> torch.Tensor:
    return y.square().mean(dim=1, keepdim=True).sqrt()


def safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, 1 where den is 0 (a silent clip keeps its level)."""
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.ones_like(den))


def fit_peak(y: torch.Tensor) -> torch.Tensor:
    """common.audio.fit_peak per row: scaled down where the peak passes full scale, never clipped."""
    return y / y.abs().amax(dim=1, keepdim=True).clamp_min(1.0)


def mix_at_snr(y: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """training.augment.mix_at_snr per row: ``noise`` at exactly ``snr_db`` below each clip's mean power."""
    power, noise_power = y.square().mean(dim=1, keepdim=True), noise.square().mean(dim=1, keepdim=True)
    scale = torch.where((power > 0) & (noise_power > 0), (power / noise_power.clamp_min(1e-30) / 10.0 ** (snr_db[:, None] / 10.0)).sqrt(), torch.zeros_like(power))
    return fit_peak(y + noise * scale)


def fft_convolve(y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Each row of ``y`` convolved with its row of ``h``, truncated to ``y``'s length (training.dsp.fft_convolve)."""
    size = 1 << (y.shape[1] + h.shape[1] - 2).bit_length()
    return torch.fft.irfft(torch.fft.rfft(y, size) * torch.fft.rfft(h, size), size)[:, : y.shape[1]]


def spectral_gain(y: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """training.dsp.spectral_gain per row: zero-phase, circular, the curve [B, CURVE_POINTS] stretched over 0..Nyquist."""
    bins = y.shape[1] // 2 + 1
    response = torch.nn.functional.interpolate(curves[:, None, :], size=bins, mode="linear", align_corners=True)[:, 0]
    return torch.fft.irfft(torch.fft.rfft(y) * response, n=y.shape[1])


def soft_clip(y: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """training.augment.soft_clip per row (``drive`` [B])."""
    peak = y.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
    return peak * torch.tanh(drive[:, None] * y / peak) / torch.tanh(drive[:, None])
