"""Every route of the assembled app declares exactly one action (issue 13.4), shown in its OpenAPI
operation; the public routes (services.lib.common.public_routes) declare none.

A new route that forgets ``Authorized(...)`` fails here, as one that forgets authentication fails
tests/integration/test_unauthenticated_routes.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from services.lib.common.public_routes import PUBLIC_ROUTES, is_public
from services.lib.common.settings import get_settings
from services.lib.iam.actions import ACTIONS, INFERENCE_CALL
from services.lib.iam.authorize import declared_actions
from services.runtime import build_app


@pytest.fixture(scope="module")
def app():
    return build_app(get_settings(), services="all")


def test_every_route_but_the_public_ones_declares_exactly_one_action(app):
    routes = declared_actions(app)
    assert len(routes) > 100 and ("POST", "/api/v1/models") in routes
    wrong = {f"{m} {p}": a for (m, p), a in routes.items() if len(a) != (0 if is_public(m, p) else 1)}
    assert wrong == {}
    assert all(a[0] in ACTIONS for a in routes.values() if a)


def test_the_routes_declare_the_actions_they_perform(app):
    routes = declared_actions(app)
    expected = {("POST", "/api/v1/models"): "maas:models:create",
                ("PUT", "/api/v1/services/{service_id}/instance-count"): "maas:services:scale",
                ("POST", "/api/v1/tuning-jobs"): "maas:tuningJobs:create",
                ("GET", "/api/v1/compression-jobs/{job_id}"): "maas:compressionJobs:get",
                ("DELETE", "/api/v1/users/{user_id}"): "maas:users:delete",
                ("POST", "/api/v1/users"): "maas:accounts:create",
                ("GET", "/metrics"): "maas:metrics:get"}
    assert {k: routes[k][0] for k in expected} == expected
    # The OpenAI API is authorized by the API key owner's policies.
    assert {a[0] for (m, p), a in routes.items() if p.startswith("/v1/")} == {INFERENCE_CALL}


def test_the_openapi_document_names_each_operations_action(app):
    schema = app.openapi()
    operations = [(m.upper(), p, op) for p, item in schema["paths"].items() for m, op in item.items()
                  if isinstance(op, dict) and "responses" in op]
    assert len(operations) > 100
    for method, path, operation in operations:
        if is_public(method, path):
            assert "x-maas-action" not in operation, path
            continue
        action = operation["x-maas-action"]
        assert action in ACTIONS, (method, path)
        assert f"**Action:** `{action}`" in operation["description"], (method, path)
    create = schema["paths"]["/api/v1/models"]["post"]
    assert create["x-maas-action"] == "maas:models:create"


def test_the_user_guide_lists_every_action():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "access-control.md").read_text()
    assert [a for a in ACTIONS if f"`{a}`" not in guide] == []


def test_the_public_list_names_routes_only(app):
    assert PUBLIC_ROUTES <= set(declared_actions(app))
