"""The event catalogue (issue 21.1): contracts/asyncapi.json is what the code generates, it is a valid
AsyncAPI 3.0 document, and it lists exactly the events the services emit and handle.

Which service emits what is declared (``ServiceSpec.publishes``) and checked here against the code:
a static scan finds the event classes each service package constructs (events are constructed only
to be emitted), in its own modules and in the shared modules it imports (the job helpers emit
``TaskRecordChanged`` / ``NotificationRuleChanged`` for their callers). A package hosting an API and
its worker (tuning, compression, registry) is checked as the union of its two services.
"""
from __future__ import annotations

import ast
import copy
import json
from functools import cache
from pathlib import Path

import grimp
import jsonschema
import pytest
from fastapi.testclient import TestClient

import services
from contracts import ALL_EVENTS, EventData
from services.lib.common.asyncapi import message_id
from services.lib.common.public_routes import is_public
from services.lib.common.settings import get_settings
from services.event_catalog import CATALOGUE, render
from services.runtime import SERVICES, build_app, event_catalogue

ASYNCAPI_SCHEMA = Path(__file__).parents[1] / "fixtures" / "asyncapi" / "3.0.0.json"
EVENT_NAMES = {e.__name__: e for e in ALL_EVENTS}
# Packages of the services themselves; any other package under services/ is shared code.
_TREE = Path(services.__file__).parent
SERVICE_PACKAGES = {f"services.{p.relative_to(_TREE).as_posix().replace('/', '.')}"
                    for p in [*_TREE.iterdir(), *(_TREE / "apps").iterdir()] if (p / "spec.py").exists()}


@pytest.fixture(scope="module")
def document() -> dict:
    return event_catalogue()


def test_the_checked_in_catalogue_is_what_the_code_generates():
    assert CATALOGUE.exists() and CATALOGUE.read_text() == render(), \
        "contracts/asyncapi.json is stale: run `python -m services.event_catalog` and commit it"


def test_the_catalogue_validates_against_the_asyncapi_3_schema(document):
    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)] == []
    # The vendored schema really checks (its bindings included), offline.
    broken = copy.deepcopy(document)
    broken["operations"]["registry.send.registry.events"]["action"] = "publish"
    broken["components"]["messages"]["ModelCreated.v1"]["bindings"]["kafka"]["key"] = 5
    assert len(list(validator.iter_errors(broken))) == 2


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict, ref: str):
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_reference_resolves_and_operations_send_their_channels_messages(document):
    # The AsyncAPI schema cannot check these; the spec requires both.
    refs = set(_refs(document))
    assert refs and all(r.startswith("#/") for r in refs)
    for ref in refs:
        _resolve(document, ref)
    for name, operation in document["operations"].items():
        channel = operation["channel"]["$ref"]
        assert all(m["$ref"].startswith(channel + "/messages/") for m in operation["messages"]), name


def test_the_catalogue_lists_every_event_with_who_publishes_and_consumes_it(document):
    messages = document["components"]["messages"]
    assert set(messages) == {message_id(e) for e in ALL_EVENTS}
    for event in ALL_EVENTS:
        message = messages[message_id(event)]
        assert (message["name"], message["x-version"]) == (event.type, event.version)
        assert message_id(event) in document["channels"][event.topic]["messages"]
        assert message["x-published-by"], f"{event.type}: no service publishes it"
        schema = document["components"]["schemas"][message_id(event)]
        assert (schema["title"], schema["x-version"], schema["x-topic"]) == (event.type, event.version, event.topic)
        assert message["headers"]["properties"]["ce_type"] == {"const": f"io.openmaas.{event.type}"}
    sent: dict[str, set[str]] = {}
    received: dict[str, set[str]] = {}
    for operation in document["operations"].values():
        side = sent if operation["action"] == "send" else received
        side.setdefault(operation["x-service"], set()).update(m["$ref"].rsplit("/", 1)[1] for m in operation["messages"])
    for spec in SERVICES.values():
        assert sent.get(spec.name, set()) == {message_id(e) for e in spec.publishes}, spec.name
        assert received.get(spec.name, set()) == {message_id(e) for c in spec.consumers for e in c.handlers}, spec.name
        assert all(m in messages for m in received.get(spec.name, ())), spec.name


