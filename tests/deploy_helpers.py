"""Reading docker-compose.yml as Docker Compose would, and running the deploy scripts, for tests/test_deploy_*."""
from __future__ import annotations

import os
import re
import stat
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR and the escape $$.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation of every string of a parsed compose file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if unset else current
        if op in ("?", ":?"):
            if unset:
                raise KeyError(f"compose variable {name} is required: {arg}")
            return current
        if op in ("+", ":+"):
            return "" if unset else arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


@cache
def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml after interpolation with ``env`` (default: none set, so every default applies)."""
    return interpolate(compose_raw(), env or {})


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def flag_pairs(args: list[str]) -> list[tuple[str, str]]:
    """(flag, value) of the --flag=value and `--flag value` arguments, in order; other words are skipped."""
    pairs = []
    items = iter(args)
    for item in items:
        if item.startswith("--"):
            key, separator, value = item[2:].partition("=")
            pairs.append((key, value if separator else next(items)))
    return pairs


def server_flags(args: list[str]) -> dict[str, str]:
    return dict(flag_pairs(args))


def write_executable(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run_script(script: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a deploy/ script with bash and only the given environment on top of PATH and HOME."""
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return subprocess.run(["bash", str(DEPLOY / script), *args], env={**base, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def make_secrets(directory: Path) -> Path:
    result = run_script("make_secrets.sh", str(directory))
    assert result.returncode == 0, result.stderr
    return directory


def wrapper_args(secrets: Path, tmp: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """What deploy/triton-serve.sh passes to tritonserver, captured by a stand-in binary (one argument a line)."""
    fake = write_executable(tmp / "fake-tritonserver", "#!/usr/bin/env bash\nprintf '%s\\n' \"$@\"\n")
    header = service("triton")["environment"]["TRITON_ADMIN_HEADER"]
    env = {"TRITONSERVER": str(fake), "SECRETS_DIR": str(secrets), "TRITON_ADMIN_HEADER": header, **(extra_env or {})}
    return run_script("triton-serve.sh", "--model-repository=/models", env=env)
