"""The forecast page: ``GET /`` (static HTML, CSS and JS from the package, no build step, nothing
loaded from outside) and the JSON endpoints it draws from, ``GET /api/sites`` and
``GET /api/sites/{site_id}``, and the cleanest hours for an activity, ``GET /api/best-time``,
documented in the OpenAPI schema. The page shows times in UK local
time; the API answers in UTC."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources

import bentoml
from fastapi import APIRouter, FastAPI, Path, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from routeaq_assets.core.best_time import LOOK_AHEAD_HOURS
from routeaq_serving import page_data
from routeaq_serving.best_time import best_time_at
from routeaq_serving.errors import OutOfRange
from routeaq_serving.forecasts import known_site
from routeaq_serving.page_schemas import SiteResponse, SitesResponse
from routeaq_serving.prediction_log import log_answers

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


@router.get(
    "/api/best-time",
    tags=["page"],
    summary="The cleanest window for an activity of 1 to 3 hours in the next 24 or 48 hours at a site, beside now and the worst",
    responses={404: {"description": "Unknown site"}, 422: {"description": "Bad hours or within"}, 503: {"description": "No model loaded"}},
)
def best_time(
    site_id: str = Query(min_length=1, max_length=16, examples=["MY1"]),
    hours: int = Query(2, ge=1, le=3, description="how long the activity lasts"),
    within: int = Query(24, description="how far ahead to look: 24 or 48 hours"),
) -> dict:
    if within not in LOOK_AHEAD_HOURS:
        raise OutOfRange(f"within must be one of {list(LOOK_AHEAD_HOURS)} hours, got {within}", "within")
    service = bentoml.get_current_service()
    state = service.forecasts.current()
    result, answers = best_time_at(service.forecasts, state, known_site(state, site_id), hours, within)
    log_answers(service, answers)
    return result


def install(app: FastAPI) -> None:
    """Add the page and its endpoints to the service's app."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
