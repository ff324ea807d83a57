"""State-changing routes, guarded by a token from the environment.

``POST /admin/reload`` re-reads the registry's champions and the online snapshot now, rather
than at the next poll. It needs ``Authorization: Bearer <token>`` where the token is the
service's ``ROUTEAQ_ADMIN_TOKEN``, compared in constant time: 401 without it or with another.
With no token configured the route is disabled (403), never open. The token is read once at
start and appears in no answer, log line or metric.
"""

from __future__ import annotations

import hmac
import os

import bentoml
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse

ADMIN_TOKEN_VARIABLE = "ROUTEAQ_ADMIN_TOKEN"


def admin_token() -> str:
    return os.environ.get(ADMIN_TOKEN_VARIABLE, "").strip()


def authorised(configured: str, authorization: str | None) -> bool:
    """Whether ``authorization`` is ``Bearer <configured>``; constant time in the token."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), configured.encode())


def install(app: FastAPI) -> None:
    @app.post("/admin/reload", responses={401: {"description": "no or wrong token"}, 403: {"description": "admin routes disabled"}})
    def reload(authorization: str | None = Header(default=None)) -> JSONResponse:
        """Reload the champions and the online snapshot now; answers the readiness status."""
        service = bentoml.get_current_service()
        if not service.admin_token:
            return JSONResponse(status_code=403, content={"error": f"admin routes are disabled: set {ADMIN_TOKEN_VARIABLE} on the service to enable them"})
        if not authorised(service.admin_token, authorization):
            return JSONResponse(
                status_code=401,
                content={"error": "admin routes need 'Authorization: Bearer <token>' with the service's admin token"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        changed = service.forecasts.refresh()
        status = service.forecasts.status()
        return JSONResponse(status_code=200 if status["model_loaded"] else 503, content={"reloaded": changed, **status})
