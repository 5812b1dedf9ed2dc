"""Grafana dashboards and the Prometheus scrape config, checked against the code.

Grafana does not run here, so these tests keep the dashboards honest: each is schema-checked
(panels with targets, grid positions, datasources that the provisioning defines, variables that are
defined), and every metric a PromQL expression queries must be one that the code registers in
``services.lib.common.metrics`` (or the otel-collector / Prometheus itself exposes). The checks are plain
functions so ``test_checks_catch_mistakes`` can show each one fails on a broken copy.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from services.lib.common import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

# The otel-collector's own telemetry (scraped from otel-collector:8888), as named by the collector
# (0.120 adds "_total" to counters; the dashboards match both spellings).
OTELCOL_METRICS = {f"{n}{s}" for s in ("", "_total") for n in (
    "otelcol_receiver_accepted_spans", "otelcol_receiver_refused_spans",
    "otelcol_exporter_sent_spans", "otelcol_exporter_send_failed_spans",
    "otelcol_processor_batch_batch_send_size", "otelcol_exporter_queue_size")}
# Series Prometheus adds to every scrape target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
GRAFANA_BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__all"}

PANEL_WITHOUT_TARGETS = {"row", "text"}

DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "time", "templating"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-z0-9-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array", "items": {
            "type": "object", "required": ["name", "type"],
            "properties": {"name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}}}}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["timeseries", "stat", "table", "gauge", "bargauge", "text", "row", "traces",
                                  "piechart", "heatmap", "logs"]},
                "title": {"type": "string", "minLength": 1},
                "gridPos": {"type": "object", "required": ["h", "w", "x", "y"], "properties": {
                    "h": {"type": "integer", "minimum": 1}, "w": {"type": "integer", "minimum": 1, "maximum": 24},
                    "x": {"type": "integer", "minimum": 0, "maximum": 23}, "y": {"type": "integer", "minimum": 0}}},
                "datasource": {"type": "object", "required": ["type", "uid"]},
                "targets": {"type": "array", "items": {"type": "object", "required": ["refId"]}},
            },
            "if": {"properties": {"type": {"not": {"enum": sorted(PANEL_WITHOUT_TARGETS)}}}},
            "then": {"required": ["datasource", "targets"], "properties": {"targets": {"minItems": 1}}},
        }},
    },
}


def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def datasources() -> dict[str, str]:
    """uid → type of the provisioned datasources."""
    return {d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}


# ------------------------------------------------------------------------------------ PromQL

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_NAME_MATCHER = re.compile(r'__name__\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![A-Za-z_:])\d+(\.\d+)?([eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "Inf", "NaN"}


def promql_metrics(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, __name__ regexes) that a PromQL expression selects."""
    regexes = {m.group(2) for m in _NAME_MATCHER.finditer(expr)}
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)             # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)            # ranges and subqueries
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)           # Grafana variables
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        if word in _KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue  # a function or aggregation, or a keyword
        names.add(word)
    return names, regexes


def variable_query(variable: dict) -> str:
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else str(query)


