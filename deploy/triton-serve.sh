#!/usr/bin/env bash
# Starts tritonserver with the admin key and the gRPC TLS files taken from Docker secrets, so neither
# appears in docker-compose.yml, the image or `docker inspect`. Server arguments come from the caller.
#
# Environment:
#   TRITON_ADMIN_HEADER  header that admin calls must carry (model load/unload, shared memory, trace, logging)
#   GRPC_TLS             on (default) | mutual (clients also need a certificate of the root CA)
#                        | off (plaintext gRPC: only behind a TLS-terminating proxy on a private network)
#   SECRETS_DIR          where the secrets are mounted (default /run/secrets)
#   TRITONSERVER         the server binary (default: tritonserver on PATH)
set -euo pipefail

die() {
  echo "triton-serve: $*" >&2
  exit 64
}

secrets=${SECRETS_DIR:-/run/secrets}
header=${TRITON_ADMIN_HEADER:-}
tls=${GRPC_TLS:-on}

# gRPC metadata keys must be lower case; Triton splits the flag value at ':' ',' and '='.
[[ $header =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "TRITON_ADMIN_HEADER must be lower-case letters, digits and '-'"
[[ -r $secrets/triton_admin_key ]] || die "missing secret $secrets/triton_admin_key (see deploy/make_secrets.sh)"
key=$(tr -d '[:space:]' <"$secrets/triton_admin_key")
[[ $key =~ ^[A-Za-z0-9._~-]{32,}$ ]] || die "$secrets/triton_admin_key must hold at least 32 characters of [A-Za-z0-9._~-]"

# The key is visible in this container's process list: Triton takes it only as an argument.
restricted="model-repository,shared-memory,trace,logging:$header=$key"
args=(--http-restricted-api="$restricted" --grpc-restricted-protocol="$restricted")

case $tls in
  on | mutual)
    for name in grpc_server_cert grpc_server_key grpc_root_cert; do
      [[ -r $secrets/$name ]] || die "missing secret $secrets/$name (GRPC_TLS=$tls)"
    done
    args+=(--grpc-use-ssl=true --grpc-server-cert="$secrets/grpc_server_cert"
      --grpc-server-key="$secrets/grpc_server_key" --grpc-root-cert="$secrets/grpc_root_cert")
    if [[ $tls == mutual ]]; then
      args+=(--grpc-use-ssl-mutual=true)
    fi
    ;;
  off) ;;
  *) die "GRPC_TLS must be on, mutual or off, not '$tls'" ;;
esac

exec "${TRITONSERVER:-tritonserver}" "$@" "${args[@]}"
