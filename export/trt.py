"""`python -m export trt`: TensorRT engines (FP16 by default) from the published ONNX models.

Optimization profiles (min/opt/max shapes per input) live in one file, deploy/engine_profiles.txt,
which the compose `build-engines` service reads too. With `trtexec` on the machine the build is
deploy/build_engines.sh (stamps, skip-if-current); with only the `tensorrt` Python package the
engines are built through its builder API; with neither, the command says so and exits 3.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROFILES = REPO_ROOT / "deploy" / "engine_profiles.txt"
BUILD_SCRIPT = REPO_ROOT / "deploy" / "build_engines.sh"
TRTEXEC_CANDIDATES = ("/usr/src/tensorrt/bin/trtexec",)
NO_TENSORRT = 3


@dataclass(frozen=True)
class InputProfile:
    model: str
    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("x"))


def read_profiles(path: Path = DEFAULT_PROFILES) -> list[InputProfile]:
    profiles = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 5:
            raise ValueError(f"{path}:{number}: expected 'model input min opt max', got {line!r}")
        profiles.append(InputProfile(fields[0], fields[1], *(_shape(f) for f in fields[2:])))
    return profiles


def find_trtexec() -> str | None:
    explicit = os.environ.get("TRTEXEC")
    if explicit:
        return explicit
    return shutil.which("trtexec") or next((c for c in TRTEXEC_CANDIDATES if Path(c).is_file()), None)


def build_with_python_api(onnx_path: Path, plan_path: Path, profiles: list[InputProfile], fp16: bool) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.input, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    tmp = plan_path.with_name(f".{plan_path.name}.tmp")
    tmp.write_bytes(bytes(engine))
    tmp.replace(plan_path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--profiles", type=Path, default=DEFAULT_PROFILES)
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--force", action="store_true", help="rebuild even when a plan for this GPU and TensorRT exists")


def main(args: argparse.Namespace) -> int:
    profiles = read_profiles(args.profiles)
    trtexec = find_trtexec()
    if trtexec is not None:
        env = {**os.environ, "TRTEXEC": trtexec, "ENGINE_PRECISION": args.precision, "FORCE": "1" if args.force else "0"}
        return subprocess.run(["bash", str(BUILD_SCRIPT), str(args.model_repository), str(args.profiles)], env=env, check=False).returncode
    if importlib.util.find_spec("tensorrt") is not None:
        for model in sorted({p.model for p in profiles}):
            onnx_path = args.model_repository / model / "1" / "model.onnx"
            plan_path = onnx_path.with_name("model.plan")
            if plan_path.exists() and not args.force:
                print(f"{model}: {plan_path} exists (use --force to rebuild)")
                continue
            build_with_python_api(onnx_path, plan_path, [p for p in profiles if p.model == model], args.precision == "fp16")
            print(f"{model}: built {plan_path} ({args.precision})")
        return 0
    print(
        "TensorRT is not available here: no trtexec (PATH, $TRTEXEC, /usr/src/tensorrt/bin) and no `tensorrt` Python package.\n"
        "Engines are built on the GPU node: `docker compose run --rm build-engines` (NVIDIA's Triton image has trtexec),\n"
        "or install TensorRT and rerun. The embedded CPU server runs the ONNX models and needs no engines."
    )
    return NO_TENSORRT
