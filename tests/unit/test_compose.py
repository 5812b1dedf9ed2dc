"""docker-compose.yml, deploy/Dockerfile and the telemetry configs, checked against the code.

Docker does not run on our machines, so these tests are what keeps the production stack honest:
every service in ``services.runtime.SERVICES`` has its container, every command is a real ``maas``
subcommand with real options, every ``MAAS_*`` variable is a ``Settings`` field with a valid value,
ports agree with ``--port``, mounted files exist, dependencies are defined. The checks are plain
functions so that ``test_checks_catch_mistakes`` can prove each one fails on a broken copy.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from services.runtime import SERVICES
from tests.unit import deploy_checks
from tests.unit.deploy_checks import (DIRECT_ENV, DOCKERFILE, ROOT, address_hosts, check_known_env,
                                      check_settings_env, dockerfile_entry_cmd, dockerfile_env,
                                      dockerfile_final_stage, dockerfile_instructions, host_port,
                                      served_services)

COMPOSE_FILE = ROOT / "docker-compose.yml"

TOP_LEVEL_KEYS = {"name", "version", "services", "volumes", "networks", "configs", "secrets", "include"}
SERVICE_KEYS = {
    "build", "image", "command", "entrypoint", "environment", "env_file", "ports", "expose", "volumes",
    "depends_on", "healthcheck", "restart", "user", "working_dir", "networks", "labels", "deploy",
    "profiles", "container_name", "hostname", "ulimits", "logging", "stop_grace_period", "stop_signal",
    "init", "read_only", "tmpfs", "cap_add", "cap_drop", "security_opt", "shm_size", "extra_hosts",
    "mem_limit", "cpus", "configs", "secrets", "pull_policy", "develop",
}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# ------------------------------------------------------------------------------------ helpers

def load_compose() -> dict[str, Any]:
    # safe_load resolves anchors and "<<" merge keys the way docker compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


def required_placeholder(name: str) -> str:
    """What a test puts for a secret the operator must set (long enough for MAAS_METRICS_TOKEN)."""
    return f"required-{name.lower()}-set-by-the-operator"


def interpolate(value: Any) -> Any:
    """Compose variable interpolation with no .env: ${X:-default} / ${X-default} -> default;
    ${X:?message} / ${X?message}, a secret with no safe default, -> required_placeholder(X)."""
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        inner = m.group(1)
        name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", inner).group(0)
        rest = inner[len(name):]
        for sep in (":-", "-"):
            if rest.startswith(sep):
                return rest[len(sep):]
        if rest.startswith((":?", "?")):
            return required_placeholder(name)
        pytest.fail(f"${{{inner}}} has no default; the stack must start without a .env file "
                    "(a secret that must be set says so with ${X:?message})")

    return re.sub(r"\$\{([^}]+)\}", sub, value).replace("$$", "$")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): v for k, v in env.items()}


def argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def builds_our_image(service: dict) -> bool:
    build = service.get("build")
    if build is None:
        return False
    if isinstance(build, str):
        build = {"context": build}
    dockerfile = (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
    return dockerfile == DOCKERFILE.resolve()


def effective_argv(service: dict) -> list[str]:
    """What the container runs: the image's ENTRYPOINT + (compose command or the image's CMD)."""
    image_entry, image_cmd = dockerfile_entry_cmd() if builds_our_image(service) else ([], [])
    entry = argv(service["entrypoint"]) if "entrypoint" in service else image_entry
    cmd = argv(service["command"]) if "command" in service else image_cmd
    return entry + cmd


def maas_containers(compose: dict) -> dict[str, dict]:
    """OpenMaaS containers: built from deploy/Dockerfile or running the maas command."""
    return {name: svc for name, svc in compose["services"].items()
            if builds_our_image(svc) or effective_argv(svc)[:1] == ["maas"]}


def parse_maas(args: list[str], env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """deploy_checks.parse_maas, with compose's ${...} interpolation applied to the environment."""
    return deploy_checks.parse_maas(args, {key: str(interpolate(value)) for key, value in env.items()})


