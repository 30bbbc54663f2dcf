#!/bin/bash
# Prepares .whl/ (git-ignored, ~49 MB) for benchmarks/gpu_device.sh on a GPU machine that has no network:
# the tritonserver of nvidia-pytriton 0.7.0 (Python 3.10-3.12 stubs only), numpy 1.26.4 for the backend stubs
# (Triton 2.51's stub is built against NumPy 1.x), perf_analyzer and the Python package of the tritonclient 2.50
# wheel (with protobuf and grpcio), and libb64.
# Each is re-packed with xz so that they and the working tree stay under the device tool's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.whl
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
download() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d "$TMP" "$@"; }
download nvidia-pytriton==0.7.0 --platform manylinux_2_35_x86_64
download numpy==1.26.4 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
download tritonclient==2.50.0 --platform manylinux1_x86_64
# export.repo_configs renders config.pbtxt through tritonclient's model_config_pb2; importing tritonclient.grpc
# needs grpcio, protobuf, python-rapidjson and packaging
download protobuf==4.25.9 grpcio==1.85.3 python-rapidjson==1.20 packaging==25.0 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
cp "$TMP"/protobuf-*.whl "$TMP"/grpcio-*.whl "$TMP"/python_rapidjson-*.whl "$TMP"/packaging-*.whl "$OUT/"
(cd "$TMP" && apt-get download libb64-0d >/dev/null && dpkg -x libb64-0d_*.deb b64)
cp "$TMP"/b64/usr/lib/x86_64-linux-gnu/libb64.so.0d "$OUT/"
python3 - "$TMP" "$OUT" <<'PY'
import glob, io, lzma, sys, tarfile, zipfile
tmp, out = sys.argv[1:]

def repack(wheel, target, keep, strip=""):
    with zipfile.ZipFile(glob.glob(f"{tmp}/{wheel}")[0]) as z, tarfile.open(target, "w:xz", preset=9) as tar:
        for info in z.infolist():
            name = info.filename.removeprefix(strip)
            if info.is_dir() or not keep(name):
                continue
            data = z.read(info)
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), (info.external_attr >> 16) or 0o644
            tar.addfile(member, io.BytesIO(data))

drop = ("python_backend_stubs/3.8/", "python_backend_stubs/3.9/", "python_backend_stubs/3.13/", "libpython3-")
repack("nvidia_pytriton-*.whl", f"{out}/triton.tar.xz",
       lambda n: (n == "pytriton/__init__.py" or n.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")))
       and not any(d in n for d in drop))
repack("numpy-*.whl", f"{out}/numpy.tar.xz", lambda n: "/tests/" not in n)
repack("tritonclient-*.whl", f"{out}/tritonclient.tar.xz", lambda n: n.startswith("tritonclient/"),
       strip="tritonclient-2.50.0.data/purelib/")
with zipfile.ZipFile(glob.glob(f"{tmp}/tritonclient-*.whl")[0]) as z:
    name = next(n for n in z.namelist() if n.endswith("bin/perf_analyzer"))
    with lzma.open(f"{out}/perf_analyzer.xz", "wb", preset=9) as handle:
        handle.write(z.read(name))
PY
cp benchmarks/gpu_device.sh "$OUT/run.sh"
du -sh "$OUT"
