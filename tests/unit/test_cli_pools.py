"""`maas pools|packages|usage compute` against a faked API: the calls they make, what they print,
their exit status on the API's errors."""
from __future__ import annotations

import json

import typer.main

from services.apps.cli import app
from tests.unit.cli_fakes import api, maas  # noqa: F401 (api is a fixture)


def res(cpus: float, gpus: float = 0.0) -> dict:
    return {"cpus": cpus, "gpus": gpus, "memory_bytes": 0}


PUBLIC = {"name": "public", "type": "public", "description": "shared by every account", "created_at": None,
          "cluster": "local", "nodes": 1, "capacity": res(8), "allocated": res(2.5), "free": res(5.5)}
TEAM = {"name": "team-a", "type": "dedicated", "description": "our machines", "created_at": "2026-12-01T08:00:00Z",
        "cluster": "ray", "nodes": 2, "capacity": res(16, 2), "allocated": res(4, 1), "free": res(12, 1)}
TEAM_DETAIL = {
    **TEAM,
    "node_list": [{"id": "node-1", "address": "10.0.0.5", "resources": res(8, 1)},
                  {"id": "node-2", "address": "10.0.0.6", "resources": res(8, 1)}],
    "allocations": [{"kind": "tuning", "job_id": "job-run-1", "resources": res(4, 1), "since": "2026-12-06T10:00:00Z"}],
    "queue": [{"kind": "compression", "job_id": "job-wait-1", "name": "sq-later", "position": 1,
               "reason": "waiting for 14 CPUs (12 available) in pool 'team-a'"}],
}
USAGE_ROW = {"runs": 3, "seconds": 5400.0, "cpu_hours": 1.5, "accelerator_hours": 0.25, "package_cpu_hours": 1.0,
             "package_accelerator_hours": 0.25, "on_demand_cpu_hours": 0.5, "on_demand_accelerator_hours": 0.0}
PACKAGE = {"id": "pk1", "name": "starter", "cpu_hours": 10.0, "accelerator_hours": 2.0, "cpu_hours_left": 8.75,
           "accelerator_hours_left": 2.0, "granted_at": "2026-12-01T08:00:00Z", "expires_at": "2026-12-31T08:00:00Z"}


def test_the_commands_exist_with_json_output():
    group = typer.main.get_command(app)
    assert {"list", "get", "create", "delete"} <= set(group.commands["pools"].commands)
    assert {"list", "grant"} <= set(group.commands["packages"].commands)
    assert "compute" in group.commands["usage"].commands
    for path in (("pools", "list"), ("pools", "get"), ("pools", "create"), ("packages", "list"),
                 ("packages", "grant"), ("usage", "compute")):
        params = {p.name: p for p in group.commands[path[0]].commands[path[1]].params}
        assert "--json" in params["as_json"].opts, path


# ------------------------------------------------------------------------------------ pools

def test_pools_list_shows_capacity_allocated_and_free(api):
    api.on("GET", "/api/v1/pools", {"items": [PUBLIC, TEAM]})
    shown = maas("pools", "list")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    [public] = [line for line in lines if "public" in line and "shared" in line]
    [team] = [line for line in lines if "team-a" in line]
    assert "2.5 / 8" in public and "5.5" in public and "local" in public
    assert "4 / 16" in team and "1 / 2" in team and "12" in team and "ray" in team and "dedicated" in team
    assert "Resource pools (2)" in shown.output
    assert json.loads(maas("pools", "list", "--json").output)["items"][1]["name"] == "team-a"


def test_pools_get_shows_nodes_my_allocations_and_my_queue(api):
    api.on("GET", "/api/v1/pools/team-a", TEAM_DETAIL)
    shown = maas("pools", "get", "team-a")
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "node-1" in out and "10.0.0.6" in out
    assert "job-run-1" in out and "tuning" in out
    assert "job-wait-1" in out and "sq-later" in out and "waiting for 14 CPUs" in out
    assert json.loads(maas("pools", "get", "team-a", "--json").output)["queue"][0]["position"] == 1


def test_pools_get_of_a_pool_that_is_not_mine_fails_with_the_apis_message(api):
    shown = maas("pools", "get", "other")
    assert shown.exit_code == 1 and "HTTP 404" in shown.output
    assert [c.path for c in api.calls] == ["/api/v1/pools/other"]


def test_pools_create_sends_name_and_description(api):
    api.on("POST", "/api/v1/pools", {**TEAM_DETAIL, "nodes": 0, "capacity": res(0), "node_list": [],
                                     "allocations": [], "queue": []}, status=201)
    done = maas("pools", "create", "team-a", "--description", "our machines")
    assert done.exit_code == 0, done.output
    assert api.sent("POST", "/api/v1/pools")[0].body == {"name": "team-a", "description": "our machines"}
    assert "created dedicated pool team-a" in done.output and "openmaas.io/pool=team-a" in done.output


def test_pools_create_prints_the_apis_rule_and_field(api):
    taken = "name: the pool name 'team-a' is taken; choose another name"
    api.on("POST", "/api/v1/pools", {"error": {"code": "conflict", "field": "name", "message": taken}}, status=409)
    done = maas("pools", "create", "team-a")
    assert done.exit_code == 1
    assert "is taken" in done.output and "field: name" in done.output and "HTTP 409" in done.output


