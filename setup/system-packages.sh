#!/usr/bin/env bash
# Installs the Debian packages of setup/apt-packages.txt that are missing (apt-get, when run as root;
# otherwise prints the one command to run and fails), then checks that the bundled binaries (tritonserver,
# its Python backend, perf_analyzer) resolve every shared library. `make setup` runs it after building .venv.
#   setup/system-packages.sh [PYTHON]     PYTHON: the project's interpreter (default: .venv/bin/python)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${1:-$here/../.venv/bin/python}
list=$here/apt-packages.txt

# One package per line; everything after `#` is a comment.
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$list")

if ! command -v dpkg-query >/dev/null; then
  echo "setup: no dpkg-query (not Debian): install the equivalents of ${wanted[*]} yourself; checking the binaries" >&2
else
  missing=()
  for package in "${wanted[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) != "install ok installed" ]]; then
      missing+=("$package")
    fi
  done
  if ((${#missing[@]})); then
    if ((EUID != 0)); then
      echo "setup: missing Debian packages (${missing[*]}); run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
    echo "setup: installing ${missing[*]} ($list)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
fi

"$python" -m benchmarks check-libs --packages "$list"
