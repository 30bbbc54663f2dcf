"""docker-compose.yml without Docker: the Compose Specification schema, and consistency with the repository,
the tritonserver arguments, the Dockerfile and the secrets (README.md, "Deploy on a GPU node").

The schema is the compose-spec project's `schema/compose-spec.json` (Apache-2.0) as vendored by the PyPI
package check-jsonschema (dev extra; 0.39.0 here), read from the installed package: nothing is downloaded.
"""
from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
from check_jsonschema.builtin_schemas import get_builtin_schema
from deploy_helpers import REPO, compose, compose_raw, make_secrets, server_flags, service

# Host paths compose mounts that a fresh clone does not have, and what makes them (README.md, "Deploy on a GPU node", names each).
GENERATED_PATHS = {
    "./secrets": "deploy/make_secrets.sh",
    "./artifacts/index": "python -m export index",
    "./benchmarks/results": "docker compose itself (git-ignored results folder)",
}
OUR_IMAGE_SERVICES = ("build-engines", "triton", "publish-index")
SECRETISH = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)


def validator() -> jsonschema.protocols.Validator:
    schema = get_builtin_schema("vendor.compose-spec")
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def triton_flags() -> dict[str, str]:
    return server_flags(service("triton")["command"])


def api_flags() -> dict[str, str]:
    return server_flags(service("api")["command"])


def port_of(url: str) -> int:
    return urlsplit(url if "//" in url else f"//{url}").port


