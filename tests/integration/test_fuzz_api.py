"""Fuzz every operation of the OpenAPI document (/api/v1 and /v1) with schemathesis, on the real platform.

For an admin and for an unprivileged user, schemathesis sends the documented examples, the coverage
cases (boundaries, missing and wrong inputs, undocumented methods) and generated requests, and checks:
no 5xx, only documented status codes, responses matching their documented schema and content type,
schema-valid requests accepted, 405 with a correct ``Allow``, and 401 without credentials.

Bounded and repeatable: a fixed seed, deterministic generation, no example database, a few examples per
operation. What it found once is kept as plain regression tests in test_fuzz_findings.py.
"""
from __future__ import annotations

import asyncio
import copy
import secrets
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema

from services.gateway.accounts.identity import create_user, issue_token
from services.gateway.accounts.login_throttle import LOGIN_FAILURES

# schemathesis' own strategies trip this deprecation inside hypothesis; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

SEED = 20261206
# Generated requests per operation and phase: about 100 s for the admin's full run on 2 busy cores.
MAX_EXAMPLES = 10
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "positive_data_acceptance",
          "unsupported_method", "allow_header_conformance", "ignored_auth")

# Operations whose schema-valid requests may still break a rule the JSON schema does not state; they
# answer 400 naming the field and the rule (the check still holds them to the other documented codes).
RULES_BEYOND_THE_SCHEMA = {
    "/api/v1/services/recommendation": "exactly one of model_id and template_id",
    "/api/v1/services/{service_id}/moderation": "turning moderation off needs confirm_moderation_off",
    "/api/v1/tuning-jobs/{job_id}/checkpoints/{iteration}/models": "model_name when target is 'new_model'",
    # A body naming a model, template, dataset or topic that does not exist answers 400 naming that field;
    # nested settings have their own cross-field rules (notification.enabled needs a topic_name, ...).
    "/api/v1/models": "template_id names a template of the square; weights_path a readable folder",
    "/api/v1/services": "model_id and version name a deployable model; notification needs a topic",
    "/api/v1/tuning-jobs": "the source model, dataset and topic exist; the dataset fits the template",
    "/api/v1/tuning-jobs/estimate": "the source model exists; sample_count >= 1; global_batch_size within the "
                                    "template's range",
    "/api/v1/compression-jobs": "the source model exists and supports the strategy; notification needs a topic",
    "/api/v1/compression-jobs/estimate": "the source model exists and supports the strategy",
    "/api/v1/notification-rules": "topic_name names an existing topic",
    # Pools: a change names something to change; node counts and shapes within this platform's limits
    # (settings pool_max_nodes, pool_node_max_cpus/memory_gb), and only where it starts nodes.
    "/api/v1/pools": "node_count and node_resources within the platform's limits",
    "/api/v1/pools/{name}": "at least one field to change; node_count and node_resources within the platform's limits",
    # Storage paths name a bucket of the caller's; an unknown one is a 400 so bucket names cannot be probed.
    "/api/v1/storage/objects": "path is 'bucket/prefix' of the caller's bucket",
    "/api/v1/storage/objects/{path}": "path is 'bucket/key' of the caller's bucket",
    "/api/v1/storage/presigned-uploads": "path is 'bucket/key' of the caller's bucket",
    "/api/v1/storage/buckets": "S3 bucket naming rules; the 'maas-' prefix is the platform's",
    # Sessions, keys and the audit log: rules on values, and what the caller may see.
    "/api/v1/auth/login": "failed logins are throttled (429 with Retry-After)",
    "/api/v1/auth/password": "current_password is the caller's password; new_password differs from it",
    "/api/v1/api-keys": "expires_at is in the future",
    "/api/v1/api-keys/{key_id}": "expires_at is in the future",
    "/api/v1/audit": "since is before until; account is the caller's own unless platform administrator",
    "/api/v1/audit/export": "since is before until; account is the caller's own unless platform administrator",
    # Access control: names are unique, ids name users, groups and policies of the caller's account, a
    # policy document is the guide's format, and an account keeps one administrator.
    "/api/v1/iam/users": "the username is free; group_ids name groups of the account",
    "/api/v1/iam/users/{user_id}": "the account keeps an administrator",
    "/api/v1/iam/groups": "the name is free; policy_ids name policies",
    "/api/v1/iam/groups/{group_id}": "the name is free",
    "/api/v1/iam/groups/{group_id}/members": "user_id names a user of the account",
    "/api/v1/iam/groups/{group_id}/policies": "policy_id names a policy; at most 50 per group",
    "/api/v1/iam/policies": "the document is a policy in the guide's format; the name is free",
    "/api/v1/iam/policies/validate": "the document is a policy in the guide's format",
    "/api/v1/iam/policies/{policy_id}": "the document is a policy in the guide's format; system policies stay",
    "/api/v1/auth/permissions": "action names actions of the catalogue (GET /api/v1/iam/actions)",
    # The OpenAI body is the contract's schema; table 11-1's ranges and message rules are the gateway's.
    "/v1/chat/completions": "parameter ranges of table 11-1 and message rules",
    "/v1/infers/{service_id}/v1/chat/completions": "parameter ranges of table 11-1 and message rules",
    "/v1/completions": "parameter ranges as for chat; a prompt is not empty; echo for max_tokens 0",
    "/v1/infers/{service_id}/v1/completions": "parameter ranges as for chat; a prompt is not empty; echo for "
                                              "max_tokens 0",
}
ACCEPTED_WITH_RULES = ["2xx", 400, 401, 403, 404, 409, 429]
# These end the session the fuzzer calls with (every later call would be a 401): tests/integration/
# test_sessions.py covers them.
ENDS_THE_SESSION = {("/api/v1/auth/logout", "post"), ("/api/v1/auth/refresh", "post")}


