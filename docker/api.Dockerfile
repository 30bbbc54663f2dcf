# syntax=docker/dockerfile:1.7
# The search API image (python -m api serve; docker-compose.yml service `api`): Python 3.11 on Debian 12 with the
# hash-pinned wheels of the `api` extra (FastAPI, uvicorn, PyAV with its FFmpeg, soundfile with its libsndfile,
# tritonclient's gRPC client) and this project's pure-Python package. No GPU, no Triton: it talks to the `triton`
# service over gRPC + TLS on the internal network. For reproducible builds pin the base by digest as well.

# Stage 1: fetch the pinned wheels (hash-checked) and build the project's wheel; nothing of it ships.
FROM python:3.11.11-slim-bookworm AS wheels
WORKDIR /src
COPY docker/api-requirements.txt /wheels/requirements.txt
RUN python -m pip download --no-cache-dir --require-hashes --only-binary=:all: \
        --dest /wheels --requirement /wheels/requirements.txt
COPY pyproject.toml README.md ./
COPY common ./common
COPY export ./export
COPY serving ./serving
COPY demo ./demo
COPY training ./training
COPY client ./client
COPY benchmarks ./benchmarks
COPY pipelines ./pipelines
COPY api ./api
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: the runtime. Wheels come in through a build mount (no layer); the closing import fails the build,
# not the service, when a decoder library is missing.
FROM python:3.11.11-slim-bookworm
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels \
        --require-hashes --requirement /wheels/requirements.txt \
    && python -m pip install --no-cache-dir --no-index --no-deps /wheels/cloudtune_audio_search-*.whl \
    && python -c "import api.app, av, soundfile" \
    && useradd --system --no-create-home --uid 10001 cloudtune
COPY --chmod=0444 configs/api.yaml /opt/cloudtune/api.yaml
# The root file system is read-only at run time; nothing may try to write byte code.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8080
CMD ["python", "-m", "api", "serve", "--config", "/opt/cloudtune/api.yaml", "--host", "0.0.0.0", "--port", "8080"]
