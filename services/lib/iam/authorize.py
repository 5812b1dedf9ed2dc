"""One action per route: the FastAPI dependency that authorizes a call, and the route documentation.

    @router.post("/models", ...)
    async def create_model(body: ModelCreate, principal: Principal = Authorized("maas:models:create"), ...):

``Authorized(action)`` resolves the caller (bearer token, ``current_principal``), records the action
on ``request.state.action`` (the audit log reads it), evaluates the caller's policies and answers 403
naming the action when they do not allow it. Routes whose caller is not a console token say so with
``by="route"``: the dependency then only declares and records the action and hands it to the route,
which authenticates and authorizes itself (the OpenAI ``/v1`` routes, whose errors have OpenAI's
shape and whose API keys are checked against the owner's policies in services/gateway/keys/service.py).

``install(app)`` (services/runtime.py) gives the app its grant cache and writes each route's action
into its OpenAPI operation (the description and ``x-maas-action``).
"""
from __future__ import annotations

import json
import re
from typing import Any, Literal, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.routing import iter_route_contexts

from services.lib.common.auth import Principal, current_principal
from services.lib.common.errors import ApiError
from services.lib.iam.actions import ACTIONS, IAM_WRITES, PLATFORM_ADMIN_ONLY, check_known
from services.lib.iam.evaluator import Decision, Grant
from services.lib.iam.store import Authorizer, Grants

ACTION_MARK = "maas_action"        # attribute of the dependency callables that declare an action
OPENAPI_KEY = "x-maas-action"
_CONVERTOR = re.compile(r":[^}]+}")


def Authorized(action: str, *, by: Literal["token", "route"] = "token") -> Any:  # noqa: N802 (reads as a type)
    """The dependency of a route that performs ``action`` (see the module docstring)."""
    check_known(action)
    if by == "route":
        async def declared(request: Request) -> str:
            request.state.action = action
            return action
        dependency = declared
    else:
        async def authorized(request: Request, principal: Principal = Depends(current_principal)) -> Principal:
            request.state.action = action
            await authorize(request, principal, action)
            return principal
        dependency = authorized
    setattr(dependency, ACTION_MARK, action)
    dependency.__name__ = f"authorize {action}"
    return Depends(dependency)


def grants(request: Request) -> Grants:
    return request.app.state.authorizer


async def authorize(request: Request, principal: Principal, action: str) -> None:
    """403 naming ``action`` unless ``principal`` may perform it."""
    decision = decide(principal, await grants(request).grant(principal), action)
    if not decision.allowed:
        raise forbidden(principal.username, action, decision)


class Caller(Protocol):
    """A console principal or an API key's owner: their platform and account roles."""
    username: str
    role: str
    account_role: str


def decide(principal: Caller, grant: Grant, action: str) -> Decision:
    """The caller's policies decide, and two rules no policy can lift: IAM changes need the account's
    administrator (a member cannot grant themselves more), platform-wide actions the platform's."""
    decision = grant.decide(action)
    if not decision.allowed:
        return decision
    if action in IAM_WRITES and principal.account_role != "admin":
        return Decision(False, "users, groups and policies are changed by an administrator of the account "
                        "only", grantable=False)
    if action in PLATFORM_ADMIN_ONLY and principal.role != "admin":
        return Decision(False, "it is for platform administrators only", grantable=False)
    return decision


def forbidden(username: str, action: str, decision: Decision) -> ApiError:
    if decision.grantable:
        remedy = "; ask an administrator of your account for a policy that allows it: " + json.dumps(
            granting_policy([action]), separators=(", ", ": "))
    elif decision.policy is not None:
        remedy = "; ask an administrator of your account to lift that Deny"
    else:
        remedy = ""
    return ApiError(403, "forbidden", f"user '{username}' lacks the action {action}: {decision.reason}{remedy}")


def granting_policy(actions: list[str]) -> dict:
    """The custom policy (guide format) that would allow ``actions``: what a user sends their admin."""
    return {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": sorted(set(actions))}]}


# ------------------------------------------------------------------------------------ routes

def _dependency_calls(dependant) -> list:
    calls = []
    for sub in dependant.dependencies:
        if sub.call is not None:
            calls.append(sub.call)
        calls += _dependency_calls(sub)
    return calls


def route_actions(route) -> list[str]:
    """Every action ``route`` (a route or FastAPI's RouteContext) declares: through ``Authorized``
    dependencies, or, for a route of services.lib.common (which cannot import this package),
    ``openapi_extra={"x-maas-action": ...}``."""
    dependant = getattr(route, "dependant", None)
    calls = _dependency_calls(dependant) if dependant is not None else []
    declared = [getattr(c, ACTION_MARK) for c in calls if hasattr(c, ACTION_MARK)]
    extra = getattr(route, "openapi_extra", None) or {}
    if not declared and OPENAPI_KEY in extra:
        declared.append(extra[OPENAPI_KEY])
    return declared


def declared_actions(app: FastAPI) -> dict[tuple[str, str], list[str]]:
    """(method, path template) -> the actions that route declares, for every route of ``app``."""
    found: dict[tuple[str, str], list[str]] = {}
    for route in iter_route_contexts(app.routes):
        for method in route.methods or ():
            if route.path and method != "HEAD":
                found[(method, route.path)] = route_actions(route)
    return found


def document_actions(app: FastAPI) -> None:
    """Each route's action in its OpenAPI operation: a line of the description and ``x-maas-action``."""
    generate = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        schema = generate()
        if not done:
            # OpenAPI paths drop a parameter's convertor: /objects/{path:path} is /objects/{path}.
            actions = {(m, _CONVERTOR.sub("}", p)): a for (m, p), a in declared_actions(app).items()}
            for path, item in schema.get("paths", {}).items():
                for method, operation in item.items():
                    declared = actions.get((method.upper(), path), [])
                    if isinstance(operation, dict) and len(declared) == 1:
                        _document(operation, declared[0])
            done = True
        return schema

    app.openapi = openapi


def _document(operation: dict[str, Any], action: str) -> None:
    operation[OPENAPI_KEY] = action
    line = f"**Action:** `{action}` ({ACTIONS[action].description})."
    description = operation.get("description")
    operation["description"] = f"{description}\n\n{line}" if description else line


def install(app: FastAPI) -> None:
    """Authorization for an assembled app: the grant cache and the documented actions."""
    app.state.authorizer = Authorizer(app.state.platform.mongo)
    document_actions(app)