def container_port(spec: Any) -> int:
    """Container side of a ports/expose entry: "8000", "8000:8000", "127.0.0.1:80:8000/tcp", {target: 8000}."""
    if isinstance(spec, dict):
        return int(spec["target"])
    return int(str(spec).split("/")[0].rsplit(":", 1)[-1])


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out.append((vol["source"], vol["target"]))
            continue
        source, target = (vol.split(":") + [""])[:2]
        if source.startswith((".", "/", "~")):
            out.append((source, target))
    return out


def named_volumes(service: dict) -> list[str]:
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "volume" and vol.get("source"):
                out.append(vol["source"])
        elif ":" in vol and not vol.startswith((".", "/", "~")):
            out.append(vol.split(":")[0])
    return out


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


# ------------------------------------------------------------------------------------ checks

def check_structure(compose: dict) -> None:
    assert isinstance(compose, dict), "compose file is not a mapping"
    unknown = {k for k in compose if k not in TOP_LEVEL_KEYS and not k.startswith("x-")}
    assert not unknown, f"unknown top-level keys {unknown}"
    assert isinstance(compose.get("services"), dict) and compose["services"], "no services"
    assert isinstance(compose.get("volumes"), dict), "no top-level volumes"
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        assert isinstance(svc, dict), f"{name}: not a mapping"
        bad = set(svc) - SERVICE_KEYS
        assert not bad, f"{name}: unknown keys {bad} (typo?)"
        assert "image" in svc or "build" in svc, f"{name}: neither image nor build"
        for vol in named_volumes(svc):
            assert vol in declared, f"{name}: volume {vol!r} is not declared under top-level volumes"
        for key, value in env_of(svc).items():
            assert not isinstance(value, (dict, list)), f"{name}: {key} is not a scalar"
        if "healthcheck" in svc:
            test = svc["healthcheck"]["test"]
            assert isinstance(test, str) or test[0] in ("CMD", "CMD-SHELL", "NONE"), f"{name}: healthcheck {test}"


def check_service_coverage(compose: dict) -> None:
    hosting: dict[str, list[str]] = {}
    for name, svc in maas_containers(compose).items():
        args = effective_argv(svc)
        sub, params = parse_maas(args, env_of(svc))
        if sub != "serve":
            continue
        for served in served_services(params):
            assert served in SERVICES, f"{name}: --services names unknown service {served!r} (known: {sorted(SERVICES)})"
            hosting.setdefault(served, []).append(name)
    for service in SERVICES:
        assert len(hosting.get(service, [])) == 1, (
            f"service {service!r} must run in exactly one container, found {hosting.get(service, [])}")


def check_commands(compose: dict) -> None:
    for name, svc in maas_containers(compose).items():
        assert builds_our_image(svc), f"{name}: runs maas but is not built from deploy/Dockerfile"
        parse_maas(effective_argv(svc), env_of(svc))


def check_env_vars(compose: dict) -> None:
    sources = {name: env_of(svc) for name, svc in compose["services"].items()}
    sources.update({key: value for key, value in compose.items() if key.startswith("x-") and key.endswith("-env")})
    sources["deploy/Dockerfile"] = dockerfile_env()
    for where, env in sources.items():
        check_known_env(where, env)


def check_settings_values(compose: dict) -> None:
    """Every OpenMaaS container's env builds a valid Settings with the production values set."""
    for name, svc in maas_containers(compose).items():
        check_settings_env(name, {**dockerfile_env(), **{k: str(interpolate(v)) for k, v in env_of(svc).items()}})


def check_service_identity(compose: dict) -> None:
    """Each serving container names itself in telemetry and exports to the collector."""
    for name, svc in maas_containers(compose).items():
        env = env_of(svc)
        sub, params = parse_maas(effective_argv(svc), env)
        if sub == "serve":
            assert env.get("MAAS_SERVICE_NAME") == ",".join(served_services(params)), (
                f"{name}: MAAS_SERVICE_NAME must be the service it hosts")
        assert env.get("MAAS_OTLP_ENDPOINT"), f"{name}: MAAS_OTLP_ENDPOINT not set"


