"""Procedural music: one deterministic, music-like track per (seed, track index).

A track has a fixed character (key, scale, tempo, metre, swing, chord progressions, instrument
timbres and envelopes, drum sounds and grooves, mix levels, room) and is cut into sections of a
few bars. Sections vary arrangement (drums in or out, sustained or arpeggiated pads, lead on or
off, lead brightness and octave, bass groove, levels) and the melody is composed afresh bar by
bar, so two excerpts of one track differ in content while sharing its sound, as excerpts of a
real song do; that is what a track-level similarity model has to learn.

Rendering is vectorised: each note is one windowed array (wavetable oscillator times an ADSR
envelope) added into the mix, and a track is a few hundred such additions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from training.audio_io import SAMPLE_RATE
from training.augment import synthetic_rir
from training.dsp import band_pass, db_to_gain, fft_convolve, oscillator, rms, spectral_gain, wavetable

PEAK_DBFS = -1.0
BUSES = ("drums", "bass", "pad", "lead")
_NYQUIST_MARGIN_HZ = 11_000.0  # highest harmonic any oscillator may produce at 24 kHz

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
}
# Bass figures: (onset in beats, length in beats, chord tone: 0 root, 1 third, 2 fifth, 3 octave).
Figure = tuple[tuple[float, float, int], ...]


@dataclass(frozen=True)
class Envelope:
    attack_s: float
    decay_s: float
    sustain: float
    release_s: float

    def render(self, hold_s: float, sr: int) -> np.ndarray:
        """Piecewise-linear attack-decay-sustain while held, then a linear release from wherever it got to."""
        t = np.arange(max(int(hold_s * sr), 1)) / sr
        held = np.interp(t, (0.0, self.attack_s, self.attack_s + self.decay_s), (0.0, 1.0, self.sustain))
        release = held[-1] * np.linspace(1.0, 0.0, int(self.release_s * sr), endpoint=False)
        return np.concatenate((held, release))


@dataclass(frozen=True)
class Voice:
    """A pitched instrument: timbre variants (dull -> bright) and an envelope."""

    tables: tuple[np.ndarray, ...]
    envelope: Envelope
    vibrato_cents: float = 0.0


@dataclass(frozen=True)
class Drums:
    kick: np.ndarray
    snare: np.ndarray
    hat: np.ndarray
    open_hat: np.ndarray


@dataclass(frozen=True)
class Style:
    """Everything that stays fixed over one track."""

    tonic: int  # pitch class 0-11
    scale: tuple[int, ...]
    melody_steps: tuple[int, ...]  # scale steps the melody may use (all 7, or a pentatonic subset)
    beat_s: float
    beats_per_bar: int
    swing: float  # 0 straight .. 1 triplet feel on off-beat eighths
    bars_per_section: int
    progressions: tuple[tuple[int, ...], ...]
    sevenths: bool
    lead: Voice
    pad: Voice
    arp: Voice
    bass: Voice
    drums: Drums
    bass_figures: tuple[Figure, ...]
    rhythms: tuple[tuple[tuple[float, float], ...], ...]
    pad_centre: int
    lead_range: tuple[int, int]
    levels_db: dict[str, float]
    hats_per_beat: int


@dataclass(frozen=True)
class Section:
    """Arrangement choices for a few bars."""

    progression: tuple[int, ...]
    drums: bool
    half_time: bool
    fill: bool
    arpeggio: bool
    lead: bool
    brightness: int
    lead_octave: int
    arp_step: float
    bass_figure: Figure
    gains_db: dict[str, float]


def synthesize_track(track_index: int, seconds: float, seed: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Track ``track_index`` of catalog ``seed``: float32 mono, peak at about -1 dBFS.

    Seeded from (seed, track_index) alone, so a track does not depend on the catalog size or on
    which worker renders it, and the same arguments give bit-identical samples. ``sr`` may be
    raised above 24 kHz (content stays below 11.5 kHz), not lowered: the timbres would alias.
    """
    if track_index < 0 or seed < 0:
        raise ValueError("track_index and seed must be non-negative")
    if sr < SAMPLE_RATE:
        raise ValueError(f"sr must be at least {SAMPLE_RATE} Hz, got {sr}")
    rng = np.random.default_rng([seed, track_index])
    style = _random_style(rng, sr)
    n = int(round(seconds * sr))
    buses = {name: np.zeros(n) for name in BUSES}
    bar_s = style.beat_s * style.beats_per_bar
    melody = _MelodyWalk(style, rng)
    bar = 0
    while bar * bar_s < seconds:
        section = _random_section(style, rng, first=bar == 0)
        for local in range(style.bars_per_section):
            start_s = (bar + local) * bar_s
            degree = section.progression[local % len(section.progression)]
            last = local == style.bars_per_section - 1
            _render_bar(buses, style, section, degree, start_s, last, melody, rng, sr)
        bar += style.bars_per_section
    return _master(buses, rng, sr)


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


