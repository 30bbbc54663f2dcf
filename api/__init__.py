"""The public search API (FastAPI on uvicorn) in front of Triton's audio_search ensemble.

Recordings in any common format go in, track ids and scores come out; Triton stays on an internal network.
`python -m api serve` runs it; `python -m api key` makes an API key and its hashed entry.
"""
