"""`python -m api`: help, keys (`key`, the keys file, $CLOUDTUNE_API_KEYS), refusals to start insecurely, the rate
limiter's arithmetic, and `serve --embedded` (what `make serve` runs) bringing up tritonserver and the API together."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from api_stack import ApiServer, health_status, search
from tritonclient.grpc import InferenceServerClient, InferenceServerException

from api.keys import ENV_VAR, ApiKey, hash_key, load_keys, parse_entries
from api.ratelimit import RateLimiter
from common.paths import REPO_ROOT
from common.windowing import SAMPLE_RATE
from serving.triton_runtime import free_ports


def api(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if key != ENV_VAR}
    return subprocess.run([sys.executable, "-m", "api", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})})


@pytest.mark.parametrize("command", [[], ["serve"], ["key"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = api(*command, "--help")
    assert result.returncode == 0 and "usage: python -m api" in result.stdout


def test_key_makes_a_key_whose_hash_the_server_recognises(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    made = api("key", "backend@cloudtune", "--rate", "30", "--append-to", str(keys_file))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert re.fullmatch(r"ct_[A-Za-z0-9_-]{43}", key)
    assert key not in keys_file.read_text(), "only the hash is stored"
    assert load_keys(keys_file, None).identify(key) == ApiKey("backend@cloudtune", 30.0)
    assert load_keys(keys_file, None).identify(key + "x") is None
    printed = api("key", "other")
    assert printed.returncode == 0 and printed.stderr.startswith("keys-file entry: other ")
    refused = api("key", "no spaces allowed")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "key name" in refused.stderr


def test_keys_file_and_environment_entries(tmp_path: Path) -> None:
    file_hash, env_hash = hash_key("ct_a"), hash_key("ct_b")
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# callers\nalice {file_hash} 12  # the phone app\n\n", encoding="utf-8")
    store = load_keys(keys_file, f"bob {env_hash}; carol {hash_key('ct_c')} 5")
    assert len(store) == 3 and store.identify("ct_a") == ApiKey("alice", 12.0) and store.identify("ct_b") == ApiKey("bob")
    for text, words in ((f"alice {file_hash} fast", "requests per minute"), (f"alice {file_hash} 0", "positive"),
                        ("alice deadbeef", "SHA256-HEX"), (f"alice {file_hash}\nbob {file_hash}", "listed twice")):
        with pytest.raises(ValueError, match=words):
            parse_entries(text, "keys")


def test_serve_refuses_to_start_without_keys_or_with_no_auth_on_a_public_address(tmp_path: Path) -> None:
    no_keys = api("serve", "--port", "0")
    assert no_keys.returncode == 2 and "no API keys" in no_keys.stderr and "Traceback" not in no_keys.stderr
    public = api("serve", "--no-auth", "--host", "0.0.0.0")
    assert public.returncode == 2 and "loopback address only" in public.stderr
    broken = tmp_path / "keys"
    broken.write_text("alice not-a-hash\n", encoding="utf-8")
    bad_file = api("serve", "--keys-file", str(broken))
    assert bad_file.returncode == 2 and f"{broken}, entry 1" in bad_file.stderr
    bad_config = api("serve", "--no-auth", "--config", str(tmp_path / "missing.yaml"))
    assert bad_config.returncode != 0 and "cannot read the API settings" in bad_config.stderr and "Traceback" not in bad_config.stderr


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(requests_per_minute=60, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(1.0)  # one per second at 60/min
    assert limiter.acquire("b") == 0.0, "buckets are per caller"
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") > 0
    assert limiter.acquire("c", requests_per_minute=600) == 0.0
    now[0] = 100.0
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0, "an idle caller saves up the burst, not more"


def test_serve_embedded_runs_tritonserver_and_the_api_together(tmp_path: Path, triton_repository: Path) -> None:
    port = free_ports(1)[0]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "api", "serve", "--embedded", "--no-auth", "--model-repository", str(triton_repository),
                                    "--triton-ports", "0,0,0", "--port", str(port), "--metrics-port", "0"],
                                   cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    server = ApiServer(process, port, 0, log)
    try:
        deadline = time.monotonic() + 180
        while health_status(server) != 200:
            assert process.poll() is None and time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.5)
        triton_grpc = re.search(r"tritonserver ready: gRPC (127\.0\.0\.1:\d+)", server.log()).group(1)
        answer = search(server, wav(3.0), key=None)  # --no-auth: anonymous callers, limited per address
        assert answer.status == 200 and len(answer.json()["matches"]) == 10, answer.body
        process.send_signal(signal.SIGINT)  # Ctrl-C stops both
        assert process.wait(60) == 0
    finally:
        server.stop()
    with InferenceServerClient(triton_grpc) as client, pytest.raises(InferenceServerException):
        client.is_server_live(client_timeout=3)


def wav(seconds: float) -> bytes:
    out = io.BytesIO()
    sf.write(out, (0.1 * np.random.default_rng(0).standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32), SAMPLE_RATE, format="WAV")
    return out.getvalue()
