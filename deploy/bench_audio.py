"""Synthetic queries for the load generators of the compose profile `bench` (perf_analyzer and Locust).

Standard library only: it runs in NVIDIA's SDK image and in the Locust image, where neither this project
nor NumPy is installed. `python3 bench_audio.py OUT.json` writes perf_analyzer's --input-data file.
"""
from __future__ import annotations

import base64
import io
import json
import math
import random
import sys
import wave
from array import array

SAMPLE_RATE = 24_000  # the service's input rate (common/windowing.py; a test keeps them equal)
# One short query (a single padded window), one full window and the longest query allowed (5 windows).
DURATIONS_S = (3.0, 10.0, 30.0)
MODEL = "audio_search"


def query_audio(seconds: float, seed: int) -> array:
    """A few random partials plus a little noise, float32 in [-1, 1]: content does not change the cost.

    One second is synthesised and repeated; pure-Python synthesis of 30 s would take seconds.
    """
    rng = random.Random(seed)
    partials = [(2 * math.pi * rng.uniform(110.0, 880.0) / SAMPLE_RATE, rng.uniform(0.03, 0.12)) for _ in range(6)]
    second = array("f", (sum(a * math.sin(w * t) for w, a in partials) + rng.gauss(0.0, 0.01) for t in range(SAMPLE_RATE)))
    samples = round(seconds * SAMPLE_RATE)
    return (second * math.ceil(samples / SAMPLE_RATE))[:samples]


def queries() -> list[tuple[float, array]]:
    return [(seconds, query_audio(seconds, seed)) for seed, seconds in enumerate(DURATIONS_S)]


def little_endian(audio: array) -> bytes:
    """The raw tensor as Triton's binary extension and perf_analyzer's "b64" data expect it."""
    if sys.byteorder != "little":
        audio = array("f", audio)
        audio.byteswap()
    return audio.tobytes()


def query_wav(seconds: float, seed: int) -> bytes:
    """query_audio(seconds, seed) as a 16-bit mono WAV file, what the search API's users upload.

    Its one second is converted once and repeated, like the samples themselves: converting 30 s sample by sample
    in Python takes seconds, during which Locust's event loop would not run.
    """
    second = array("h", (max(-32767, min(32767, round(sample * 32767))) for sample in query_audio(1.0, seed)))
    if sys.byteorder != "little":
        second.byteswap()
    samples = round(seconds * SAMPLE_RATE)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes((second.tobytes() * math.ceil(samples / SAMPLE_RATE))[: 2 * samples])
    return out.getvalue()


def binary_infer_request(audio: array) -> tuple[bytes, dict[str, str]]:
    """An audio_search request in Triton's binary tensor extension (JSON would be ~10x larger); answers as JSON."""
    header = json.dumps({
        "inputs": [{"name": "AUDIO", "datatype": "FP32", "shape": [len(audio)],
                    "parameters": {"binary_data_size": len(audio) * audio.itemsize}}],
        "outputs": [{"name": name, "parameters": {"binary_data": False}} for name in ("TRACK_IDS", "SCORES")],
    }).encode("utf-8")
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return header + little_endian(audio), headers


def perf_input_data(path: str) -> None:
    # base64 of the raw little-endian floats: a 30-s query as a JSON number list would be ~7 MB.
    data = [{"AUDIO": {"b64": base64.b64encode(little_endian(audio)).decode("ascii"), "shape": [len(audio)]}}
            for _, audio in queries()]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"data": data}, handle, separators=(",", ":"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bench_audio.py OUT.json")
    perf_input_data(sys.argv[1])