@dataclass(frozen=True)
class Identity:
    token: str
    api_key: str


async def _api_key(url: str, token: str) -> str:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        r = await client.post("/api/v1/api-keys", json={"description": "fuzz"})
        assert r.status_code == 201, r.text
        return r.json()["key"]


@pytest.fixture(scope="module")
async def fuzz_admin(running_platform) -> Identity:
    # An admin of a tenant of its own: what the fuzzer creates (keys, topics, buckets) stays out of the
    # bootstrap admin's tenant, which the other tests share (at most 5 API keys per user, for one).
    user = await create_user(running_platform["platform"], username=f"fuzz-admin-{secrets.token_hex(3)}",
                             password=secrets.token_urlsafe(12), role="admin")
    token = await issue_token(running_platform["platform"], user)
    return Identity(token=token, api_key=await _api_key(running_platform["url"], token))


@pytest.fixture(scope="module")
async def fuzz_user(running_platform, api) -> Identity:
    username, password = f"fuzz-user-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    r = await api.post("/api/v1/users", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    r = await api.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    return Identity(token=token, api_key=await _api_key(running_platform["url"], token))


@pytest.fixture(autouse=True)
async def loopback_not_blocked(running_platform):
    """The fuzzer's failed logins come from 127.0.0.1, as every test's calls: unblock it afterwards."""
    yield
    await running_platform["platform"].mongo[LOGIN_FAILURES].delete_many({"_id": "client:127.0.0.1"})


@pytest.fixture
async def blocklist_restored(api):
    """The fuzzer replaces the platform-wide moderation blocklist as an admin: put it back afterwards."""
    terms = (await api.get("/api/v1/moderation/blocklist")).json()["terms"]
    yield
    r = await api.put("/api/v1/moderation/blocklist", json={"terms": terms})
    assert r.status_code == 200, r.text


def _config(*, base_url: str, who: Identity, mode: str, max_examples: int) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": base_url,
        "request-timeout": 60,
        "generation": {"mode": mode, "max-examples": max_examples, "deterministic": True, "database": "none"},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
                   "stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "auth": {"openapi": {"bearerToken": {"bearer": who.token}, "apiKey": {"bearer": who.api_key}}},
        "operations": [{"include-path": path,
                        "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_WITH_RULES}}}
                       for path in RULES_BEYOND_THE_SCHEMA],
    })


def _fuzz(openapi: dict, config: schemathesis.Config) -> list[str]:
    """Run schemathesis (blocking: called in a thread while the platform serves on the test's loop)."""
    schema = schemathesis.openapi.from_dict(openapi, config=config)
    found: dict[tuple[str, str, str], str] = {}
    problems: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        key = (failure.operation or event.recorder.label, failure.code, failure.title)
                        found.setdefault(key, f"{failure.message}\n    {check.failure_info.code_sample}")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            problems.append(f"{getattr(event, 'label', '')}: {getattr(event, 'info', None) or event.exception}")
    return problems + [f"{op}: {code} {title}: {detail}" for (op, code, title), detail in sorted(found.items())]


def _fuzzable(openapi: dict) -> dict:
    document = copy.deepcopy(openapi)
    for path, method in ENDS_THE_SESSION:
        document["paths"][path].pop(method)
    return document


async def _run(running_platform, who: Identity, *, mode: str, max_examples: int) -> list[str]:
    config = _config(base_url=running_platform["url"], who=who, mode=mode, max_examples=max_examples)
    return await asyncio.to_thread(_fuzz, _fuzzable(running_platform["app"].openapi()), config)


async def test_fuzz_as_admin(running_platform, fuzz_admin, blocklist_restored):
    # Valid and invalid requests (wrong types, missing fields, out-of-range values, unexpected methods).
    failures = await _run(running_platform, fuzz_admin, mode="all", max_examples=MAX_EXAMPLES)
    assert failures == [], "\n\n".join(failures)


async def test_fuzz_as_user(running_platform, fuzz_user):
    # Input validation does not depend on who calls; what a user may do and see does: valid requests only.
    failures = await _run(running_platform, fuzz_user, mode="positive", max_examples=MAX_EXAMPLES // 2)
    assert failures == [], "\n\n".join(failures)
