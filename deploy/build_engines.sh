#!/usr/bin/env bash
# Builds TensorRT engines <model>/<version>/model.plan from model.onnx next to them, for every model of a
# profiles file (deploy/engine_profiles.txt), with trtexec.
#
# A plan only runs on the GPU model and TensorRT version that built it. Each plan gets a stamp naming
# both, with the precision, the profile, the trtexec flags and the checksum of the ONNX files; a plan
# whose stamp matches is kept, so this runs before every server start at the cost of the checksums.
#
# usage: build_engines.sh MODEL_REPOSITORY PROFILES_FILE
# environment: ENGINE_PRECISION fp16 (default) | fp32, TRTEXEC (default /usr/src/tensorrt/bin/trtexec),
#              TRTEXEC_EXTRA_ARGS (e.g. --memPoolSize=workspace:8192MiB), FORCE=1 to rebuild anyway
set -euo pipefail

usage="usage: build_engines.sh MODEL_REPOSITORY PROFILES_FILE"
repository=${1:?$usage}
profiles=${2:?$usage}
trtexec=${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}
precision=${ENGINE_PRECISION:-fp16}
read -ra extra <<<"${TRTEXEC_EXTRA_ARGS:-}"

case $precision in
  fp16) precision_flags=(--fp16) ;;
  fp32) precision_flags=() ;;
  *)
    echo "ENGINE_PRECISION must be fp16 or fp32, not '$precision'" >&2
    exit 64
    ;;
esac

# Engines are built on the first visible GPU; a node's GPUs must all be of this model.
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader --id=0)
# trtexec names its TensorRT version in the banner it prints first, even for --help.
banner=$("$trtexec" --help 2>&1 || true)
if [[ $banner =~ TensorRT\ v([0-9]+) ]]; then
  tensorrt=${BASH_REMATCH[1]}
else
  tensorrt="trtexec-sha256-$(sha256sum "$trtexec" | cut -c1-16)"
fi

declare -A min opt max
models=()
while read -r model input min_shape opt_shape max_shape rest; do
  [[ -z $model || $model == \#* ]] && continue
  if [[ -z $max_shape || -n $rest ]]; then
    echo "$profiles: expected 'model input min opt max', got: $model $input $min_shape $opt_shape $max_shape $rest" >&2
    exit 65
  fi
  [[ -v "min[$model]" ]] || models+=("$model")
  min[$model]+="${min[$model]:+,}$input:$min_shape"
  opt[$model]+="${opt[$model]:+,}$input:$opt_shape"
  max[$model]+="${max[$model]:+,}$input:$max_shape"
done <"$profiles"

onnx_checksums() {
  # Every file of the version folder but our outputs: model.onnx may keep its weights in external files.
  (cd "$1" && find . -maxdepth 1 -type f ! -name 'model.plan*' ! -name '.model.plan*' -print0 | sort -z | xargs -0 sha256sum)
}

built=0
kept=0
for model in "${models[@]}"; do
  shopt -s nullglob
  onnx_files=("$repository/$model"/[0-9]*/model.onnx)
  shopt -u nullglob
  if ((${#onnx_files[@]} == 0)); then
    echo "$model: no $repository/$model/<version>/model.onnx; publish the ONNX exports first" >&2
    exit 66
  fi
  for onnx in "${onnx_files[@]}"; do
    dir=$(dirname "$onnx")
    stamp=$(printf 'gpu=%s\ntensorrt=%s\nprecision=%s\nmin=%s\nopt=%s\nmax=%s\ntrtexec_args=%s\n%s\n' \
      "$gpu" "$tensorrt" "$precision" "${min[$model]}" "${opt[$model]}" "${max[$model]}" "${extra[*]}" "$(onnx_checksums "$dir")")
    if [[ ${FORCE:-0} != 1 && -s $dir/model.plan && -f $dir/model.plan.stamp && $(<"$dir/model.plan.stamp") == "$stamp" ]]; then
      echo "$model: $dir/model.plan is current ($gpu, TensorRT $tensorrt, $precision)"
      kept=$((kept + 1))
      continue
    fi
    echo "$model: building $dir/model.plan ($gpu, TensorRT $tensorrt, $precision)"
    # Written under a temporary name and renamed, so an interrupted build never leaves a plan that looks done.
    "$trtexec" --onnx="$onnx" --saveEngine="$dir/.model.plan.tmp" --skipInference \
      --minShapes="${min[$model]}" --optShapes="${opt[$model]}" --maxShapes="${max[$model]}" \
      "${precision_flags[@]}" "${extra[@]}"
    mv -f "$dir/.model.plan.tmp" "$dir/model.plan"
    printf '%s\n' "$stamp" >"$dir/model.plan.stamp"
    built=$((built + 1))
  done
done
echo "engines: $built built, $kept already current"
