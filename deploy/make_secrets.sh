#!/usr/bin/env bash
# Creates the files docker-compose.yml mounts as secrets (in ./secrets, or the folder given):
#   triton_admin_key                  value of the restricted-API header (random, 48 characters)
#   grpc_server_cert grpc_server_key  gRPC TLS certificate for TLS_HOSTNAMES, signed by ...
#   grpc_root_cert                    ... a development CA made here (its key: dev_ca_key, never mounted)
#   api_keys                          the search API's keys file: one entry (name, SHA-256 of the key, requests
#                                     per minute) for `bench`; add callers with `python -m api key NAME --append-to`
#   api_bench_key                     the `bench` key itself, for the Locust profile of the API (locust-api)
# Existing files are kept, so rerunning is safe. In production, put your PKI's server certificate, key
# and CA certificate under the same names instead of the development CA.
set -euo pipefail

dir=${1:-secrets}
# Names clients connect to: the compose service (other containers) and the host itself.
hostnames=${TLS_HOSTNAMES:-triton,localhost}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

if [[ ! -s $dir/triton_admin_key ]]; then
  openssl rand -base64 36 | tr '+/' '-_' | tr -d '\n' >"$dir/triton_admin_key"
fi

if [[ ! -s $dir/api_bench_key ]]; then
  # Same form and hash as `python -m api key` (api/keys.py): ct_ + 32 random bytes, base64url, no padding.
  printf 'ct_%s' "$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')" >"$dir/api_bench_key"
  hash=$(openssl dgst -sha256 -r "$dir/api_bench_key" | cut -d' ' -f1)
  printf '# NAME SHA-256-OF-THE-KEY [REQUESTS-PER-MINUTE]\nbench %s 60000\n' "$hash" >>"$dir/api_keys"
fi

if [[ ! -s $dir/grpc_server_cert ]]; then
  san="IP:127.0.0.1"
  IFS=, read -ra names <<<"$hostnames"
  for name in "${names[@]}"; do
    san+=",DNS:$name"
  done
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=cloudtune-search-dev-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/dev_ca_key" -out "$dir/grpc_root_cert" 2>/dev/null
  openssl req -newkey rsa:3072 -nodes -subj "/CN=${names[0]}" \
    -keyout "$dir/grpc_server_key" -out "$dir/server.csr" 2>/dev/null
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/grpc_root_cert" -CAkey "$dir/dev_ca_key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 397 -out "$dir/grpc_server_cert" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
  rm -f "$dir/server.csr"
fi

# Compose mounts secret files as they are, and the container user is not the operator: the files are
# world-readable, and the 0700 folder keeps other users of the host out.
chmod 644 "$dir/triton_admin_key" "$dir/grpc_server_cert" "$dir/grpc_server_key" "$dir/grpc_root_cert" \
  "$dir/api_keys" "$dir/api_bench_key"
echo "secrets in $dir: triton_admin_key, grpc_server_cert (for $hostnames), grpc_server_key, grpc_root_cert, api_keys, api_bench_key"