def test_pools_delete_needs_the_confirmation(api):
    api.on("DELETE", "/api/v1/pools/team-a", None, status=204)
    refused = maas("pools", "delete", "team-a", input="nope\n")
    assert refused.exit_code == 1 and not api.sent("DELETE", "/api/v1/pools/team-a")
    done = maas("pools", "delete", "team-a", input="DELETE\n")
    assert done.exit_code == 0 and "deleted pool team-a" in done.output
    assert len(api.sent("DELETE", "/api/v1/pools/team-a")) == 1


def test_pools_delete_of_a_pool_in_use_shows_the_apis_409(api):
    api.on("DELETE", "/api/v1/pools/team-a", {"error": {"code": "pool_in_use", "message": (
        "the pool 'team-a' is in use: 1 running and 0 queued jobs or instances; stop or delete them first")}},
        status=409)
    done = maas("pools", "delete", "team-a", "--yes")
    assert done.exit_code == 1 and "is in use: 1 running" in done.output and "pool_in_use" in done.output
    assert "deleted pool" not in done.output


# ---------------------------------------------------------------------------- compute usage

def test_usage_compute_groups_and_sums_hours(api):
    api.on("GET", "/api/v1/usage/compute", {"group_by": "kind", "days": 7, "items": [
        {"kind": "tuning", **USAGE_ROW}, {"kind": "compression", **USAGE_ROW, "cpu_hours": 0.5, "runs": 1}]})
    shown = maas("usage", "compute", "--group-by", "kind", "--days", "7")
    assert shown.exit_code == 0, shown.output
    [call] = api.sent("GET", "/api/v1/usage/compute")
    assert call.params == {"group_by": "kind", "days": "7"}
    [tuning] = [line for line in shown.output.splitlines() if "tuning" in line]
    assert "1.5" in tuning and "0.25" in tuning and "0.5" in tuning
    assert "last 7 days (2 CPU-hours, 0.5 accelerator-hours)" in shown.output.replace("\n", " ")


def test_usage_compute_defaults_to_pools_and_refuses_an_unknown_grouping(api):
    api.on("GET", "/api/v1/usage/compute", {"group_by": "pool", "days": 30, "items": [{"pool": "public", **USAGE_ROW}]})
    out = json.loads(maas("usage", "compute", "--json").output)
    assert out["items"][0]["pool"] == "public"
    assert api.sent("GET", "/api/v1/usage/compute")[0].params == {"group_by": "pool", "days": "30"}
    bad = maas("usage", "compute", "--group-by", "service")
    assert bad.exit_code == 1 and "--group-by must be one of pool, kind, day" in bad.output
    assert len(api.sent("GET", "/api/v1/usage/compute")) == 1


def test_plain_usage_is_still_the_token_usage(api):
    api.on("GET", "/api/v1/usage", {"total_tokens": 42, "items": [
        {"key_id": "k1", "requests": 2, "prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}]})
    shown = maas("usage", "--by", "key", "--days", "3")
    assert shown.exit_code == 0, shown.output
    assert api.sent("GET", "/api/v1/usage")[0].params == {"group_by": "key", "days": "3"}
    assert "k1" in shown.output and "42 tokens" in shown.output
    assert not api.sent("GET", "/api/v1/usage/compute")


def test_plain_usage_reports_the_apis_error(api):
    api.on("GET", "/api/v1/usage", {"error": {"code": "forbidden", "message": "you lack maas:usage:list"}}, status=403)
    shown = maas("usage")
    assert shown.exit_code == 1 and "maas:usage:list" in shown.output


# ---------------------------------------------------------------------------------- packages

def test_packages_list_shows_what_is_left(api):
    api.on("GET", "/api/v1/packages", {"items": [PACKAGE]})
    shown = maas("packages", "list")
    assert shown.exit_code == 0, shown.output
    [row] = [line for line in shown.output.splitlines() if "starter" in line]
    assert "8.75 / 10" in row and "2 / 2" in row
    assert json.loads(maas("packages", "list", "--json").output)["items"][0]["cpu_hours_left"] == 8.75


def test_packages_grant_sends_the_package(api):
    api.on("POST", "/api/v1/packages", PACKAGE, status=201)
    done = maas("packages", "grant", "tenant-9", "--name", "starter", "--cpu-hours", "10", "--accelerator-hours", "2",
                "--valid-days", "30")
    assert done.exit_code == 0, done.output
    assert api.sent("POST", "/api/v1/packages")[0].body == {
        "account_id": "tenant-9", "name": "starter", "cpu_hours": 10.0, "accelerator_hours": 2.0, "valid_days": 30}
    assert "granted package starter (pk1) to account tenant-9: 10 CPU-hours, 2 accelerator-hours" in done.output


def test_packages_grant_by_someone_else_shows_the_403(api):
    api.on("POST", "/api/v1/packages", {"error": {"code": "forbidden", "message": (
        "only the platform administrator grants compute packages")}}, status=403)
    done = maas("packages", "grant", "tenant-9", "--name", "starter", "--cpu-hours", "1")
    assert done.exit_code == 1 and "only the platform administrator" in done.output and "HTTP 403" in done.output
    negative = maas("packages", "grant", "tenant-9", "--name", "starter", "--cpu-hours", "-1")
    assert negative.exit_code == 2 and len(api.sent("POST", "/api/v1/packages")) == 1
