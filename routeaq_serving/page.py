"""The forecast page: ``GET /`` (static HTML, CSS and JS from the package, no build step, nothing
loaded from outside) and the JSON endpoints it draws from, ``GET /api/sites`` and
``GET /api/sites/{site_id}``, documented in the OpenAPI schema. The page shows times in UK local
time; the API answers in UTC."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources

import bentoml
from fastapi import APIRouter, FastAPI, Path
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from routeaq_serving import page_data
from routeaq_serving.page_schemas import SiteResponse, SitesResponse

STATIC = resources.files("routeaq_serving") / "static"
router = APIRouter()


def _forecasts():
    return bentoml.get_current_service().forecasts


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/api/sites", response_model=SitesResponse, tags=["page"], summary="Every site: the next hours' forecasts, DAQI bands and data state")
def sites() -> dict:
    return page_data.overview(_forecasts(), datetime.now(timezone.utc))


@router.get(
    "/api/sites/{site_id}",
    response_model=SiteResponse,
    tags=["page"],
    summary="One site: 7 days of observations and forecasts, the next hours, skill against persistence",
    responses={404: {"description": "Unknown site"}, 503: {"description": "No model loaded"}},
)
def site(site_id: str = Path(min_length=1, max_length=16, examples=["MY1"])) -> dict:
    return page_data.site_detail(_forecasts(), site_id, datetime.now(timezone.utc))


def install(app: FastAPI) -> None:
    """Add the page and its endpoints to the service's app."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