def check_backing_hosts(compose: dict) -> None:
    services = compose["services"]
    for name, svc in maas_containers(compose).items():
        env = {k: str(interpolate(v)) for k, v in env_of(svc).items()}
        for key in ("MAAS_KAFKA_BOOTSTRAP", "MAAS_MONGO_URL", "MAAS_S3_ENDPOINT", "MAAS_OTLP_ENDPOINT"):
            for host in address_hosts(env.get(key, "")):
                assert host in services, f"{name}: {key} points at {host!r}, not a compose service"
        mongo_url = env["MAAS_MONGO_URL"]
        replica_set = parse_qs(urlsplit(mongo_url).query).get("replicaSet", [None])[0]
        assert replica_set, f"{name}: MAAS_MONGO_URL needs replicaSet=... (transactions need a replica set)"
        mongo = services[address_hosts(mongo_url)[0]]
        mongo_args = argv(mongo.get("command"))
        assert "--replSet" in mongo_args and mongo_args[mongo_args.index("--replSet") + 1] == replica_set, (
            f"mongo must run with --replSet {replica_set}")


def check_minio_credentials(compose: dict) -> None:
    services = compose["services"]
    for name, svc in maas_containers(compose).items():
        env = env_of(svc)
        store = env_of(services[host_port(str(interpolate(env["MAAS_S3_ENDPOINT"])))[0]])
        assert store.get("MINIO_ROOT_USER") == env["MAAS_S3_ACCESS_KEY"], f"{name}: S3 access key != MINIO_ROOT_USER"
        assert store.get("MINIO_ROOT_PASSWORD") == env["MAAS_S3_SECRET_KEY"], f"{name}: S3 secret != MINIO_ROOT_PASSWORD"


def check_ports(compose: dict) -> None:
    for name, svc in maas_containers(compose).items():
        sub, params = parse_maas(effective_argv(svc), env_of(svc))
        published = [container_port(p) for p in svc.get("ports") or []]
        exposed = [container_port(p) for p in svc.get("expose") or []]
        if sub != "serve":
            assert not published and not exposed, f"{name}: 'maas {sub}' serves nothing, yet has ports"
            continue
        port = params["port"]
        for p in published + exposed:
            assert p == port, f"{name}: port {p} but the command listens on --port {port}"
        test = " ".join(argv((svc.get("healthcheck") or {}).get("test")))
        for p in re.findall(r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0):(\d+)", test):
            assert int(p) == port, f"{name}: healthcheck probes port {p}, the command listens on {port}"
        if "gateway" in served_services(params):
            assert port in published, f"{name}: the gateway must publish its port {port}"


def check_mounts(compose: dict) -> None:
    for name, svc in compose["services"].items():
        for source, _ in bind_mounts(svc):
            assert (ROOT / source).exists(), f"{name}: mounts {source}, which is not in the repo"
        build = svc.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            context = ROOT / build.get("context", ".")
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: Dockerfile missing"


# Environment keys that carry a secret, and the only acceptable value for one: a required variable.
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}")
LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}


def check_no_default_secrets(compose: dict) -> None:
    """A stack started without its .env must not come up with a password everyone knows."""
    for name, svc in compose["services"].items():
        for key, value in env_of(svc).items():
            if SECRET_KEY.search(key):
                assert REQUIRED_VARIABLE.fullmatch(str(value)), (
                    f"{name}: {key} must be ${{VARIABLE:?message}} (set in .env, no default), got {value!r}")


def check_mongo_auth(compose: dict) -> None:
    """MongoDB runs with authentication, and every OpenMaaS container logs in with its root user."""
    services = compose["services"]
    for name, svc in maas_containers(compose).items():
        url = str(env_of(svc).get("MAAS_MONGO_URL", ""))
        mongo = services[address_hosts(str(interpolate(url)))[0]]
        mongo_env = env_of(mongo)
        user, password = (str(mongo_env.get(f"MONGO_INITDB_ROOT_{k}", "")) for k in ("USERNAME", "PASSWORD"))
        assert user and password, "mongo must make a root user (MONGO_INITDB_ROOT_USERNAME/PASSWORD): auth on"
        args = argv(mongo.get("command"))
        assert "--keyFile" in args and "--noauth" not in args, (
            "mongo: a replica set with authentication needs --keyFile (and no --noauth)")
        parts = urlsplit(str(interpolate(url)))
        # The very same variables as the mongo service's, not a copy that could drift.
        assert user in url and password in url, f"{name}: MAAS_MONGO_URL must log in with mongo's root user"
        assert (parts.username, parts.password) == (interpolate(user), interpolate(password)), (
            f"{name}: MAAS_MONGO_URL must be mongodb://<root user>:<root password>@...")
        assert parse_qs(parts.query).get("authSource") == ["admin"], (
            f"{name}: MAAS_MONGO_URL needs authSource=admin (where the root user lives)")


