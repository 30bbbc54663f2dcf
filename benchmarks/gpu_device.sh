#!/bin/bash
# Device-side driver of `python -m benchmarks gpu` on a GPU machine without network (the device tool's H100):
# unpacks what benchmarks/gpu_carry.sh put into .whl/ (tritonserver, numpy 1.26 for the backend stubs,
# perf_analyzer), runs the GPU tests, then the benchmark into $OUT. Run from the repository root:
#   bash benchmarks/gpu_device.sh [benchmark arguments]      (the device tool: carry [".whl"])
# SKIP_TESTS=1 skips the GPU tests, BENCH_TIMEOUT (s) bounds the benchmark. (CUDA MPS: each tritonserver the
# benchmark starts runs a daemon of its own, serving/cuda_mps.py; --e2e-cuda-mps off measures without.)
REPO=$(pwd)
export PYTHONUNBUFFERED=1
echo "== python $(python3 --version 2>&1)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import numpy, torch, triton, sys; print('numpy', numpy.__version__, 'torch', torch.__version__, 'triton', triton.__version__, sys.prefix)"
mkdir -p /tmp/site /tmp/libs
# the tritonserver of the nvidia-pytriton 0.7.0 wheel (stubs 3.10-3.12 only), re-packed as tar.xz to fit the carry limit
python3 -c "import tarfile; tarfile.open('.whl/triton.tar.xz').extractall('/tmp/site')" || echo "untar failed"
# tritonclient's Python package (config.pbtxt rendering) and what importing tritonclient.grpc needs
python3 -c "import tarfile, zipfile, glob
tarfile.open('.whl/tritonclient.tar.xz').extractall('/tmp/site')
for name in ('protobuf', 'grpcio', 'python_rapidjson', 'packaging'):
    for wheel in glob.glob(f'.whl/{name}-*.whl'): zipfile.ZipFile(wheel).extractall('/tmp/site')"
# python3 there is already a virtual environment (bin/activate): the backend stubs use it (EXECUTION_ENV_PATH)
VENV=$(python3 -c "import sys; print(sys.prefix)")
SITE=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\n/tmp/site\n' "$REPO" > "$SITE/project.pth"
python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.whl/perf_analyzer.xz'), open('$VENV/bin/perf_analyzer','wb'))" && chmod +x "$VENV/bin/perf_analyzer"
cp .whl/libb64.so.0d /tmp/libs/
cudart=(/tmp/site/nvidia_pytriton.libs/libcudart-*.so.12*)
ln -sf "${cudart[0]}" /tmp/libs/libcudart.so.12
# benchmarks/perf_analyzer.py finds libcudart.so.12 through the nvidia-cuda-runtime-cu12 package layout
mkdir -p "$SITE/nvidia/cuda_runtime/lib" && ln -sf /tmp/libs/libcudart.so.12 "$SITE/nvidia/cuda_runtime/lib/libcudart.so.12"
chmod +x /tmp/site/pytriton/tritonserver/bin/* /tmp/site/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub 2>/dev/null
# The Triton 2.51 backend stub is built against NumPy 1.x (NumPy 2 gives its output tensors 0 bytes): the
# stubs get their own environment with numpy 1.26 first and the image's packages (torch...) after it.
python3 -m venv --without-pip /tmp/stubenv
STUBSITE=$(/tmp/stubenv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -c "import tarfile; tarfile.open('.whl/numpy.tar.xz').extractall('$STUBSITE')"
echo "import site; site.addsitedir('$SITE')" > "$STUBSITE/zz_image.pth"
/tmp/stubenv/bin/python -c "import numpy, torch, onnxruntime, training.moss; print('stub env: numpy', numpy.__version__, 'torch', torch.__version__)"
python3 -c "import export.repo_configs" && echo "export.repo_configs imports"
export LD_LIBRARY_PATH="/tmp/libs:${LD_LIBRARY_PATH:-}"
export PATH="$VENV/bin:$PATH"
ldd "$VENV/bin/perf_analyzer" | grep "not found"
ls "$VENV/bin/activate" "$SITE/project.pth"
if [ -z "$SKIP_TESTS" ]; then
  echo "== GPU tests"
  timeout 170 python3 -m pytest -q -x -p no:cacheprovider --noconftest tests/test_moss_gpu.py tests/test_torch_topk.py tests/test_torch_serving.py tests/test_cuda_mps.py -k "not interpreter and not gpu_configs and not e2e_variants" 2>&1 | tail -15
fi
echo "== benchmark"
timeout "${BENCH_TIMEOUT:-400}" python3 -m benchmarks gpu --out "$OUT" --work-dir /tmp/e2e --python-env /tmp/stubenv "$@" > "$OUT/log.txt" 2>&1
echo "== exit $?"
grep -E "Error|error|Traceback" "$OUT/log.txt" | head -20
tail -70 "$OUT/log.txt"
# the device tool brings back at most 8 files: one archive for the servers' logs (one per e2e variant)
(cd "$OUT" && ls tritonserver*.log >/dev/null 2>&1 && tar czf tritonserver-logs.tgz tritonserver*.log && rm -f tritonserver*.log)