def constructed_events(source: str) -> set[str]:
    """The event classes a module's code constructs (``TuneStarted(...)``, ``tuning.TuneStarted(...)``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in EVENT_NAMES:
                found.add(name)
    return found


@cache
def _module_events(module: str) -> frozenset[str]:
    path = Path(services.__file__).parent.parent / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return frozenset(constructed_events(path.read_text()))


def test_the_scan_finds_constructed_events_only():
    source = ("uow.emit(TuneStarted(job_id=j), tenant_id=t, subject=s)\n"
              "event = tuning.TuneFailed(job_id=j)\nTuneProgress.model_validate(data)\n")
    assert constructed_events(source) == {"TuneStarted", "TuneFailed"}


def test_services_declare_exactly_the_events_their_code_emits():
    graph = grimp.build_graph("services")
    modules = {m for m in graph.modules if m.startswith("services.")}
    declared: dict[str, set[str]] = {}
    for spec in SERVICES.values():
        declared.setdefault(_spec_package(spec), set()).update(e.__name__ for e in spec.publishes)
    assert set(declared) == SERVICE_PACKAGES

    def package_of(module: str) -> str:   # services.<service>, services.lib.<library>, services.apps.<app>
        parts = module.split(".")
        return ".".join(parts[:3] if parts[1] in ("lib", "apps") else parts[:2])

    shared_emitted: dict[str, set[str]] = {}   # shared module -> events it constructs
    for module in modules:
        if package_of(module) not in SERVICE_PACKAGES and _module_events(module):
            shared_emitted[module] = set(_module_events(module))
    problems = []
    for package in sorted(SERVICE_PACKAGES):
        own = {m for m in modules if m == package or m.startswith(package + ".")}
        emitted = set().union(*(_module_events(m) for m in own))
        reached = {m for o in own for m in graph.find_upstream_modules(o)} & set(shared_emitted)
        may_emit = emitted.union(*(shared_emitted[m] for m in reached))
        if emitted - declared[package]:
            problems.append(f"{package} emits {sorted(emitted - declared[package])} but its spec does not declare it")
        if declared[package] - may_emit:
            problems.append(f"{package} declares {sorted(declared[package] - may_emit)} but its code never emits it")
    # An event only shared code constructs is emitted for a caller: some caller must declare it.
    for module, events in sorted(shared_emitted.items()):
        callers = {package_of(m) for m in graph.find_downstream_modules(module)} & SERVICE_PACKAGES
        for event in sorted(events):
            if not any(event in declared[p] for p in callers):
                problems.append(f"{module} emits {event} and no service using it declares it")
    assert problems == []


def _spec_package(spec) -> str:
    """The package whose spec.py declares ``spec``."""
    import importlib

    for package in SERVICE_PACKAGES:
        module = importlib.import_module(f"{package}.spec")
        if any(value is spec for value in vars(module).values()):
            return package
    raise AssertionError(f"no spec.py declares {spec.name}")


def test_every_event_the_services_define_is_a_contract_the_catalogue_lists():
    # An EventData subclass defined in a service would be emitted without being catalogued.
    found, stack = set(), list(EventData.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith(("services.", "contracts.")):
            found.add(cls)
    assert {c for c in found if "type" in c.__dict__} == set(ALL_EVENTS)


def test_every_event_is_published_by_some_service():
    published = {e for spec in SERVICES.values() for e in spec.publishes}
    assert set(ALL_EVENTS) - published == set()


def test_the_platform_serves_the_catalogue_publicly_beside_the_docs(document):
    client = TestClient(build_app(get_settings(), services="registry"))   # any process: all services' events
    answer = client.get("/asyncapi.json")
    assert answer.status_code == 200 and answer.json() == json.loads(json.dumps(document))
    page = client.get("/asyncapi")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "ServiceDeployRequested" in page.text and "/asyncapi.json" in page.text
    assert is_public("GET", "/asyncapi.json") and is_public("GET", "/asyncapi")