def published_host_ip(spec: Any) -> str:
    """Host address a ports entry binds: "8000:8000" -> "" (every interface), "127.0.0.1:3000:3000" -> "127.0.0.1"."""
    if isinstance(spec, dict):
        return str(spec.get("host_ip", ""))
    parts = str(spec).split("/")[0].rsplit(":", 2)
    return parts[0] if len(parts) == 3 else ""


def check_published_ports(compose: dict) -> None:
    """Only the API gateway is published on every interface; anything else on this machine only."""
    gateways = {name for name, svc in maas_containers(compose).items()
                if "gateway" in served_services(parse_maas(effective_argv(svc), env_of(svc))[1])}
    for name, svc in compose["services"].items():
        if name in gateways:
            continue
        for spec in svc.get("ports") or []:
            assert published_host_ip(spec) in LOOPBACK, (
                f"{name}: publishes {spec!r} on every interface; use \"127.0.0.1:HOST:CONTAINER\"")


def check_depends_on(compose: dict) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for target, condition in depends_on(svc).items():
            assert target in services, f"{name}: depends_on {target!r}, which is not defined"
            assert target != name, f"{name}: depends on itself"
            assert condition in DEPENDS_CONDITIONS, f"{name}: unknown condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name}: waits for {target} healthy; it has no healthcheck"
            if condition == "service_completed_successfully":
                assert str(services[target].get("restart", "no")) == "no", (
                    f"{name}: waits for {target} to complete, but {target} is restarted")


# ------------------------------------------------------------------------------------ tests

@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml missing"
    return load_compose()


CHECKS = [check_structure, check_service_coverage, check_commands, check_env_vars, check_settings_values,
          check_service_identity, check_backing_hosts, check_minio_credentials, check_ports, check_mounts,
          check_depends_on, check_no_default_secrets, check_mongo_auth, check_published_ports]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_compose(compose: dict, check) -> None:
    check(compose)


def test_direct_env_vars_are_really_read() -> None:
    for key, source in DIRECT_ENV.items():
        assert key in source.read_text(), f"{key} is allowed as a direct env var but {source} does not read it"


def _set(path: str, value: Any):
    def mutate(c: dict) -> None:
        *parents, last = path.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _drop_env(service: str, key: str):
    def mutate(c: dict) -> None:
        del c["services"][service]["environment"][key]
    return mutate


def _rename_env(service: str, key: str, new: str):
    def mutate(c: dict) -> None:
        env = c["services"][service]["environment"]
        env[new] = env.pop(key)
    return mutate


