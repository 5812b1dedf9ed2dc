"""deploy/kubernetes/, checked against the Kubernetes and KubeRay schemas and against the code.

No cluster runs here, so these tests are what keeps the manifests honest, like test_compose.py does
for docker-compose.yml: every object validates against the Kubernetes JSON schemas that
kubernetes-validate ships (offline, strict: unknown fields are errors) and the RayCluster against
KubeRay's CRD schema (tests/unit/fixtures/kuberay/); every service in ``services.runtime.SERVICES``
runs in exactly one Deployment, every command is a real ``maas`` subcommand with real options, every
``MAAS_*`` variable is a ``Settings`` field with a valid value, ports and probes agree with
``--port`` and the routes the code serves, secrets come from the Secret and only where used, and the
RayCluster's worker groups give Ray 2.60 what ``ray start`` really parses. The checks are plain
functions so that ``test_checks_catch_mistakes`` can prove each one fails on a broken copy.
"""
from __future__ import annotations

import base64
import copy
import functools
import re
import shlex
import shutil
import socket
import subprocess
import tomllib
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from pydantic import SecretStr
from ray._private.label_utils import parse_node_labels_string
from ray._private.utils import parse_resources_json
from ray.autoscaler._private.cli_logger import cf, cli_logger
from ray.scripts.scripts import start as ray_start

from services.lib.common import health
from services.lib.common.cluster import NODE_ENV, POOL_LABEL, PUBLIC_POOL
from services.lib.common.settings import Settings
from services.lib.pools.models import NAME_PATTERN as POOL_NAME_PATTERN
from services.lib.pools.models import RESERVED_NAMES as RESERVED_POOL_NAMES
from services.runtime import SERVICES
from tests.unit.deploy_checks import (REQUIRED_SETTINGS, ROOT, address_hosts, check_known_env, check_settings_env,
                                      dockerfile_entry_cmd, dockerfile_env, dockerfile_final_stage,
                                      dockerfile_instructions, host_port, parse_maas, served_services)

K8S_DIR = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
# Not Kubernetes objects: kustomize's own files.
KUSTOMIZE_FILES = {"kustomization.yaml", "kustomizeconfig.yaml"}
KUBERAY_CRD = ROOT / "tests" / "unit" / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"

# The oldest Kubernetes minor we claim to run on, and the newest whose schemas the package ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())

# Which Secret keys each command uses, hence the only ones its pods may reference: every `maas serve`
# process connects to MongoDB and object storage and serves /metrics (MAAS_METRICS_TOKEN); `maas
# bootstrap-admin` writes the first admin to MongoDB and nothing else. Ray nodes get none: what runs
# there (inference instances above all) must hold none of the platform's credentials.
SECRETS_USED = {
    "serve": {"MAAS_MONGO_URL", "MAAS_S3_SECRET_KEY", "MAAS_METRICS_TOKEN"},
    "bootstrap-admin": {"MAAS_MONGO_URL"},
    "ray": set(),
}
# Settings whose defaults only fit a laptop, per command (bootstrap-admin talks to MongoDB only).
REQUIRED_BY_COMMAND = {"serve": REQUIRED_SETTINGS, "bootstrap-admin": ("mongo_url",)}
# MAAS_* settings that are secrets wherever they appear: SecretStr fields, credential-like names,
# and the MongoDB URL (it carries the password).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
SECRET_SETTINGS = {f"MAAS_{name.upper()}" for name, field in Settings.model_fields.items()
                   if field.annotation is SecretStr} | {"MAAS_MONGO_URL"}
PLACEHOLDER_PASSWORD = "CHANGE_ME"
LOOPBACK = {"127.0.0.1", "::1", "localhost", "0.0.0.0", ""}
# Values of fieldRef variables, for checking settings (the pod's own address).
FIELD_REF_EXAMPLES = {"status.podIP": "10.1.2.3", "metadata.name": "pod-0", "metadata.namespace": "openmaas"}

RAY_CLIENT_PORT_NAME = "client"  # KubeRay's name for the head's Ray Client port (default 10001)


# ------------------------------------------------------------------------------------ loading

def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines, as kustomize's secretGenerator `envs` reads them (# comments, blank lines)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            out[key.strip()] = value
    return out


