"""Uploaded recordings -> 24 kHz mono float32, in memory, within the API's limits.

The format is recognised from the first bytes, never from the file name or Content-Type (the caller controls
both). libsndfile (the soundfile wheel) decodes WAV, FLAC, Ogg Vorbis, Ogg Opus and MP3; FFmpeg (the PyAV wheel)
decodes M4A/MP4 and ADTS streams holding AAC, and WebM holding Opus or Vorbis (what browsers record), each with
its demuxer named, so FFmpeg never probes arbitrary bytes with every demuxer it has. Decoding stops as soon as
the audio exceeds the maximum duration, whatever the header claims: a 2-hour file costs no more than 30 s of it.
Channels are averaged and the rate converted exactly as the client library does (common.audio.to_mono_24k),
so a file searched through the API and through `python -m client search` is the same query.
"""
from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from api.config import Limits
from common.audio import SAMPLE_RATE, AudioError, to_mono_24k

ACCEPTED = "WAV, FLAC, Ogg Vorbis, Ogg Opus, MP3, M4A/AAC, WebM Opus"
# How many samples per channel libsndfile hands over at a time.
BLOCK_FRAMES = 65_536


class AudioRefused(Exception):
    """An upload the API will not search; ``status`` and ``reason`` (a metrics label) say how to answer."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Format:
    name: str
    av_demuxer: str | None = None  # None: libsndfile decodes it
    av_codecs: frozenset[str] = frozenset()


WAV, FLAC, OGG_VORBIS, OGG_OPUS, MP3 = (Format(n) for n in ("wav", "flac", "ogg-vorbis", "ogg-opus", "mp3"))
M4A = Format("m4a", "mp4", frozenset({"aac"}))
ADTS = Format("aac", "aac", frozenset({"aac"}))
WEBM = Format("webm", "matroska", frozenset({"opus", "vorbis"}))


@dataclass(frozen=True)
class DecodedQuery:
    samples: np.ndarray  # float32 [S] at 24 kHz
    format: str
    source_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE


def sniff(data: bytes) -> Format:
    """The format of ``data`` by its signature; AudioRefused(415) for anything not accepted."""
    head = data[:64]
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return WAV
    if head[:4] == b"fLaC":
        return FLAC
    if head[:4] == b"OggS":
        first_page = data[:512]
        if b"\x01vorbis" in first_page:
            return OGG_VORBIS
        if b"OpusHead" in first_page:
            return OGG_OPUS
        raise AudioRefused(415, "unsupported_format", f"Ogg stream with a codec other than Vorbis or Opus; accepted: {ACCEPTED}")
    if head[4:8] == b"ftyp":
        return M4A
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return WEBM
    if head[:3] == b"ID3" and len(head) >= 10:
        # An ID3v2 tag (syncsafe size) may precede MP3 or AAC frames.
        size = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
        if head[5] & 0x10:
            size += 10
        frames = _mpeg_frames(data[size : size + 2])
        if frames is not None:
            return frames
    frames = _mpeg_frames(head[:2])
    if frames is not None:
        return frames
    raise AudioRefused(415, "unsupported_format", f"not a recognised audio file; accepted: {ACCEPTED}")


def _mpeg_frames(first: bytes) -> Format | None:
    """MPEG audio (layer bits 01-11) or ADTS AAC (layer bits 00) by the 12-bit frame sync."""
    if len(first) < 2 or first[0] != 0xFF or first[1] & 0xE0 != 0xE0:
        return None
    if first[1] & 0xF6 == 0xF0:
        return ADTS
    return MP3 if first[1] & 0x06 else None


def decode_upload(data: bytes, limits: Limits) -> DecodedQuery:
    """Decode, downmix and resample ``data``; AudioRefused for anything outside ``limits`` or undecodable."""
    if not data:
        raise AudioRefused(400, "empty", "the uploaded file is empty")
    fmt = sniff(data)
    try:
        if fmt.av_demuxer is None:
            mono, rate, channels = _decode_sndfile(data, limits)
        else:
            mono, rate, channels = _decode_av(data, fmt, limits)
    except AudioRefused:
        raise
    except Exception as error:  # noqa: BLE001 - decoder failures on hostile bytes take many forms; all mean "undecodable"
        raise AudioRefused(400, "undecodable", f"cannot decode the {fmt.name} file, it is truncated or corrupt ({_detail(error)})") from error
    if mono.size == 0:
        raise AudioRefused(400, "undecodable", f"the {fmt.name} file holds no audio samples")
    try:
        samples = to_mono_24k(mono, rate)
    except AudioError as error:
        raise AudioRefused(422, "bad_audio", f"unusable audio: {error}") from error
    query = DecodedQuery(samples, fmt.name, rate, channels)
    if query.seconds < limits.min_seconds:
        raise AudioRefused(422, "too_short", f"the recording is {query.seconds:.2f} s long; send {limits.min_seconds:g}-{limits.max_seconds:g} s")
    return query


def _detail(error: Exception) -> str:
    """The decoder's own words, without the in-memory file object's repr or errno numbers."""
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>|'<none>'|\[Errno -?\d+\]|^Error opening\s*:?", "", str(error))
    return " ".join(text.replace(": :", ":").strip(" :").split()) or type(error).__name__


def _check_stream(rate: int, channels: int, limits: Limits) -> int:
    """The most samples per channel to decode (one past the limit, to tell 'too long' apart)."""
    if not 0 < rate <= limits.max_sample_rate:
        raise AudioRefused(422, "bad_audio", f"sample rate {rate} Hz is outside 1-{limits.max_sample_rate} Hz")
    if not 0 < channels <= limits.max_channels:
        raise AudioRefused(422, "bad_audio", f"{channels} channels; at most {limits.max_channels} are accepted")
    return int(limits.max_seconds * rate) + 1


def _too_long(limits: Limits) -> AudioRefused:
    return AudioRefused(422, "too_long", f"the recording is longer than {limits.max_seconds:g} s; send {limits.min_seconds:g}-{limits.max_seconds:g} s")


def _decode_sndfile(data: bytes, limits: Limits) -> tuple[np.ndarray, int, int]:
    import soundfile as sf

    with sf.SoundFile(io.BytesIO(data)) as audio:
        rate, channels = audio.samplerate, audio.channels
        cap = _check_stream(rate, channels, limits)
        blocks, total = [], 0
        while total < cap:
            block = audio.read(frames=min(BLOCK_FRAMES, cap - total), dtype="float32", always_2d=True)
            if not len(block):
                break
            blocks.append(_downmix(block.T))
            total += len(block)
    if total >= cap:
        raise _too_long(limits)
    return _joined(blocks), rate, channels


def _decode_av(data: bytes, fmt: Format, limits: Limits) -> tuple[np.ndarray, int, int]:
    import av

    with av.open(io.BytesIO(data), format=fmt.av_demuxer) as container:
        if not container.streams.audio:
            raise AudioRefused(400, "undecodable", f"the {fmt.name} file has no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        if codec not in fmt.av_codecs:
            raise AudioRefused(415, "unsupported_format", f"{fmt.name} with {codec} audio; accepted: {ACCEPTED}")
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        cap = _check_stream(rate, channels, limits)
        blocks, total = [], 0
        for planes in _float_planes(container, stream):
            if planes.shape[0] > limits.max_channels:  # the layout may change within a stream
                raise AudioRefused(422, "bad_audio", f"{planes.shape[0]} channels; at most {limits.max_channels} are accepted")
            blocks.append(_downmix(planes))
            total += planes.shape[1]
            if total >= cap:
                raise _too_long(limits)
    return _joined(blocks), rate, channels


def _float_planes(container: object, stream: object) -> Iterator[np.ndarray]:
    """Every decoded frame as float32 [channels, samples] at the stream's rate (FFmpeg converts the sample format only)."""
    import av

    to_float = av.AudioResampler(format="fltp")
    for frame in container.decode(stream):  # type: ignore[attr-defined]
        if frame.sample_rate != stream.codec_context.sample_rate:  # type: ignore[attr-defined]
            raise AudioRefused(400, "undecodable", "the sample rate changes within the stream")
        for converted in to_float.resample(frame):
            yield converted.to_ndarray()


def _downmix(planes: np.ndarray) -> np.ndarray:
    """[channels, samples] -> [samples]: the channel mean, as common.audio.to_mono_24k takes it."""
    return planes[0].astype(np.float32, copy=True) if planes.shape[0] == 1 else planes.T.mean(axis=1, dtype=np.float32)


def _joined(blocks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