# ---------------------------------------------------------------- the track's fixed character


def _random_style(rng: np.random.Generator, sr: int) -> Style:
    scale = SCALES[str(rng.choice(list(SCALES)))]
    if rng.uniform() < 0.4:
        # Major-third scales drop the 4th and 7th, minor-third ones the 2nd and 6th: the usual pentatonics.
        melody_steps = (0, 1, 2, 4, 5) if scale[2] == 4 else (0, 2, 3, 4, 6)
    else:
        melody_steps = tuple(range(7))
    beats_per_bar = 3 if rng.uniform() < 0.2 else 4
    beat_s = 60.0 / rng.uniform(70.0, 160.0)
    pad_centre = int(rng.integers(57, 68))
    lead_low = int(rng.integers(60, 68))
    lead_range = (lead_low, lead_low + int(rng.integers(12, 18)))
    return Style(
        tonic=int(rng.integers(0, 12)),
        scale=scale,
        melody_steps=melody_steps,
        beat_s=beat_s,
        beats_per_bar=beats_per_bar,
        swing=float(rng.uniform(0.2, 0.8)) if rng.uniform() < 0.3 else 0.0,
        bars_per_section=2 if beat_s * beats_per_bar > 2.2 else 4,
        progressions=tuple(_random_progression(rng) for _ in range(2)),
        sevenths=bool(rng.uniform() < 0.4),
        lead=Voice(
            _timbres(rng, lead_range[1], rolloff=(0.8, 1.8)),
            Envelope(rng.uniform(0.005, 0.06), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.9), rng.uniform(0.05, 0.3)),
            vibrato_cents=float(rng.uniform(0.0, 25.0)),
        ),
        pad=Voice(
            _timbres(rng, pad_centre + 8, rolloff=(1.2, 2.5)),
            Envelope(rng.uniform(0.08, 0.6), rng.uniform(0.2, 0.8), rng.uniform(0.5, 0.9), rng.uniform(0.3, 1.0)),
        ),
        arp=Voice(
            _timbres(rng, pad_centre + 20, rolloff=(0.8, 2.0)),
            Envelope(0.003, rng.uniform(0.08, 0.3), rng.uniform(0.0, 0.3), rng.uniform(0.05, 0.2)),
        ),
        bass=Voice(
            _timbres(rng, 55, rolloff=(0.9, 2.5)),
            Envelope(rng.uniform(0.003, 0.02), rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.9), rng.uniform(0.03, 0.12)),
        ),
        drums=_random_drums(rng, sr),
        bass_figures=(_random_bass_figure(rng, beats_per_bar), _random_bass_figure(rng, beats_per_bar)),
        rhythms=tuple(_random_rhythm(rng, beats_per_bar) for _ in range(3)),
        pad_centre=pad_centre,
        lead_range=lead_range,
        levels_db={
            "drums": rng.uniform(-4, 2),
            "bass": rng.uniform(-4, 1),
            "pad": rng.uniform(-9, -3),
            "lead": rng.uniform(-4, 0),
        },
        hats_per_beat=int(rng.choice((2, 4))),
    )


