#!/usr/bin/env bash
# perf_analyzer against audio_search over gRPC (TLS unless GRPC_TLS=off) with the queries of
# bench_audio.py; runs in NVIDIA's tritonserver SDK image (compose profile `bench`).
#
# environment: TRITON_GRPC_URL (default triton:8001), GRPC_TLS on|off, SECRETS_DIR (default /run/secrets),
#   PERF_INPUT (input-data file; bench_audio.py writes it unless it exists), PERF_REPORT (CSV report),
#   PERF_ANALYZER (the binary), PERF_ARGS (load and measurement flags; default below)
# GRPC_TLS=mutual needs a client certificate: add --ssl-grpc-certificate-chain-file and
# --ssl-grpc-private-key-file to PERF_ARGS.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
input=${PERF_INPUT:-/tmp/perf_input.json}
# A prepared file is used as it is (e.g. the realistic query mix of `python -m benchmarks`, mounted).
if [[ ! -s $input ]]; then
  python3 "$here/bench_audio.py" "$input"
fi

tls=()
if [[ ${GRPC_TLS:-on} != off ]]; then
  # A switch without value, whatever its help text says.
  tls=(--ssl-grpc-use-ssl --ssl-grpc-root-certifications-file="${SECRETS_DIR:-/run/secrets}/grpc_root_cert")
fi
# Long measurement windows keep results stable with a mix of 3- to 30-s queries.
read -ra load <<<"${PERF_ARGS:---concurrency-range=1:16:4 --measurement-interval=10000 --percentile=95}"

exec "${PERF_ANALYZER:-perf_analyzer}" -m audio_search -i grpc -u "${TRITON_GRPC_URL:-triton:8001}" "${tls[@]}" \
  --input-data="$input" -f "${PERF_REPORT:-/tmp/perf_audio_search.csv}" "${load[@]}"