def published_ports(spec: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of a service's `ports` ("[ADDRESS:]HOST:CONTAINER")."""
    bindings = []
    for port in spec.get("ports", []):
        *address, host, container = str(port).rsplit(":", 2) if str(port).count(":") >= 2 else ["", *str(port).split(":")]
        bindings.append((address[0] if address else "", int(host), int(container)))
    return bindings


def test_compose_file_matches_the_compose_specification() -> None:
    errors = sorted(validator().iter_errors(compose()), key=lambda error: list(error.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["triton"]["restart_policy"] = "always"
    assert any("restart_policy" in error.message for error in validator().iter_errors(broken))


def test_every_variable_has_a_default() -> None:
    # A fresh node must come up with `docker compose up` alone; overrides are optional.
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    bare = [v for v in re.findall(r"\$\{[^}]*\}|\$\w+", text) if ":-" not in v]
    assert bare == []


def test_mounted_and_built_paths_exist_or_are_generated() -> None:
    docs = (REPO / "README.md").read_text(encoding="utf-8")
    for name, spec in compose()["services"].items():
        if "build" in spec:
            assert (REPO / spec["build"]["context"] / spec["build"]["dockerfile"]).is_file(), name
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in compose()["volumes"], f"{name}: undeclared named volume {source}"
                continue
            generated = next((path for path in GENERATED_PATHS if source == path or source.startswith(path + "/")), None)
            assert (REPO / source).exists() or generated, f"{name}: {source} does not exist in the repository"
            if generated:
                assert generated in docs, f"README.md (Deploy on a GPU node) does not explain where {generated} comes from"
    for name, secret in compose()["secrets"].items():
        assert secret["file"].startswith("./secrets/"), name


def test_models_the_services_name_exist_in_the_model_repository() -> None:
    repository = REPO / "model_repository"
    assert triton_flags()["load-model"] == "*"
    assert (repository / "faiss_topk" / "config.pbtxt").is_file()  # publish-index's default --model
    script = (REPO / "deploy" / "bench_perf.sh").read_text(encoding="utf-8")
    perf_model = re.search(r"^[^#\n]*\s-m (\w+)", script, re.MULTILINE).group(1)
    assert (repository / perf_model / "config.pbtxt").is_file()


def test_no_triton_port_is_published_only_the_api_and_the_grpc_proxy_are() -> None:
    triton, networks = service("triton"), compose()["networks"]
    assert "ports" not in triton and "network_mode" not in triton
    assert all(networks[name].get("internal") is True for name in triton["networks"]), "Triton is on internal networks only"
    public = {name: [(host, container) for address, host, container in published_ports(spec) if not address.startswith("127.")]
              for name, spec in compose()["services"].items()}
    assert {name: ports for name, ports in public.items() if ports} == {"api": [(8080, 8080)], "grpc-proxy": [(8001, 8443)]}
    for name, spec in compose()["services"].items():
        if "profiles" in spec:  # operator tools: host-local only
            assert all(address == "127.0.0.1" for address, _, _ in published_ports(spec)), name
    # The published services reach Triton over the internal network.
    for name in ("api", "grpc-proxy"):
        assert "backend" in service(name)["networks"] and "frontend" in service(name)["networks"], name


def test_ports_agree_with_the_server_arguments() -> None:
    flags = triton_flags()
    http, grpc, metrics = int(flags["http-port"]), int(flags["grpc-port"]), int(flags["metrics-port"])
    triton = service("triton")
    assert f"127.0.0.1:{http}/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    api = api_flags()
    assert port_of(api["triton-url"]) == grpc
    assert published_ports(service("api"))[0][2] == int(api["port"])
    assert f"127.0.0.1:{api['port']}/v1/health" in " ".join(service("api")["healthcheck"]["test"])
    proxy = (REPO / "deploy" / "grpc-proxy.conf").read_text(encoding="utf-8")
    assert f"grpc_pass grpcs://triton:{grpc};" in proxy
    assert f"listen {published_ports(service('grpc-proxy'))[0][2]} ssl http2;" in proxy
    assert port_of(service("publish-index")["environment"]["TRITON_HTTP_URL"]) == http
    assert port_of(service("perf")["environment"]["TRITON_GRPC_URL"]) == grpc
    locust = service("locust")["command"]
    assert port_of(locust[locust.index("--host") + 1]) == http
    prometheus = (REPO / "deploy" / "prometheus.yml").read_text(encoding="utf-8")
    assert f'["triton-metrics:{metrics}"]' in prometheus
    assert f'["api-metrics:{api["metrics-port"]}"]' in prometheus
    for name, spec in compose()["services"].items():
        assert all(port not in (metrics, int(api["metrics-port"])) for _, _, port in published_ports(spec)), name


def test_metrics_listen_only_on_the_internal_network() -> None:
    triton, networks = service("triton"), compose()["networks"]
    metrics_net = triton["networks"]["metrics"]
    assert networks["metrics"]["internal"] is True
    subnet = ipaddress.ip_network(networks["metrics"]["ipam"]["config"][0]["subnet"])
    assert triton_flags()["metrics-address"] == metrics_net["ipv4_address"]
    assert ipaddress.ip_address(metrics_net["ipv4_address"]) in subnet
    assert "triton-metrics" in metrics_net["aliases"]
    assert "metrics" in service("prometheus")["networks"]
    assert [name for name, spec in compose()["services"].items() if "metrics" in spec.get("networks", [])] == ["triton", "api", "prometheus"]
    api_net = service("api")["networks"]["metrics"]
    assert api_flags()["metrics-host"] == api_net["ipv4_address"] and ipaddress.ip_address(api_net["ipv4_address"]) in subnet
    assert "api-metrics" in api_net["aliases"]


def test_the_api_service_searches_triton_over_tls_with_hashed_keys_and_survives_a_triton_restart() -> None:
    api, flags = service("api"), api_flags()
    assert flags["triton-root-cert"] == "/run/secrets/grpc_root_cert" and flags["keys-file"] == "/run/secrets/api_keys"
    assert set(api["secrets"]) == {"grpc_root_cert", "api_keys"}
    assert "no-auth" not in " ".join(api["command"])
    assert flags["config"] == "/opt/cloudtune/api.yaml"
    assert "COPY --chmod=0444 configs/api.yaml /opt/cloudtune/api.yaml" in (REPO / "docker" / "api.Dockerfile").read_text(encoding="utf-8")
    # The API starts without waiting for a healthy Triton (it answers 503 meanwhile); both restart by themselves.
    assert api["depends_on"]["triton"]["condition"] == "service_started"
    assert api["restart"] == service("triton")["restart"] == "unless-stopped"
    assert service("triton")["healthcheck"]["test"] and api["healthcheck"]["test"]


def test_triton_service_runs_the_production_repository_safely() -> None:
    triton, flags = service("triton"), triton_flags()
    assert triton["command"][0] == "/opt/cloudtune/bin/triton-serve.sh"
    assert flags["model-repository"] == "/models" and flags["model-control-mode"] == "explicit"
    assert "model-config-name" not in flags, "production reads config.pbtxt (TensorRT plans)"
    assert "./model_repository:/models:ro" in triton["volumes"]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert triton["depends_on"]["build-engines"]["condition"] == "service_completed_successfully"
    assert triton["restart"] == "unless-stopped" and triton["shm_size"]
    grace = re.fullmatch(r"(\d+)s", triton["stop_grace_period"]).group(1)
    assert int(grace) > int(flags["exit-timeout-secs"])


def test_only_the_publisher_and_the_engine_builder_write_to_the_model_repository() -> None:
    writable = {
        name: [v for v in spec.get("volumes", []) if v.startswith("./model_repository") and not v.endswith(":ro")]
        for name, spec in compose()["services"].items()
    }
    assert writable.pop("build-engines") == ["./model_repository:/models"]
    assert writable.pop("publish-index") == ["./model_repository/faiss_topk:/models/faiss_topk"]
    assert all(not volumes for volumes in writable.values()), writable


def test_every_container_is_unprivileged_and_immutable() -> None:
    for name, spec in compose()["services"].items():
        user = spec["user"].split(":")[0]
        assert user not in ("0", "root") and int(user) > 0, name
        assert spec["read_only"] is True and spec["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in spec["security_opt"], name
        assert not spec.get("privileged") and "cap_add" not in spec, name


def test_no_secret_values_in_the_compose_file() -> None:
    for name, spec in compose()["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if SECRETISH.search(key) and key != "TRITON_ADMIN_HEADER":
                assert str(value).startswith("/run/secrets/"), f"{name}: {key} must point to a secret file"
        declared = compose()["secrets"]
        assert set(spec.get("secrets", [])) <= set(declared), name
    used = {secret for spec in compose()["services"].values() for secret in spec.get("secrets", [])}
    assert used == set(compose()["secrets"])


def test_declared_secrets_are_what_make_secrets_creates(tmp_path: Path) -> None:
    created = {path.name for path in make_secrets(tmp_path / "secrets").iterdir()}
    expected = {Path(secret["file"]).name for secret in compose()["secrets"].values()}
    assert expected <= created
    assert created - expected == {"dev_ca_key"}, "the CA key is never mounted"


def test_images_are_pinned_to_the_dockerfiles_triton_release() -> None:
    froms = re.findall(r"^FROM (\S+)", (REPO / "docker" / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    release = {re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d\d\.\d\d)-py3", image).group(1) for image in froms}
    assert len(release) == 1
    (release,) = release
    assert compose_raw()["x-image"].endswith(f":{release}")
    assert service("perf")["image"] == f"nvcr.io/nvidia/tritonserver:{release}-py3-sdk"
    for name, spec in compose()["services"].items():
        image = spec["image"]
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"{name}: {image} is not pinned"
        if name in OUR_IMAGE_SERVICES:
            assert spec["image"] == compose_raw()["x-image"] and spec["build"] == compose_raw()["x-build"], name
    assert service("api")["image"] == compose_raw()["x-api-image"] and service("api")["build"] == compose_raw()["x-api-build"]
    api_base = set(re.findall(r"^FROM (\S+)", (REPO / "docker" / "api.Dockerfile").read_text(encoding="utf-8"), re.MULTILINE))
    assert len(api_base) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", api_base.pop())


def test_milvus_is_opt_in_health_checked_and_unpublished() -> None:
    services = compose()["services"]
    milvus = {name: spec for name, spec in services.items() if name.startswith("milvus")}
    assert set(milvus) == {"milvus", "milvus-etcd", "milvus-minio"}
    for name, spec in milvus.items():
        assert spec["profiles"] == ["milvus"] and "ports" not in spec, name
        assert spec["healthcheck"]["test"][0] == "CMD", name
    assert {"milvus-etcd", "milvus-minio"} == {name for name, spec in services["milvus"]["depends_on"].items()
                                              if spec["condition"] == "service_healthy"}
    assert compose()["networks"]["milvus-store"]["internal"] is True
    assert set(services["milvus-etcd"]["networks"]) == set(services["milvus-minio"]["networks"]) == {"milvus-store"}
    # Triton reaches Milvus where configs/serving.yaml's catalog.milvus points a compose deployment.
    assert "backend" in services["milvus"]["networks"] and "backend" in services["triton"]["networks"]
