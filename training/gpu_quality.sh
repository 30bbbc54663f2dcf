#!/usr/bin/env bash
# `make quality` on a lent GPU machine (the device tool), where the corpus arrives in packs, one per call:
# a call carries at most 64 MiB, the whole corpus is about 16 h of music, and files persist between calls
# only while the machine stays warm. The corpus travels as 22 kbit/s Opus (README, "Search quality").
#
# Here, once: the packs (each within what one call carries besides the code and wheels)
#   python -m training corpus-pack --split all --codec opus --compression-level 0.94 --max-mb 9 --out .gpucarry/packA
#   python -m training corpus-pack --split all --codec opus --compression-level 0.94 --max-mb 40 --out .gpucarry/packB --after .gpucarry/packA
#   ... until it reports 0 left. Wheels in .whl (soundfile, soxr, cffi, pycparser) and .whl-faiss (faiss-cpu), the tokenizer's
#   encoder (half the file, the same codes) in .gpucarry/moss-small:
#   python -m training codec-export --state models/moss-small --out .gpucarry/moss-small --encoder-only
# To continue an earlier run instead of starting over, carry its best.pt with the first call and pass a copy of
# configs/train_music.yaml with `init_from:` set to it (--train-config).
# There, call after call on one warm machine, from the repository root:
#   training/gpu_quality.sh setup                 # wheels -> /tmp/site, the tokenizer -> artifacts/moss-small (faiss arrives with a later call: evaluation needs it)
#   training/gpu_quality.sh add .gpucarry/packA   # merge a pack into artifacts/corpus and tokenize what it brought
#                                                 (more arguments go to the tokenizing step, e.g. --n-quantizers 16 for a sweep of levels)
#   training/gpu_quality.sh quality [ARGS]        # python -m training quality (views, training, evaluation)
#   training/gpu_quality.sh sweep [ARGS]          # python -m training sweep (the embedder's size and shape, one change a run)
# Every step is skipped where its output exists, so a call cut off at its time limit resumes in the next.
set -euo pipefail
TOKENIZER=artifacts/moss-small

python_env() {
  # Wheels arrive in .whl* folders over several calls (faiss-cpu alone is 18 MiB); each call installs what it finds.
  local wheels
  wheels=$(find . -maxdepth 2 -path './.whl*/*.whl' | sort)
  if [ -n "$wheels" ]; then
    # shellcheck disable=SC2086  # one path per word
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels
  fi
  export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
}

case "${1:-}" in
  setup)
    python_env
    mkdir -p "$TOKENIZER"
    cp .gpucarry/moss-small/config.json .gpucarry/moss-small/model.safetensors "$TOKENIZER"/
    python3 -c 'import soundfile, soxr, torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    ;;
  add)
    python_env
    python3 -m training corpus-unpack "$2"
    python3 -m training quality --moss-config "$TOKENIZER" --prepare-only "${@:3}"
    ;;
  quality)
    python_env
    shift
    python3 -m training quality --moss-config "$TOKENIZER" "$@"
    ;;
  sweep)
    python_env
    shift
    python3 -m training sweep --moss-config "$TOKENIZER" "$@"
    ;;
  *)
    echo "usage: $0 setup | add PACK [quality arguments] | quality [python -m training quality arguments] | sweep [python -m training sweep arguments]" >&2
    exit 2
    ;;
esac
