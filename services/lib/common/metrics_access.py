"""Who may read ``GET /metrics``: Prometheus with MAAS_METRICS_TOKEN, or a platform admin.

Its labels name every tenant's services, models and routes, so it is no more open than other
platform-wide data. Tenants read their own figures through ``/api/v1/services/{id}/metrics``.
"""
from __future__ import annotations

import hmac

from fastapi import Request

from services.lib.common.auth import bearer_token, current_principal
from services.lib.common.errors import ApiError


def _is_metrics_token(token: str, *, settings) -> bool:
    expected = settings.metrics_token.get_secret_value()
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


async def require_metrics_reader(request: Request) -> None:
    """FastAPI dependency: 401 without a valid bearer token, 403 for a token of a non-admin."""
    token = bearer_token(request)
    if _is_metrics_token(token, settings=request.app.state.platform.settings):
        return
    principal = await current_principal(request)
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "/metrics covers every tenant: it is for platform administrators and "
                                         "for Prometheus (MAAS_METRICS_TOKEN) only; your own services' figures "
                                         "are at /api/v1/services/{id}/metrics")