def _timbres(rng: np.random.Generator, top_midi: int, rolloff: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Three wavetables, dull to bright, sharing one harmonic signature (odd/even balance, formant ripple)."""
    count = int(min(32, _NYQUIST_MARGIN_HZ // midi_to_hz(top_midi)))
    k = np.arange(1, count + 1)
    even_weight = rng.uniform(0.0, 1.0)  # 0: hollow, square-like; 1: full, saw-like
    signature = np.where(k % 2 == 0, even_weight, 1.0) * np.exp(rng.normal(0.0, 0.35, count))
    signature[0] = 1.0
    base = rng.uniform(*rolloff)
    return tuple(wavetable(signature * k ** -(base + shift)) for shift in (0.5, 0.0, -0.3))


def _random_progression(rng: np.random.Generator) -> tuple[int, ...]:
    """Four chords on scale degrees, starting on the tonic and favouring IV, V and vi."""
    others = rng.choice(np.arange(1, 7), size=3, p=(0.08, 0.12, 0.25, 0.25, 0.22, 0.08))
    return (0, *(int(d) for d in others))


def _random_bass_figure(rng: np.random.Generator, beats: int) -> Figure:
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return ((0.0, float(beats), 0),)
    if kind == 1:
        return tuple((float(b), 1.0, 0 if b % 2 == 0 else int(rng.choice((0, 2, 3)))) for b in range(beats))
    if kind == 2:
        return tuple((b / 2, 0.5, 0 if b % 4 else int(rng.choice((0, 3)))) for b in range(beats * 2))
    if kind == 3:
        return tuple((float(b), 0.9, 0 if b % 2 == 0 else 2) for b in range(beats))
    onsets = sorted({0.0, *(float(o) / 2 for o in rng.choice(np.arange(1, beats * 2), size=int(rng.integers(2, 5)), replace=False))})
    ends = [*onsets[1:], float(beats)]
    return tuple((on, end - on, int(rng.choice((0, 0, 2, 3)))) for on, end in zip(onsets, ends))


def _random_rhythm(rng: np.random.Generator, beats: int) -> tuple[tuple[float, float], ...]:
    """A bar of melody rhythm: (onset, length) in beats, with rests."""
    notes: list[tuple[float, float]] = []
    position = 0.0
    while position < beats:
        length = float(rng.choice((0.25, 0.5, 0.5, 1.0, 1.0, 1.5, 2.0)))
        length = min(length, beats - position)
        if rng.uniform() > 0.2:
            notes.append((position, length))
        position += length
    return tuple(notes) or ((0.0, float(beats)),)


def _random_drums(rng: np.random.Generator, sr: int) -> Drums:
    def decay(seconds: float, tau_s: float) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(int(seconds * sr)) / sr
        return t, np.exp(-t / tau_s)

    t, amp = decay(0.4, rng.uniform(0.06, 0.2))
    start_hz, end_hz, sweep_s = rng.uniform(120, 220), rng.uniform(40, 65), rng.uniform(0.02, 0.06)
    pitch = end_hz + (start_hz - end_hz) * np.exp(-t / sweep_s)
    click = rng.standard_normal(t.size) * np.exp(-t / 0.003) * rng.uniform(0.1, 0.4)
    kick = np.sin(2 * np.pi * np.cumsum(pitch) / sr) * amp + click

    t, amp = decay(0.3, rng.uniform(0.04, 0.12))
    rattle_low_hz = rng.uniform(800, 2000)
    rattle = spectral_gain(rng.standard_normal(t.size), lambda f: band_pass(f, rattle_low_hz, 9000.0, 2), sr)
    body = np.sin(2 * np.pi * rng.uniform(150, 250) * t) * np.exp(-t / 0.03)
    snare = rattle * amp * rng.uniform(0.4, 0.8) + body * rng.uniform(0.3, 0.7)

    hat_band = rng.uniform(5000, 8000)
    hats = []
    for tau_s in (rng.uniform(0.01, 0.03), rng.uniform(0.08, 0.2)):
        t, amp = decay(0.4, tau_s)
        hats.append(spectral_gain(rng.standard_normal(t.size), lambda f: band_pass(f, hat_band, 11500.0, 3), sr) * amp)
    return Drums(*(clip / np.max(np.abs(clip)) for clip in (kick, snare, hats[0], hats[1])))


# ---------------------------------------------------------------- per-section arrangement


def _random_section(style: Style, rng: np.random.Generator, first: bool) -> Section:
    return Section(
        progression=style.progressions[int(rng.integers(0, len(style.progressions)))],
        drums=bool(rng.uniform() < (0.5 if first else 0.85)),
        half_time=bool(rng.uniform() < 0.2),
        fill=bool(rng.uniform() < 0.5),
        arpeggio=bool(rng.uniform() < 0.35),
        lead=bool(rng.uniform() < 0.8),
        brightness=int(rng.integers(0, 3)),
        lead_octave=-12 if rng.uniform() < 0.15 else 0,
        arp_step=float(rng.choice((0.25, 0.5))) if style.beat_s > 0.5 else 0.5,
        bass_figure=style.bass_figures[0 if rng.uniform() < 0.7 else 1],
        gains_db={name: rng.uniform(-3.0, 1.0) for name in BUSES},
    )


class _MelodyWalk:
    """A random walk over the melody's allowed pitches, pulled to chord tones on strong beats."""

    def __init__(self, style: Style, rng: np.random.Generator) -> None:
        low, high = style.lead_range
        allowed = {(style.tonic + style.scale[s]) % 12 for s in style.melody_steps}
        self.pitches = np.array([m for m in range(low, high + 1) if m % 12 in allowed])
        self.index = int(rng.integers(0, self.pitches.size))

    def next(self, rng: np.random.Generator, chord_classes: set[int], strong: bool) -> int:
        step = int(rng.choice((-3, -2, -1, 0, 1, 2, 3), p=(0.05, 0.15, 0.25, 0.1, 0.25, 0.15, 0.05)))
        self.index = int(np.clip(self.index + step, 0, self.pitches.size - 1))
        if strong and rng.uniform() < 0.6:
            chord_tones = np.flatnonzero([p % 12 in chord_classes for p in self.pitches])
            if chord_tones.size:
                self.index = int(chord_tones[np.argmin(np.abs(chord_tones - self.index))])
        return int(self.pitches[self.index])


# ---------------------------------------------------------------- rendering


def _render_bar(
    buses: dict[str, np.ndarray],
    style: Style,
    section: Section,
    degree: int,
    start_s: float,
    last_in_section: bool,
    melody: _MelodyWalk,
    rng: np.random.Generator,
    sr: int,
) -> None:
    chord = _chord_pitch_classes(style, degree)
    beats = style.beats_per_bar
    gain = {name: float(db_to_gain(style.levels_db[name] + section.gains_db[name])) for name in buses}

    def at(beat: float) -> float:
        # Swing delays off-beat eighths; humanise everything by a few milliseconds.
        offbeat = abs(beat % 1.0 - 0.5) < 1e-9
        return start_s + (beat + (style.swing / 6.0 if offbeat else 0.0)) * style.beat_s + rng.normal(0.0, 0.004)

    pad_notes = [_place_in_octave(pc, style.pad_centre) for pc in chord]
    if section.arpeggio:
        for i, onset in enumerate(np.arange(0.0, beats, section.arp_step)):
            # Up the chord, then up again an octave higher.
            note = pad_notes[i % len(pad_notes)] + (12 if (i // len(pad_notes)) % 2 else 0)
            hold_s = section.arp_step * style.beat_s
            _note(buses["pad"], style.arp, section.brightness, note, at(float(onset)), hold_s, gain["pad"], rng, sr)
    else:
        for note in pad_notes:
            hold_s = beats * style.beat_s
            _note(buses["pad"], style.pad, section.brightness, note, at(0.0), hold_s, gain["pad"] * 0.6, rng, sr)

    root_class = chord[0]
    bass_root = 36 + (root_class - 36) % 12
    bass_offsets = (0, (chord[1] - root_class) % 12, (chord[2] - root_class) % 12, 12)
    for onset, length, tone in section.bass_figure:
        _note(buses["bass"], style.bass, 1, bass_root + bass_offsets[tone], at(onset), length * style.beat_s * 0.95, gain["bass"], rng, sr)

    if section.lead:
        rhythm = style.rhythms[int(rng.integers(0, len(style.rhythms)))] if rng.uniform() < 0.7 else _random_rhythm(rng, beats)
        chord_set = set(chord)
        for onset, length in rhythm:
            pitch = melody.next(rng, chord_set, strong=onset % 2 == 0) + section.lead_octave
            velocity = gain["lead"] * rng.uniform(0.75, 1.0)
            _note(buses["lead"], style.lead, section.brightness, pitch, at(onset), length * style.beat_s * 0.9, velocity, rng, sr)

    if section.drums:
        _render_drums(buses["drums"], style, section, last_in_section, at, gain["drums"], rng, sr)


def _render_drums(
    out: np.ndarray, style: Style, section: Section, last_in_section: bool, at: Callable[[float], float], gain: float,
    rng: np.random.Generator, sr: int,
) -> None:
    beats = style.beats_per_bar
    kit = style.drums
    kicks = [0.0, 2.0] if beats == 4 and not section.half_time else [0.0]
    kicks += [b / 2 for b in range(1, beats * 2) if b / 2 not in kicks and rng.uniform() < 0.12]
    snares = ([2.0] if section.half_time else [1.0, 3.0]) if beats == 4 else [1.0, 2.0]
    if section.fill and last_in_section:
        snares += [beats - 1 + q / 4 for q in range(4)]
    hat_step = 1.0 / style.hats_per_beat
    for onset in kicks:
        _add(out, kit.kick, at(onset), gain * rng.uniform(0.85, 1.0), sr)
    for onset in snares:
        _add(out, kit.snare, at(onset), gain * rng.uniform(0.6, 0.9), sr)
    for onset in np.arange(0.0, beats, hat_step):
        accent = 1.0 if onset % 1.0 == 0 else 0.6
        clip = kit.open_hat if onset % 1.0 == 0.5 and rng.uniform() < 0.1 else kit.hat
        _add(out, clip, at(float(onset)), gain * 0.35 * accent * rng.uniform(0.7, 1.0), sr)


def _chord_pitch_classes(style: Style, degree: int) -> list[int]:
    steps = (0, 2, 4, 6) if style.sevenths else (0, 2, 4)
    return [(style.tonic + style.scale[(degree + s) % 7]) % 12 for s in steps]


def _place_in_octave(pitch_class: int, centre: int) -> int:
    return centre - 6 + (pitch_class - (centre - 6)) % 12


def _note(
    out: np.ndarray, voice: Voice, brightness: int, midi: int, start_s: float, hold_s: float, gain: float,
    rng: np.random.Generator, sr: int,
) -> None:
    envelope = voice.envelope.render(max(hold_s, 0.01), sr)
    hz = midi_to_hz(midi) * 2.0 ** (rng.normal(0.0, 3.0) / 1200.0)  # a few cents of tuning drift
    t = np.arange(envelope.size) / sr
    phase = hz * t + rng.uniform()
    if voice.vibrato_cents > 0:
        # Vibrato fades in after the attack, as a player would add it.
        depth = voice.vibrato_cents / 1200.0 * np.log(2.0) * np.clip(t / 0.3, 0.0, 1.0)
        phase += np.cumsum(hz * depth * np.sin(2 * np.pi * 5.5 * t)) / sr
    _add(out, oscillator(voice.tables[brightness], phase) * envelope, start_s, gain, sr)


def _add(out: np.ndarray, clip: np.ndarray, start_s: float, gain: float, sr: int) -> None:
    start = max(int(round(start_s * sr)), 0)
    stop = min(start + clip.size, out.size)
    if stop > start:
        out[start:stop] += gain * clip[: stop - start]


def _master(buses: dict[str, np.ndarray], rng: np.random.Generator, sr: int) -> np.ndarray:
    """Sum the buses, add a room on the melodic parts, normalise the peak to ``PEAK_DBFS``."""
    dry = sum(buses.values())
    send = buses["pad"] + buses["lead"] + 0.3 * buses["drums"]
    wet = fft_convolve(send, synthetic_rir(rng, rng.uniform(0.3, 1.2), sr))
    send_level, wet_level = rms(send), rms(wet)
    if wet_level > 0:
        dry = dry + wet * (rng.uniform(0.15, 0.4) * send_level / wet_level)
    peak = float(np.max(np.abs(dry)))
    if peak == 0:
        return dry.astype(np.float32)
    return (dry * (db_to_gain(PEAK_DBFS) / peak)).astype(np.float32)