def load_stack() -> dict[str, Any]:
    """The kustomization, its objects, and the Secret it generates (from secrets.env.example)."""
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    objects = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_DIR / name).read_text()):
            if doc is not None:
                objects.append(doc)
    example = {}
    for generator in kustomization.get("secretGenerator", []):
        values = {}
        for env_file in generator.get("envs", []):
            values.update(parse_env_file((K8S_DIR / f"{env_file}.example").read_text()))
        example[generator["name"]] = values
        objects.append({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": generator["name"], "namespace": kustomization["namespace"]},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        })
    return {"kustomization": kustomization, "objects": objects, "secret_examples": example}


def objects_of(stack: dict, kind: str) -> list[dict]:
    return [o for o in stack["objects"] if o.get("kind") == kind]


def one(stack: dict, kind: str) -> dict:
    found = objects_of(stack, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pods(stack: dict) -> Iterator[tuple[str, str, dict]]:
    """(where, role, pod template) for every pod the stack makes; role "ray" for Ray nodes."""
    for obj in stack["objects"]:
        name = obj.get("metadata", {}).get("name")
        if obj.get("kind") in ("Deployment", "Job"):
            yield f"{obj['kind']} {name}", "control-plane", obj["spec"]["template"]
        elif obj.get("kind") == "RayCluster":
            yield f"RayCluster {name} head", "ray", obj["spec"]["headGroupSpec"]["template"]
            for group in obj["spec"].get("workerGroupSpecs", []):
                yield f"RayCluster {name} group {group.get('groupName')}", "ray", group["template"]


def containers(stack: dict) -> Iterator[tuple[str, str, dict, dict]]:
    """(where, role, container, pod template) for every container of every pod."""
    for where, role, template in pods(stack):
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            yield f"{where}/{container.get('name')}", role, container, template


def maas_containers(stack: dict) -> Iterator[tuple[str, dict, dict, dict]]:
    """(where, container, pod template, owning object) for the control plane's containers."""
    for obj in stack["objects"]:
        if obj.get("kind") in ("Deployment", "Job"):
            template = obj["spec"]["template"]
            for container in template["spec"]["containers"]:
                yield f"{obj['kind']} {obj['metadata']['name']}/{container['name']}", container, template, obj


def effective_argv(container: dict) -> list[str]:
    """What the container runs: command (else the image's ENTRYPOINT) + args (else the image's CMD)."""
    image_entry, image_cmd = dockerfile_entry_cmd()
    entry = list(container["command"]) if "command" in container else image_entry
    if "args" in container:
        return entry + list(container["args"])
    return entry + (image_cmd if "command" not in container else [])


def secret_value(stack: dict, name: str, key: str) -> str:
    """A Secret value for checking settings: the example's, or a stand-in the operator sets."""
    value = stack["secret_examples"].get(name, {}).get(key)
    assert value is not None, f"secretKeyRef {name}/{key}: no such Secret key"
    return value or f"required-{key.lower()}-set-by-the-operator"


def container_env(stack: dict, container: dict) -> dict[str, str]:
    """The container's environment as Kubernetes builds it (env entries override envFrom)."""
    env: dict[str, str] = {}
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in objects_of(stack, "ConfigMap")}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in config_maps, f"envFrom: no ConfigMap {name!r}"
            env.update(config_maps[name])
        elif "secretRef" in source:
            name = source["secretRef"]["name"]
            env.update({k: secret_value(stack, name, k) for k in stack["secret_examples"].get(name, {})})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_value(stack, ref["name"], ref["key"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            assert ref["key"] in config_maps.get(ref["name"], {}), f"{item['name']}: no ConfigMap key {ref}"
            env[item["name"]] = config_maps[ref["name"]][ref["key"]]
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = FIELD_REF_EXAMPLES[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def secret_refs(container: dict) -> set[str]:
    refs = {item["valueFrom"]["secretKeyRef"]["key"] for item in container.get("env", [])
            if "secretKeyRef" in item.get("valueFrom", {})}
    assert not any("secretRef" in source for source in container.get("envFrom", [])), (
        "envFrom secretRef hands a pod every secret; reference the keys it uses one by one")
    return refs


def maas_command(stack: dict, container: dict) -> tuple[str, dict[str, Any]]:
    return parse_maas(effective_argv(container), {**dockerfile_env(), **container_env(stack, container)})


def resolve_port(port: Any, container: dict) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"port {port!r} is not a named port of container {container.get('name')}"
    return named[port]


def image_user_id() -> int:
    """The uid deploy/Dockerfile's final stage creates for its USER."""
    user = [args for ins, args in dockerfile_final_stage() if ins == "USER"][-1]
    for ins, args in dockerfile_final_stage():
        match = re.search(r"useradd\b.*--uid (\d+).*\b" + re.escape(user) + r"\b", args)
        if ins == "RUN" and match:
            return int(match.group(1))
    pytest.fail(f"deploy/Dockerfile: no useradd --uid for USER {user}")


# ------------------------------------------------------------------------------------ schemas

def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields forbidden, as `kubectl apply --validate=strict` does."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def kuberay_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict schema of each version the vendored KubeRay CRD serves."""
    # The C loader: the CRD is almost 1 MB of YAML.
    crd = yaml.load(KUBERAY_CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    kind = crd["spec"]["names"]["kind"]
    return {(f"{crd['spec']['group']}/{v['name']}", kind): strict(v["schema"]["openAPIV3Schema"])
            for v in crd["spec"]["versions"] if v.get("served")}


def check_schemas(stack: dict) -> None:
    for obj in stack["objects"]:
        assert isinstance(obj, dict) and obj.get("apiVersion") and obj.get("kind"), f"not an object: {obj!r:.80}"
        where = f"{obj['kind']} {obj.get('metadata', {}).get('name')}"
        key = (obj["apiVersion"], obj["kind"])
        if key in kuberay_schemas():
            errors = sorted(jsonschema.Draft4Validator(kuberay_schemas()[key]).iter_errors(obj), key=str)
            assert not errors, f"{where}: " + "; ".join(
                f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:  # a jsonschema.ValidationError
                raise AssertionError(f"{where} (Kubernetes {version}): "
                                     f"{'.'.join(map(str, exc.absolute_path))}: {exc.message}") from exc
            except kubernetes_validate.utils.SchemaNotFoundError as exc:
                raise AssertionError(f"{where}: {key} is no Kubernetes {version} kind (typo?)") from exc


# ------------------------------------------------------------------------------------ checks

def check_kustomization(stack: dict) -> None:
    kustomization = stack["kustomization"]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - KUSTOMIZE_FILES
    assert listed == on_disk, f"kustomization.yaml resources {sorted(listed)} != manifests {sorted(on_disk)}"
    namespace = kustomization["namespace"]
    namespaces = [o["metadata"]["name"] for o in objects_of(stack, "Namespace")]
    assert namespaces == [namespace], f"the stack must create its namespace {namespace!r}, creates {namespaces}"
    for obj in stack["objects"]:
        if obj["kind"] != "Namespace":
            # Stated in each file too, so that `kubectl apply -f` on one file lands in the same place.
            assert obj["metadata"].get("namespace") == namespace, (
                f"{obj['kind']} {obj['metadata']['name']}: namespace {obj['metadata'].get('namespace')!r}, "
                f"kustomization says {namespace!r}")
    images = {i["name"] for i in kustomization.get("images", [])}
    for where, _, container, _ in containers(stack):
        name = container["image"].rsplit(":", 1)[0]
        assert name in images, f"{where}: image {container['image']} is not under kustomization images {images}"


def check_same_image(stack: dict) -> None:
    """Control plane and Ray nodes run one image: our code must import on the Ray workers."""
    images = {(where, container.get("image")) for where, _, container, _ in containers(stack)}
    assert len({image for _, image in images}) == 1, f"containers run different images: {sorted(images)}"
    assert any(role == "ray" for _, role, _, _ in containers(stack)), "no Ray containers"


def check_service_coverage(stack: dict) -> None:
    hosting: dict[str, list[str]] = {}
    for where, container, _, owner in maas_containers(stack):
        sub, params = maas_command(stack, container)
        if sub != "serve":
            continue
        assert owner["kind"] == "Deployment", f"{where}: `maas serve` belongs in a Deployment"
        for served in served_services(params):
            assert served in SERVICES, (
                f"{where}: --services names unknown service {served!r} (known: {sorted(SERVICES)})")
            hosting.setdefault(served, []).append(where)
    for service in SERVICES:
        assert len(hosting.get(service, [])) == 1, (
            f"service {service!r} must run in exactly one Deployment, found {hosting.get(service, [])}")


def check_commands(stack: dict) -> None:
    for where, container, _, _ in maas_containers(stack):
        assert effective_argv(container)[:1] == ["maas"], f"{where}: does not run maas"
        maas_command(stack, container)


def check_env_vars(stack: dict) -> None:
    for config_map in objects_of(stack, "ConfigMap"):
        check_known_env(f"ConfigMap {config_map['metadata']['name']}", config_map.get("data", {}))
    for name, values in stack["secret_examples"].items():
        check_known_env(f"Secret {name}", values)
    for where, _, container, _ in containers(stack):
        check_known_env(where, [item["name"] for item in container.get("env", [])])
    check_known_env("deploy/Dockerfile", dockerfile_env())


def check_settings_values(stack: dict) -> None:
    """Every control-plane container's env builds valid settings with the production values set."""
    for where, container, _, _ in maas_containers(stack):
        sub, _ = maas_command(stack, container)
        check_settings_env(where, {**dockerfile_env(), **container_env(stack, container)},
                           required=REQUIRED_BY_COMMAND[sub])


def check_service_identity(stack: dict) -> None:
    """Each container names itself in telemetry (the service it hosts) and exports to the collector."""
    for where, container, _, _ in maas_containers(stack):
        env = container_env(stack, container)
        sub, params = maas_command(stack, container)
        expected = ",".join(served_services(params)) if sub == "serve" else sub
        assert env.get("MAAS_SERVICE_NAME") == expected, f"{where}: MAAS_SERVICE_NAME must be {expected!r}"
        assert env.get("MAAS_OTLP_ENDPOINT"), f"{where}: MAAS_OTLP_ENDPOINT not set"


def check_ports(stack: dict) -> None:
    """Containers declare the port `maas serve` listens on; Services reach it; one-shots have none."""
    listening: dict[str, tuple[dict, dict, int]] = {}  # Deployment -> (container, template, port)
    for where, container, template, owner in maas_containers(stack):
        sub, params = maas_command(stack, container)
        declared = [p["containerPort"] for p in container.get("ports", [])]
        if sub != "serve":
            assert not declared, f"{where}: 'maas {sub}' serves nothing, yet declares ports {declared}"
            continue
        assert declared == [params["port"]], (
            f"{where}: ports {declared}, the command listens on --port {params['port']}")
        listening[owner["metadata"]["name"]] = (container, template, params["port"])
    for deployment in objects_of(stack, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), (
            f"Deployment {deployment['metadata']['name']}: selector matches no pod")
    services = objects_of(stack, "Service")
    for name, (container, template, port) in listening.items():
        labels = template["metadata"]["labels"]
        matching = [s for s in services
                    if s["spec"].get("selector") and s["spec"]["selector"].items() <= labels.items()]
        assert matching, f"Deployment {name} listens on {port} but no Service selects its pods"
        for service in matching:
            for p in service["spec"]["ports"]:
                target = resolve_port(p.get("targetPort", p["port"]), container)
                assert target == port, (
                    f"Service {service['metadata']['name']}: targetPort {target}, {name} listens on {port}")
    for service in services:
        selector = service["spec"].get("selector") or {}
        owners = [d for d in objects_of(stack, "Deployment")
                  if selector and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(owners) == 1, f"Service {service['metadata']['name']}: selects {len(owners)} Deployments"


def check_probes(stack: dict) -> None:
    """Readiness asks a health route the process really serves; liveness and start-up only that it listens."""
    served_paths = {route.path for route in health.router.routes}  # every process serves these
    for where, container, _, _ in maas_containers(stack):
        sub, params = maas_command(stack, container)
        if sub != "serve":
            continue
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(kind)
            assert probe, f"{where}: no {kind}"
            if "httpGet" in probe:
                path = probe["httpGet"]["path"]
                assert path in served_paths, (
                    f"{where}: {kind} asks {path}, which the code does not serve ({served_paths})")
                assert resolve_port(probe["httpGet"]["port"], container) == params["port"], f"{where}: {kind} port"
            elif "tcpSocket" in probe:
                assert resolve_port(probe["tcpSocket"]["port"], container) == params["port"], f"{where}: {kind} port"
            else:
                pytest.fail(f"{where}: {kind} must be httpGet or tcpSocket on the service's port")
        assert "httpGet" in container["readinessProbe"], f"{where}: readiness must ask /healthz (backing servers)"
        # /healthz fails while Kafka or MongoDB is down: a liveness probe on it would restart every pod.
        assert "httpGet" not in container["livenessProbe"], f"{where}: liveness on /healthz restarts pods on outages"


def check_secrets(stack: dict) -> None:
    """Secrets live in the Secret only, and each pod references only the keys its command uses."""
    for config_map in objects_of(stack, "ConfigMap"):
        for key in config_map.get("data", {}):
            assert key not in SECRET_SETTINGS and not SECRET_NAME.search(key), (
                f"ConfigMap {config_map['metadata']['name']}: {key} is a secret; put it in the Secret")
    secrets = {s["metadata"]["name"]: set(s.get("data", {})) | set(s.get("stringData", {}))
               for s in objects_of(stack, "Secret")}
    used: set[tuple[str, str]] = set()
    for where, role, container, _ in containers(stack):
        for item in container.get("env", []):
            if "value" in item:
                assert item["name"] not in SECRET_SETTINGS and not SECRET_NAME.search(item["name"]), (
                    f"{where}: {item['name']} is a secret; take it from the Secret (secretKeyRef)")
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets.get(ref["name"], set()), (
                    f"{where}: no Secret key {ref['name']}/{ref['key']}")
                assert item["name"] == ref["key"], f"{where}: {item['name']} reads Secret key {ref['key']}"
                used.add((ref["name"], ref["key"]))
        command = "ray" if role == "ray" else maas_command(stack, container)[0]
        refs = secret_refs(container)
        user = "a Ray node" if command == "ray" else f"'maas {command}'"
        assert refs == SECRETS_USED[command], (
            f"{where}: references secrets {sorted(refs)}; {user} uses {sorted(SECRETS_USED[command])}")
    for name, keys in secrets.items():
        for key in keys:
            assert (name, key) in used, f"Secret {name}: {key} is referenced by no pod"


def check_secret_examples(stack: dict) -> None:
    """The example the operator copies carries no usable secret."""
    for name, values in stack["secret_examples"].items():
        for key, value in values.items():
            if key == "MAAS_MONGO_URL":
                assert urlsplit(value).password == PLACEHOLDER_PASSWORD, (
                    f"{name}.example: MAAS_MONGO_URL's password must be the placeholder {PLACEHOLDER_PASSWORD}")
            else:
                assert value == "", f"{name}.example: {key} must be empty (the operator fills it in)"


def check_backing_hosts(stack: dict) -> None:
    """Kafka, MongoDB (a replica set) and MinIO are external: real addresses, no laptop defaults."""
    for where, container, _, _ in maas_containers(stack):
        env = container_env(stack, container)
        for key in ("MAAS_KAFKA_BOOTSTRAP", "MAAS_MONGO_URL", "MAAS_S3_ENDPOINT", "MAAS_OTLP_ENDPOINT"):
            if key not in env:
                continue
            for host in address_hosts(env[key]):
                assert host not in LOOPBACK, f"{where}: {key} points at {host!r}, this pod itself"
        if "MAAS_MONGO_URL" in env:
            query = parse_qs(urlsplit(env["MAAS_MONGO_URL"]).query)
            assert query.get("replicaSet"), f"{where}: MAAS_MONGO_URL needs replicaSet=... (transactions)"
            assert urlsplit(env["MAAS_MONGO_URL"]).username and query.get("authSource"), (
                f"{where}: MAAS_MONGO_URL must log in (user:password@, authSource=)")


def check_security(stack: dict) -> None:
    """Every pod runs as the image's non-root user, without privilege escalation."""
    uid = image_user_id()
    for where, _, template in pods(stack):
        context = template["spec"].get("securityContext", {})
        assert context.get("runAsNonRoot") is True, f"{where}: runAsNonRoot must be true"
        assert context.get("runAsUser") == uid, (
            f"{where}: runAsUser {context.get('runAsUser')}, the image's user is {uid}")
        for container in template["spec"]["containers"]:
            assert container.get("securityContext", {}).get("allowPrivilegeEscalation") is False, (
                f"{where}/{container['name']}: allowPrivilegeEscalation must be false")


# ---- the RayCluster

def ray_start_args(params: dict[str, str], labels: dict[str, str], *, head: bool) -> list[str]:
    """The `ray start` argv KubeRay 1.7 runs for a group (controllers/ray/common/pod.go): each
    rayStartParams entry as --key=value ("true" as a bare flag, "false" dropped), the group's
    labels as --labels=k=v,..., all in a `bash -c` string, which shlex splits as bash does."""
    params = dict(params)
    if labels:
        params["labels"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    params["head" if head else "address"] = "true" if head else "openmaas-ray-head-svc:6379"
    params["block"] = "true"
    flags = []
    for key in sorted(params):
        value = params[key]
        if value.lower() == "true" and key not in ("log-color", "include-dashboard", "include-log-monitor"):
            flags.append(f"--{key}")
        elif value.lower() != "false" or key in ("log-color", "include-dashboard", "include-log-monitor"):
            flags.append(f"--{key}={value}")
    return shlex.split("ray start " + " ".join(flags))


def parse_ray_start(args: list[str]) -> dict[str, Any]:
    """Parse a `ray start` command with Ray's own click command and label/resource parsers."""
    assert args[:2] == ["ray", "start"], args
    try:
        params = ray_start.make_context("start", args[2:]).params
        labels = parse_node_labels_string(params["labels"])
        resources = parse_resources_json(params["resources"], cli_logger, cf) if params["resources"] else {}
    except Exception as exc:  # click's UsageError, ClickException from cli_logger.abort, ValueError
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        raise AssertionError(f"{shlex.join(args)}: {message}") from exc
    return {"params": params, "labels": labels, "resources": resources}


def check_ray_pools(stack: dict) -> None:
    """One worker group per pool; Ray 2.60 gives its nodes the pool's label and resource."""
    cluster = one(stack, "RayCluster")
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__, (
        f"rayVersion {spec['rayVersion']}, but the platform's Ray is {ray.__version__} (driver and nodes must match)")
    head = spec["headGroupSpec"]
    assert "labels" not in head.get("rayStartParams", {}), "head: KubeRay >= 1.5 rejects rayStartParams labels"
    head_node = parse_ray_start(ray_start_args(head.get("rayStartParams", {}), head.get("labels", {}), head=True))
    assert POOL_LABEL not in head_node["labels"], "the head belongs to no pool"
    pools = []
    for group in spec.get("workerGroupSpecs", []):
        name = group["groupName"]
        params = group.get("rayStartParams", {})
        # KubeRay's own validation (utils/validation.go) refuses both of these.
        assert "labels" not in params, (
            f"group {name}: KubeRay >= 1.5 rejects rayStartParams labels; use the group's labels")
        assert not (params.get("resources") and group.get("resources")), f"group {name}: resources set twice"
        pool = group.get("labels", {}).get(POOL_LABEL)
        assert pool, f"group {name}: no {POOL_LABEL} label"
        node = parse_ray_start(ray_start_args(params, group.get("labels", {}), head=False))
        assert node["labels"].get(POOL_LABEL) == pool, f"group {name}: nodes get labels {node['labels']}"
        assert node["resources"].get(f"pool:{pool}") == 1, (
            f"group {name}: nodes get resources {node['resources']}, not pool:{pool} = 1")
        assert not [r for r in node["resources"] if r.startswith("pool:") and r != f"pool:{pool}"], (
            f"group {name}: nodes in two pools: {node['resources']}")
        pools.append(pool)
    assert len(pools) == len(set(pools)), f"one worker group per pool, got {pools}"
    assert PUBLIC_POOL in pools, f"no worker group for the {PUBLIC_POOL!r} pool"
    dedicated = [p for p in pools if p != PUBLIC_POOL]
    assert dedicated, "the example has a dedicated pool besides the public one"
    for pool in dedicated:
        # The name an account creates the pool under (POST /api/v1/pools) must be one the API accepts.
        assert re.fullmatch(POOL_NAME_PATTERN, pool) and pool not in RESERVED_POOL_NAMES, (
            f"pool {pool!r}: the pools API refuses this name "
            f"(pattern {POOL_NAME_PATTERN}, reserved {RESERVED_POOL_NAMES})")


def check_ray_node_env(stack: dict) -> None:
    """Every Ray node runs with the platform's node environment (services.lib.common.cluster.NODE_ENV)."""
    for where, _, container, _ in containers(stack):
        if where.startswith("RayCluster"):
            env = {item["name"]: item.get("value") for item in container.get("env", [])}
            for key, value in NODE_ENV.items():
                assert env.get(key) == value, f"{where}: {key} must be {value!r} (NODE_ENV), is {env.get(key)!r}"


def check_ray_address(stack: dict) -> None:
    """Control-plane pods reach the head's Ray Client port through the Service KubeRay makes."""
    cluster = one(stack, "RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    service = ((head.get("headService") or {}).get("metadata", {}).get("name")
               or f"{cluster['metadata']['name']}-head-svc")
    ray_container = head["template"]["spec"]["containers"][0]
    client_port = resolve_port(RAY_CLIENT_PORT_NAME, ray_container)
    for where, container, _, _ in maas_containers(stack):
        sub, _ = maas_command(stack, container)
        if sub != "serve":
            continue
        address = container_env(stack, container).get("MAAS_RAY_ADDRESS", "")
        parts = urlsplit(address)
        assert parts.scheme == "ray", (
            f"{where}: MAAS_RAY_ADDRESS {address!r} must be ray://<head service>:<client port>")
        host, port = host_port(address)
        labels = host.split(".")
        assert labels[0] == service, f"{where}: MAAS_RAY_ADDRESS host {host!r}, the head's Service is {service!r}"
        if len(labels) > 1:
            assert labels[1] == cluster["metadata"]["namespace"], f"{where}: MAAS_RAY_ADDRESS names another namespace"
        assert port == client_port, f"{where}: MAAS_RAY_ADDRESS port {port}, the head's client port is {client_port}"


# ------------------------------------------------------------------------------------ tests

@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may download (schemas included): any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during a manifest test: {args!r}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def stack() -> dict:
    assert KUSTOMIZATION.is_file(), "deploy/kubernetes/kustomization.yaml missing"
    return load_stack()


CHECKS = [check_schemas, check_ray_node_env, check_kustomization, check_same_image, check_service_coverage, check_commands,
          check_env_vars, check_settings_values, check_service_identity, check_ports, check_probes, check_secrets,
          check_secret_examples, check_backing_hosts, check_security, check_ray_pools, check_ray_address]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_kubernetes(stack: dict, check) -> None:
    check(stack)


def test_image_installs_the_clusters_ray() -> None:
    """The image every Ray node runs installs Ray at the RayCluster's rayVersion, with the
    dashboard and agent (ray[default]) that KubeRay's health probes ask."""
    version = one(load_stack(), "RayCluster")["spec"]["rayVersion"]
    pins = [m.group(1) for ins, args in dockerfile_instructions()
            if ins == "RUN" for m in re.finditer(r"ray\[default\]==([\w.]+)", args)]
    assert pins == [version], f"deploy/Dockerfile installs ray[default] {pins}, the RayCluster runs {version}"
    # `pip install .` in the same layer must not ask for another Ray.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == "ray":
            assert requirement.specifier.contains(version), (
                f"pyproject.toml wants {line}, the RayCluster runs {version}")


def test_kuberay_crd_is_v1_with_group_labels() -> None:
    schema = kuberay_schemas()[("ray.io/v1", "RayCluster")]
    worker_group = schema["properties"]["spec"]["properties"]["workerGroupSpecs"]["items"]["properties"]
    assert {"labels", "rayStartParams", "template"} <= set(worker_group), "not KubeRay >= 1.5's RayCluster"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_builds_the_stack(tmp_path) -> None:
    """`kubectl kustomize` renders exactly the objects these tests check, the generated Secret
    included, with the image override applied to every container (RayCluster's too)."""
    build = tmp_path / "kubernetes"
    shutil.copytree(K8S_DIR, build)
    shutil.copy(build / "secrets.env.example", build / "secrets.env")
    kustomization = yaml.safe_load((build / "kustomization.yaml").read_text())
    kustomization["images"] = [{"name": i["name"], "newName": "registry.example/openmaas", "newTag": "test"}
                               for i in kustomization["images"]]
    (build / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run(["kubectl", "kustomize", str(build)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = {"objects": [o for o in yaml.safe_load_all(result.stdout) if o]}
    stack = load_stack()
    names = sorted((o["kind"], o["metadata"]["name"]) for o in stack["objects"])
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built["objects"]) == names
    images = {c["image"] for _, _, c, _ in containers(built)}
    assert images == {"registry.example/openmaas:test"}, images
    secret = one(built, "Secret")
    assert set(secret["data"]) == set(stack["secret_examples"][secret["metadata"]["name"]])


# ---- mutations

def _obj(kind: str, name: str):
    def find(s: dict) -> dict:
        return next(o for o in s["objects"] if o["kind"] == kind and o["metadata"]["name"] == name)
    return find


def _container(kind: str, name: str):
    return lambda s: _obj(kind, name)(s)["spec"]["template"]["spec"]["containers"][0]


def _config(s: dict) -> dict:
    return one(s, "ConfigMap")["data"]


def _ray(s: dict) -> dict:
    return one(s, "RayCluster")["spec"]


def _env(container, key: str):
    return lambda s: next(item for item in container(s)["env"] if item["name"] == key)


GATEWAY = _container("Deployment", "gateway")
WORKER = _container("Deployment", "registry-worker")
BOOTSTRAP = _container("Job", "bootstrap-admin")


def _set_item(getter, key, value):
    def mutate(s: dict) -> None:
        getter(s)[key] = value
    return mutate


def _add_secret_env(getter, key: str):
    def mutate(s: dict) -> None:
        getter(s).setdefault("env", []).append(
            {"name": key, "valueFrom": {"secretKeyRef": {"name": "openmaas-secrets", "key": key}}})
    return mutate


def _drop_env(getter, key: str):
    def mutate(s: dict) -> None:
        container = getter(s)
        container["env"] = [item for item in container["env"] if item["name"] != key]
    return mutate


def _public_group(s: dict) -> dict:
    return next(g for g in _ray(s)["workerGroupSpecs"] if g["groupName"] == "public")


MUTATIONS = {
    "unknown field": (check_schemas, _set_item(GATEWAY, "enviroment", [])),
    "wrong field type": (check_schemas, lambda s: _obj("Deployment", "gateway")(s)["spec"].update(replicas="one")),
    "unknown RayCluster field": (check_schemas, _set_item(_public_group, "rayStartParam", {})),
    "RayCluster field type": (check_schemas, _set_item(_public_group, "replicas", "two")),
    "unknown kind": (check_schemas, lambda s: s["objects"].append(
        {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}})),
    "manifest not listed": (check_kustomization, lambda s: s["kustomization"]["resources"].remove("deployer.yaml")),
    "wrong namespace": (check_kustomization, lambda s: _obj("Deployment", "deployer")(s)["metadata"].update(
        namespace="default")),
    "image not under kustomize": (check_kustomization, _set_item(GATEWAY, "image", "other:1")),
    "ray on another image": (check_same_image, lambda s: _ray(s)["headGroupSpec"]["template"]["spec"]["containers"][0]
                             .update(image="rayproject/ray:2.60.0")),
    "unknown service": (check_service_coverage, _set_item(
        WORKER, "args", ["maas", "serve", "--services", "registy-worker"])),
    "service in two Deployments": (check_service_coverage, _set_item(
        WORKER, "args", ["maas", "serve", "--services", "registry-worker,gateway", "--port", "8000"])),
    "service missing": (check_service_coverage, lambda s: s["objects"].remove(
        _obj("Deployment", "registry-worker")(s))),
    "unknown subcommand": (check_commands, _set_item(GATEWAY, "args", ["maas", "serv", "--services", "gateway"])),
    "unknown option": (check_commands, _set_item(GATEWAY, "args", ["maas", "serve", "--service", "gateway"])),
    "command overrides maas": (check_commands, _set_item(GATEWAY, "command", ["python", "-m", "http.server"])),
    "typo env var in ConfigMap": (check_env_vars, lambda s: _config(s).update(
        MAAS_KAFKA_BOOTSTRAPS=_config(s).pop("MAAS_KAFKA_BOOTSTRAP"))),
    "typo env var in container": (check_env_vars, lambda s: _env(GATEWAY, "MAAS_SERVICE_NAME")(s).update(
        name="MAAS_SERVICENAME")),
    "bad bool value": (check_settings_values, lambda s: _config(s).update(MAAS_S3_SECURE="nope")),
    "missing kafka": (check_settings_values, lambda s: _config(s).pop("MAAS_KAFKA_BOOTSTRAP")),
    "missing mongo url": (check_settings_values, _drop_env(BOOTSTRAP, "MAAS_MONGO_URL")),
    "service name mismatch": (check_service_identity, lambda s: _env(WORKER, "MAAS_SERVICE_NAME")(s).update(
        value="gw")),
    "no otlp endpoint": (check_service_identity, lambda s: _config(s).pop("MAAS_OTLP_ENDPOINT")),
    "container port mismatch": (check_ports, lambda s: WORKER(s)["ports"][0].update(containerPort=9000)),
    "command port mismatch": (check_ports, _set_item(WORKER, "args", ["maas", "serve", "--services", "registry-worker",
                                                                      "--port", "9000"])),
    "service targets another port": (check_ports, lambda s: _obj("Service", "gateway")(s)["spec"]["ports"][0]
                                     .update(targetPort=9000)),
    "service selects nothing": (check_ports, lambda s: _obj("Service", "gateway")(s)["spec"].update(
        selector={"app.kubernetes.io/name": "gatewya"})),
    "one-shot with a port": (check_ports, _set_item(BOOTSTRAP, "ports", [{"containerPort": 8000}])),
    "probe on a route nobody serves": (check_probes, lambda s: GATEWAY(s)["readinessProbe"]["httpGet"].update(
        path="/health")),
    "probe on another port": (check_probes, lambda s: WORKER(s)["readinessProbe"]["httpGet"].update(port=9000)),
    "liveness on healthz": (check_probes, _set_item(
        GATEWAY, "livenessProbe", {"httpGet": {"path": "/healthz", "port": "http"}})),
    "no readiness probe": (check_probes, lambda s: GATEWAY(s).pop("readinessProbe")),
    "secret in the ConfigMap": (check_secrets, lambda s: _config(s).update(MAAS_S3_SECRET_KEY="x")),
    "literal secret in a container": (check_secrets, lambda s: _env(WORKER, "MAAS_METRICS_TOKEN")(s).update(
        {"value": "x" * 40, "valueFrom": {}})),
    "secret where unused": (check_secrets, _add_secret_env(BOOTSTRAP, "MAAS_S3_SECRET_KEY")),
    "secret on ray nodes": (check_secrets, _add_secret_env(
        lambda s: _ray(s)["headGroupSpec"]["template"]["spec"]["containers"][0], "MAAS_S3_SECRET_KEY")),
    "secret missing where used": (check_secrets, _drop_env(WORKER, "MAAS_METRICS_TOKEN")),
    "every secret to a pod": (check_secrets, lambda s: GATEWAY(s)["envFrom"].append(
        {"secretRef": {"name": "openmaas-secrets"}})),
    "unknown secret key": (check_secrets, lambda s: _env(WORKER, "MAAS_METRICS_TOKEN")(s)["valueFrom"]["secretKeyRef"]
                           .update(key="MAAS_METRICS_TOKENS")),
    "example with a real secret": (check_secret_examples, lambda s: s["secret_examples"]["openmaas-secrets"]
                                   .update(MAAS_S3_SECRET_KEY="s3cret")),
    "loopback kafka": (check_backing_hosts, lambda s: _config(s).update(MAAS_KAFKA_BOOTSTRAP="127.0.0.1:9092")),
    "mongo without replica set": (check_backing_hosts, lambda s: s["secret_examples"]["openmaas-secrets"].update(
        MAAS_MONGO_URL="mongodb://maas:CHANGE_ME@mongo:27017/?authSource=admin")),
    "root pod": (check_security, lambda s: _obj("Deployment", "deployer")(s)["spec"]["template"]["spec"]
                 ["securityContext"].update(runAsUser=0)),
    "privilege escalation": (check_security, lambda s: _public_group(s)["template"]["spec"]["containers"][0]
                             ["securityContext"].update(allowPrivilegeEscalation=True)),
    "labels in rayStartParams": (check_ray_pools, lambda s: _public_group(s)["rayStartParams"].update(
        labels="openmaas.io/pool=public")),
    "group without pool label": (check_ray_pools, lambda s: _public_group(s).pop("labels")),
    "bad label value": (check_ray_pools, lambda s: _public_group(s)["labels"].update({POOL_LABEL: "public!"})),
    "resources not json": (check_ray_pools, lambda s: _public_group(s)["rayStartParams"].update(
        resources='"{pool:public:1}"')),
    "resource of another pool": (check_ray_pools, lambda s: _public_group(s)["rayStartParams"].update(
        resources='"{\\"pool:team-a\\": 1}"')),
    "unknown ray start option": (check_ray_pools, lambda s: _public_group(s)["rayStartParams"].update(
        {"num-cpu": "2"})),
    "two groups one pool": (check_ray_pools, lambda s: _ray(s)["workerGroupSpecs"][1].update(
        labels={POOL_LABEL: "public"}, rayStartParams={"resources": '"{\\"pool:public\\": 1}"'})),
    "pool name the API refuses": (check_ray_pools, lambda s: _ray(s)["workerGroupSpecs"][1].update(
        labels={POOL_LABEL: "team_a"}, rayStartParams={"resources": '"{\\"pool:team_a\\": 1}"'})),
    "no public pool": (check_ray_pools, lambda s: _ray(s)["workerGroupSpecs"].remove(_public_group(s))),
    "ray workers niced": (check_ray_node_env, lambda s: _public_group(s)["template"]["spec"]["containers"][0]
                          .pop("env")),
    "ray version mismatch": (check_ray_pools, lambda s: _ray(s).update(rayVersion="2.9.0")),
    "ray address on gcs port": (check_ray_address, lambda s: _config(s).update(
        MAAS_RAY_ADDRESS="ray://openmaas-ray-head-svc.openmaas.svc.cluster.local:6379")),
    "ray address without ray://": (check_ray_address, lambda s: _config(s).update(
        MAAS_RAY_ADDRESS="openmaas-ray-head-svc:10001")),
    "ray address to another service": (check_ray_address, lambda s: _config(s).update(
        MAAS_RAY_ADDRESS="ray://raycluster-head-svc:10001")),
}


@pytest.mark.parametrize("mistake", list(MUTATIONS))
def test_checks_catch_mistakes(stack: dict, mistake: str) -> None:
    """Each check fails on a deliberately broken copy, so a green run means something."""
    check, mutate = MUTATIONS[mistake]
    broken = copy.deepcopy(stack)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)