def prometheus_expressions(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every Prometheus target and query variable."""
    ds = datasources()
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            ref = target.get("datasource") or panel.get("datasource") or {}
            if ds.get(ref.get("uid")) == "prometheus" and "expr" in target:
                found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in board["templating"]["list"]:
        query = variable_query(variable)
        inner = re.fullmatch(r"\s*(?:label_values|query_result)\((.*)\)\s*", query, re.S)
        if variable.get("type") == "query" and inner:
            expr = inner.group(1)
            if query.strip().startswith("label_values") and "," in expr:
                expr = expr.rsplit(",", 1)[0]   # label_values(<selector>, <label>)
            found.append((f"variable {variable['name']}", expr))
    return found


def known_metrics() -> set[str]:
    return metrics.metric_names() | OTELCOL_METRICS | PROMETHEUS_SYNTHETIC


# ------------------------------------------------------------------------------------ checks

def check_schema(boards: dict[str, dict]) -> None:
    for name, board in boards.items():
        try:
            jsonschema.validate(board, DASHBOARD_SCHEMA)
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"{name}: {exc.json_path}: {exc.message}") from None


def check_identity(boards: dict[str, dict]) -> None:
    uids = [b["uid"] for b in boards.values()]
    assert len(uids) == len(set(uids)), f"dashboard uids repeat: {uids}"
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in board["panels"]:
            refs = [t["refId"] for t in panel.get("targets", [])]
            assert len(refs) == len(set(refs)), f"{name}: panel {panel['title']!r} repeats a refId"


def check_layout(boards: dict[str, dict]) -> None:
    for name, board in boards.items():
        taken: dict[tuple[int, int], str] = {}
        for panel in board["panels"]:
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24, f"{name}: panel {panel['title']!r} is wider than the grid"
            for y in range(g["y"], g["y"] + g["h"]):
                for x in range(g["x"], g["x"] + g["w"]):
                    other = taken.setdefault((x, y), panel["title"])
                    assert other == panel["title"], f"{name}: {panel['title']!r} overlaps {other!r}"


def check_datasources(boards: dict[str, dict]) -> None:
    ds = datasources()
    for name, board in boards.items():
        refs = [(f"variable {v['name']}", v.get("datasource")) for v in board["templating"]["list"]]
        for panel in board["panels"]:
            refs.append((f"panel {panel['title']!r}", panel.get("datasource")))
            refs += [(f"panel {panel['title']!r} {t['refId']}", t.get("datasource")) for t in panel.get("targets", [])]
        for where, ref in refs:
            if ref is None:
                continue
            assert isinstance(ref, dict), f"{name}: {where}: datasource must be {{type, uid}}, got {ref!r}"
            assert ref.get("uid") in ds, f"{name}: {where}: datasource uid {ref.get('uid')!r} is not provisioned"
            assert ref.get("type") == ds[ref["uid"]], f"{name}: {where}: datasource type {ref.get('type')!r} " \
                                                      f"!= provisioned {ds[ref['uid']]!r}"
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                kind = ds[(target.get("datasource") or panel["datasource"])["uid"]]
                if kind == "prometheus":
                    assert target.get("expr", "").strip(), f"{name}: {panel['title']!r}: Prometheus target needs expr"
                if kind == "tempo":
                    assert target.get("queryType") and "query" in target, (
                        f"{name}: {panel['title']!r}: Tempo target needs queryType and query")


def check_variables(boards: dict[str, dict]) -> None:
    for name, board in boards.items():
        defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_BUILTIN_VARS
        for where, expr in prometheus_expressions(board):
            for used in re.findall(r"\$\{?(\w+)", expr):
                assert used in defined, f"{name}: {where} uses ${used}, which the dashboard does not define"


def check_metrics_are_emitted(boards: dict[str, dict]) -> None:
    known = known_metrics()
    for name, board in boards.items():
        for where, expr in prometheus_expressions(board):
            names, regexes = promql_metrics(expr)
            assert names or regexes, f"{name}: {where}: selects no metric: {expr}"
            for metric in names:
                assert metric in known, f"{name}: {where}: metric {metric!r} is not emitted by the code"
            for regex in regexes:
                assert any(re.fullmatch(regex, m) for m in known), (
                    f"{name}: {where}: __name__=~{regex!r} matches no emitted metric")


CHECKS = [check_schema, check_identity, check_layout, check_datasources, check_variables, check_metrics_are_emitted]


@pytest.fixture(scope="module")
def boards() -> dict[str, dict]:
    found = load_dashboards()
    assert {"platform-overview.json", "services.json", "jobs.json", "traces.json"} <= set(found)
    return found


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_dashboards(boards, check) -> None:
    check(boards)


def test_every_platform_metric_family_is_on_a_dashboard(boards) -> None:
    """The reverse direction: nothing the code measures is left off the dashboards."""
    queried = set()
    for board in boards.values():
        for _, expr in prometheus_expressions(board):
            queried |= promql_metrics(expr)[0]
    families = {f.name for f in metrics.REGISTRY.collect()
                if f.name.startswith(("maas_", "gen_ai_"))} - {"maas_build_info"}
    missing = {f for f in families if not any(q == f or q.startswith(f + "_") for q in queried)}
    assert not missing, f"metrics on no dashboard: {sorted(missing)}"


def _panel(board: dict, title: str) -> dict:
    return next(p for p in board["panels"] if p["title"] == title)


def _set_expr(file: str, title: str, expr: str):
    def mutate(b):
        _panel(b[file], title)["targets"][0]["expr"] = expr
    return mutate


MUTATIONS = {
    "typo in a metric": (check_metrics_are_emitted, _set_expr(
        "jobs.json", "Consumer lag", "max by (group, topic) (maas_consumer_lag)")),
    "metric in a range": (check_metrics_are_emitted, _set_expr(
        "services.json", "CPU", "rate(process_cpu_secs_total[5m])")),
    "name regex matching nothing": (check_metrics_are_emitted, _set_expr(
        "traces.json", "Spans received by the collector", 'sum(rate({__name__=~"otelcol_nope"}[5m]))')),
    "unknown datasource": (check_datasources, lambda b: _panel(b["jobs.json"], "Outbox backlog").update(
        datasource={"type": "prometheus", "uid": "prom"})),
    "datasource of the wrong type": (check_datasources, lambda b: _panel(b["traces.json"], "Recent traces").update(
        datasource={"type": "prometheus", "uid": "tempo"})),
    "panel without targets": (check_schema, lambda b: _panel(b["services.json"], "CPU").update(targets=[])),
    "panel without gridPos": (check_schema, lambda b: _panel(b["services.json"], "CPU").pop("gridPos")),
    "undefined variable": (check_variables, _set_expr(
        "services.json", "CPU", 'rate(process_cpu_seconds_total{container=~"$pod"}[$__rate_interval])')),
    "overlapping panels": (check_layout, lambda b: _panel(b["jobs.json"], "Outbox backlog")["gridPos"].update(
        _panel(b["jobs.json"], "Consumer lag")["gridPos"])),
    "repeated uid": (check_identity, lambda b: b["jobs.json"].update(uid=b["traces.json"]["uid"])),
}


@pytest.mark.parametrize("mistake", list(MUTATIONS))
def test_checks_catch_mistakes(boards, mistake) -> None:
    check, mutate = MUTATIONS[mistake]
    broken = copy.deepcopy(boards)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)


@pytest.mark.parametrize("expr, names, regexes", [
    ('sum by (le, route) (rate(maas_http_request_duration_seconds_bucket{route=~"/a.*"}[$__rate_interval]))',
     {"maas_http_request_duration_seconds_bucket"}, set()),
    ("a_total / clamp_min(b_total offset 5m, 1e-9) > bool 0.5", {"a_total", "b_total"}, set()),
    ('sum(rate({__name__=~"x(_total)?", job="j"}[5m])) * on (instance) group_left (v) info',
     {"info"}, {"x(_total)?"}),
])
def test_promql_metric_extraction(expr, names, regexes) -> None:
    assert promql_metrics(expr) == (names, regexes)


# ------------------------------------------------------------------------------------ scraping

def test_prometheus_scrapes_every_openmaas_container() -> None:
    """Each container that runs ``maas serve`` answers /metrics; the openmaas job must list it."""
    compose = yaml.safe_load(COMPOSE.read_text())

    def argv(command) -> list[str]:
        return shlex.split(command) if isinstance(command, str) else list(command or [])

    serving = {name for name, svc in compose["services"].items() if argv(svc.get("command"))[:2] == ["maas", "serve"]}
    assert serving, "no 'maas serve' container in docker-compose.yml"
    job = next(j for j in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"] if j["job_name"] == "openmaas")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    scraped = {name for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    scraped |= {t.split(":")[0] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert serving <= scraped, f"not scraped by Prometheus: {sorted(serving - scraped)}"
    ports = {sd["port"] for sd in job.get("dns_sd_configs", [])}
    assert ports == {8000}, "the openmaas containers listen on 8000"