MUTATIONS = {
    "typo env var": (check_env_vars, _rename_env("gateway", "MAAS_KAFKA_BOOTSTRAP", "MAAS_KAFKA_BOOTSTRAPS")),
    "missing mongo url": (check_settings_values, _drop_env("registry-worker", "MAAS_MONGO_URL")),
    "bad bool value": (check_settings_values, _set("services.gateway.environment.MAAS_S3_SECURE", "nope")),
    "unknown service": (check_service_coverage,
                        _set("services.registry-worker.command", "maas serve --services registy-worker --port 8000")),
    "service in two containers": (check_service_coverage,
                                  _set("services.registry-worker.command", "maas serve --services registry-worker,gateway --port 8000")),
    "service missing": (check_service_coverage, lambda c: c["services"].pop("registry-worker")),
    "unknown subcommand": (check_commands, _set("services.gateway.command", "maas serv --services gateway")),
    "unknown option": (check_commands, _set("services.gateway.command", "maas serve --service gateway")),
    "published port mismatch": (check_ports, _set("services.gateway.ports", ["8000:8001"])),
    "command port mismatch": (check_ports, _set("services.registry-worker.command",
                                                "maas serve --services registry-worker --port 9000")),
    "healthcheck port mismatch": (check_ports, _set("services.gateway.healthcheck.test",
                                                    ["CMD", "curl", "-f", "http://127.0.0.1:9000/healthz"])),
    "missing mount": (check_mounts, _set("services.prometheus.volumes", ["./deploy/nope.yml:/etc/p.yml"])),
    "undefined depends_on": (check_depends_on, _set("services.gateway.depends_on", ["kafkaa"])),
    "healthy without healthcheck": (check_depends_on,
                                    _set("services.gateway.depends_on", {"tempo": {"condition": "service_healthy"}})),
    "undeclared volume": (check_structure, _set("services.mongo.volumes", ["mongo-dta:/data/db"])),
    "typo service key": (check_structure, lambda c: c["services"]["gateway"].update(enviroment={})),
    "no replica set": (check_backing_hosts,
                       _set("services.gateway.environment.MAAS_MONGO_URL", "mongodb://mongo:27017/")),
    "wrong host": (check_backing_hosts, _set("services.gateway.environment.MAAS_S3_ENDPOINT", "s3:9000")),
    "minio secret mismatch": (check_minio_credentials, _set("services.minio.environment.MINIO_ROOT_PASSWORD", "x")),
    "service name mismatch": (check_service_identity, _set("services.registry-worker.environment.MAAS_SERVICE_NAME", "gw")),
    "default grafana password": (check_no_default_secrets,
                                 _set("services.grafana.environment.GF_SECURITY_ADMIN_PASSWORD",
                                      "${GRAFANA_ADMIN_PASSWORD:-admin}")),
    "literal s3 secret": (check_no_default_secrets, _set("services.minio.environment.MINIO_ROOT_PASSWORD", "s3cret")),
    "mongo without a root user": (check_mongo_auth, _drop_env("mongo", "MONGO_INITDB_ROOT_PASSWORD")),
    "mongo without a key file": (check_mongo_auth,
                                 _set("services.mongo.command", ["--replSet", "rs0", "--bind_ip_all"])),
    "mongo url without credentials": (check_mongo_auth, _set("services.gateway.environment.MAAS_MONGO_URL",
                                                             "mongodb://mongo:27017/?replicaSet=rs0")),
    "grafana on every interface": (check_published_ports, _set("services.grafana.ports", ["3000:3000"])),
    "mongo published": (check_published_ports, _set("services.mongo.ports", [{"target": 27017, "published": 27017}])),
}


@pytest.mark.parametrize("mistake", list(MUTATIONS))
def test_checks_catch_mistakes(compose: dict, mistake: str) -> None:
    """Each check fails on a deliberately broken copy, so a green run means something."""
    check, mutate = MUTATIONS[mistake]
    broken = copy.deepcopy(compose)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)


# ------------------------------------------------------------------------------------ Dockerfile

def test_dockerfile_runs_maas_as_non_root() -> None:
    assert DOCKERFILE.is_file()
    froms = [args for ins, args in dockerfile_instructions() if ins == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms), froms
    stage = dockerfile_final_stage()
    users = [args for ins, args in stage if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    entrypoint, cmd = dockerfile_entry_cmd()
    default = entrypoint + cmd
    assert default[:1] == ["maas"], f"final CMD/ENTRYPOINT must run maas, got {default}"
    parse_maas(default, dockerfile_env())


def test_dockerfile_copies_existing_paths() -> None:
    for ins, args in dockerfile_instructions():
        if ins not in ("COPY", "ADD") or "--from" in args:
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for source in parts[:-1]:
            assert list(ROOT.glob(source)), f"Dockerfile copies {source}, which is not in the repo"


# ------------------------------------------------------------------------------------ telemetry configs

def _mounted_config(compose: dict, filename: str) -> dict:
    for svc in compose["services"].values():
        for source, _ in bind_mounts(svc):
            if source.endswith(filename):
                return yaml.safe_load((ROOT / source).read_text())
    pytest.fail(f"no service mounts {filename}")


def test_otlp_endpoint_reaches_collector(compose: dict) -> None:
    collector = _mounted_config(compose, "otel-collector.yaml")
    http = collector["receivers"]["otlp"]["protocols"]["http"]
    _, receiver_port = host_port(http["endpoint"])
    pipelines = collector["service"]["pipelines"]
    assert "otlp" in pipelines["traces"]["receivers"]
    for name, svc in maas_containers(compose).items():
        host, port = host_port(str(interpolate(env_of(svc)["MAAS_OTLP_ENDPOINT"])))
        assert port == receiver_port, f"{name}: OTLP port {port}, collector's http receiver {receiver_port}"
        assert any(source.endswith("otel-collector.yaml") for source, _ in bind_mounts(compose["services"][host]))
    # Every exporter the pipelines use is defined, and network exporters target compose services.
    for pipeline in pipelines.values():
        for exporter in pipeline["exporters"]:
            assert exporter in collector["exporters"], f"pipeline uses undefined exporter {exporter}"
    tempo_host, _ = host_port(collector["exporters"]["otlp/tempo"]["endpoint"])
    assert tempo_host in compose["services"]


def test_prometheus_sends_the_metrics_token_the_platform_expects(compose: dict) -> None:
    """/metrics answers only MAAS_METRICS_TOKEN (and admins): Prometheus must send that same value."""
    job = next(j for j in _mounted_config(compose, "prometheus.yml")["scrape_configs"] if j["job_name"] == "openmaas")
    auth = job.get("authorization") or {}
    assert auth.get("type", "Bearer") == "Bearer" and auth.get("credentials_file", "").startswith("/run/secrets/"), (
        "the openmaas scrape job must send a bearer token from a compose secret")
    secret = auth["credentials_file"].removeprefix("/run/secrets/")
    assert secret in (compose["services"]["prometheus"].get("secrets") or []), f"prometheus lacks secret {secret}"
    assert (compose.get("secrets") or {}).get(secret) == {"environment": "MAAS_METRICS_TOKEN"}, (
        f"secret {secret} must be the MAAS_METRICS_TOKEN the platform reads")
    for name, svc in maas_containers(compose).items():
        value = str(env_of(svc).get("MAAS_METRICS_TOKEN", ""))
        assert re.fullmatch(r"\$\{MAAS_METRICS_TOKEN:\?[^}]+\}", value), (
            f"{name}: MAAS_METRICS_TOKEN must be ${{MAAS_METRICS_TOKEN:?...}} (required, no default), got {value!r}")


def test_prometheus_and_grafana_targets_are_compose_services(compose: dict) -> None:
    services = set(compose["services"])
    prometheus = _mounted_config(compose, "prometheus.yml")
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _ = host_port(target)
                assert host in services | {"localhost"}, f"prometheus job {job['job_name']}: {target}"
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text())["datasources"]
    assert {d["type"] for d in datasources} >= {"prometheus", "tempo"}
    for ds in datasources:
        assert host_port(ds["url"])[0] in services, f"grafana datasource {ds['name']}: {ds['url']}"


def test_grafana_dashboards(compose: dict) -> None:
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yaml").read_text())["providers"][0]
    mounts = {target: source for svc in compose["services"].values() for source, target in bind_mounts(svc)}
    assert provider["options"]["path"] in mounts, "Grafana's dashboards path is not mounted"
    folder = ROOT / mounts[provider["options"]["path"]]
    datasource_uids = {d["uid"] for d in yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text())["datasources"]}
    dashboards = sorted(folder.glob("*.json"))
    assert dashboards, f"no dashboards in {folder}"
    for path in dashboards:
        board = json.loads(path.read_text())
        assert board.get("panels"), f"{path.name}: no panels"
        for panel in board["panels"]:
            for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if isinstance(ref, dict):
                    assert ref.get("uid") in datasource_uids, f"{path.name}: unknown datasource {ref}"
