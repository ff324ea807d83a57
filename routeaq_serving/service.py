"""RouteAQ forecast service: the champion models over HTTP with BentoML.

Routes come from a FastAPI app mounted on the service, so that client mistakes get precise
answers (404 unknown site, 422 naming the field) and GET routes exist:
``POST /predict``, ``POST /predict/batch``, ``POST /predict/daily`` (today's and tomorrow's
daily index with its odds), ``GET /health``, ``GET /ready``, ``GET /model``, the
forecast page (``routeaq_serving.page``), alert subscriptions (``routeaq_serving.subscriptions``) and ``POST /admin/reload`` behind a token
(``routeaq_serving.admin``).
BentoML adds ``/metrics`` (Prometheus: its request counts and latencies, and RouteAQ's
``routeaq_model_loaded``, ``routeaq_model_version_info``, ``routeaq_newest_observation_age_hours``,
``routeaq_serving_problems`` and ``routeaq_prediction_value``), ``/healthz``, ``/livez`` and
``/readyz``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import bentoml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse

from routeaq_assets.adapters.shared import shared_folder
from routeaq_assets.core.environment import load_settings, require_writable_home
from routeaq_assets.core.places import uk_places
from routeaq_assets.core.shared_folders import PREDICTIONS as PREDICTION_LOG, REPORTS
from routeaq_serving import admin, page, page_data, reports, subscriptions
from routeaq_serving.forecasts import ForecastError, ForecastItem, Forecasts, known_site
from routeaq_serving.prediction_log import PredictionLog, log_answers
from routeaq_serving.daily import daily_outlook
from routeaq_serving.schemas import BatchRequest, BatchResponse, DailyRequest, DailyResponse, PredictRequest, PredictResponse

PREDICTIONS = bentoml.metrics.Histogram(
    name="routeaq_prediction_value",
    documentation="Forecast values served, in ug/m3, by pollutant",
    labelnames=["pollutant"],
    buckets=(1, 2, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500),
)

# The service's state, set after each refresh (every ROUTEAQ_REFRESH_SECONDS): what an alert
# rule needs to say "not ready", "serving a model the registry lost" or "its data is old". One
# value per series whatever the worker (``livemostrecent``: no pid label).
LIVE = "livemostrecent"
MODEL_LOADED = bentoml.metrics.Gauge(
    name="routeaq_model_loaded", documentation="1 when a champion is loaded and forecasts are answered, else 0", multiprocess_mode=LIVE
)
MODEL_VERSION = bentoml.metrics.Gauge(
    name="routeaq_model_version_info", documentation="1 for each champion served (0 for one served before), by pollutant, model and version",
    labelnames=["pollutant", "model", "version"], multiprocess_mode=LIVE,
)
DATA_AGE = bentoml.metrics.Gauge(
    name="routeaq_newest_observation_age_hours", documentation="Hours since each site's newest observation in the served history",
    labelnames=["site"], multiprocess_mode=LIVE,
)
PROBLEMS = bentoml.metrics.Gauge(
    name="routeaq_serving_problems", documentation="1 while readiness reports this store or registry fault (status degraded), then 0",
    labelnames=["problem"], multiprocess_mode=LIVE,
)
_published: dict[int, set[tuple[str, ...]]] = {}  # id(gauge) -> the label sets set last


def _set_series(gauge, values: dict[tuple[str, ...], float], gone: float) -> None:  # noqa: ANN001 - a bentoml gauge
    """Set each labelled series, and a series published before but absent now to ``gone`` (a
    multiprocess gauge keeps its series in its files: they are overwritten, never dropped)."""
    for labels in _published.get(id(gauge), set()) - values.keys():
        gauge.labels(*labels).set(gone)
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    _published[id(gauge)] = set(values)


def publish_state(forecasts: Forecasts) -> None:
    """Set the state gauges from the readiness answer (one source for both)."""
    status = forecasts.status()
    MODEL_LOADED.set(1 if status["model_loaded"] else 0)
    _set_series(PROBLEMS, {(problem,): 1.0 for problem in status["problems"]}, gone=0.0)
    state = forecasts.current() if status["model_loaded"] else None
    models = state.models.items() if state else []
    _set_series(MODEL_VERSION, {(pollutant, served.name, served.version): 1.0 for pollutant, served in models}, gone=0.0)
    now = datetime.now(timezone.utc)
    ages = {(site,): round((now - newest).total_seconds() / 3600, 2) for site, newest in (state.data_until.items() if state else [])}
    _set_series(DATA_AGE, ages, gone=float("nan"))


app = FastAPI(title="RouteAQ forecasts", version="0.1.0")
# Answers over 1 kB go compressed to a client that accepts gzip (a site's page data is ~130 kB of JSON).
app.add_middleware(GZipMiddleware, minimum_size=1000)


@app.exception_handler(ForecastError)
def _forecast_error(_: Request, exc: ForecastError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"error": exc.message, "field": exc.field})


@app.exception_handler(RequestValidationError)
def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        {"field": "body" if e["type"] == "json_invalid" else ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"]}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return JSONResponse(status_code=422, content={"error": f"invalid request: {summary}", "problems": problems})


def _service() -> "RouteAQ":
    return bentoml.get_current_service()


def _answer(items: list[PredictRequest]) -> list[dict]:
    service = _service()
    results = service.forecasts.forecast([ForecastItem(i.site_id.upper(), i.timestamp, i.pollutant) for i in items])
    log_answers(service, results)
    for result in results:
        PREDICTIONS.labels(pollutant=result["pollutant"]).observe(result["pred"])
    return results


# Responses are built by the forecast function to the documented schema; FastAPI does not
# re-validate them on the hot path (the schemas still document them in /openapi.json).
# A single forecast takes tens of microseconds, less than a hop to the thread pool: it runs on
# the event loop. A batch can take long enough to hold the loop up, so it runs in the pool.
@app.post("/predict", response_model=None, responses={200: {"model": PredictResponse}})
async def predict(request: PredictRequest) -> JSONResponse:
    return JSONResponse(_answer([request])[0])


@app.post("/predict/batch", response_model=None, responses={200: {"model": BatchResponse}})
def predict_batch(request: BatchRequest) -> JSONResponse:
    return JSONResponse({"predictions": _answer(request.items)})


@app.post("/predict/daily", response_model=None, responses={200: {"model": DailyResponse}})
def predict_daily(request: DailyRequest) -> JSONResponse:
    """Today's and tomorrow's daily index at a site, with the odds of Moderate and of High; the
    hourly forecasts it rests on are logged as every forecast is."""
    service = _service()
    state = service.forecasts.current()
    site_id = known_site(state, request.site_id)
    days, answers = daily_outlook(service.forecasts, state, site_id)
    log_answers(service, answers)
    origin = state.origin.strftime("%Y-%m-%dT%H:%M:%SZ")
    return JSONResponse({"site_id": site_id, "origin": origin, "days": [d.as_dict() for d in days]})


@app.get("/health")
def health() -> JSONResponse:
    status = _service().forecasts.status()
    return JSONResponse(status_code=200 if status["model_loaded"] else 503, content=status)


@app.get("/ready")
def ready() -> JSONResponse:
    return health()


@app.get("/model")
def model() -> dict:
    return _service().forecasts.model_info()


page.install(app)  # GET / (the forecast page), /api/sites, /api/sites/{site_id}, /static
admin.install(app)  # POST /admin/reload
reports.install(app)  # GET /reports/... (drift pages and plots the Dagster UI links to)
subscriptions.install(app)  # POST /api/subscriptions, GET /api/subscriptions/confirm and /unsubscribe


# One line per request in the access log costs more than a forecast; Prometheus counts requests.
# The forecast routes (/predict, /predict/batch, /predict/daily) get no OpenTelemetry span: BentoML
# records one per request even unsampled, and its timeout middleware keeps each request's context
# (span included) alive for the whole timeout (60 s) after the answer, so the worker's memory grew
# with the request rate: about 4 kB per request, 160 MB at 700 requests/s. Without the span a
# request leaves about 0.45 kB for those 60 s (bench/RESULTS.md, Soak).
@bentoml.service(name="routeaq", workers=1, logging={"access": {"enabled": False}}, tracing={"excluded_urls": ["/predict"]})
@bentoml.asgi_app(app, path="/")
class RouteAQ:
    def __init__(self) -> None:
        settings = load_settings()
        require_writable_home(settings.home)  # the prediction log and caches live there
        self.refresh_seconds = settings.refresh_seconds
        self.forecasts = Forecasts(settings)
        self.prediction_log = PredictionLog(settings.prediction_log_dir, shared_folder(settings, PREDICTION_LOG))
        self.lake_root, self.shared_reports = settings.lake_root, shared_folder(settings, REPORTS)
        self.admin_token = admin.admin_token()
        self.subscriptions = subscriptions.Subscriptions(settings)
        self.forecasts.refresh()
        publish_state(self.forecasts)
        page_data.warm(self.forecasts)
        self._stop = threading.Event()
        threading.Thread(target=uk_places, name="gazetteer-loader", daemon=True).start()
        threading.Thread(target=self._poll, name="champion-poller", daemon=True).start()
        if self.prediction_log.shared is not None:
            threading.Thread(target=self._ship, args=(settings.prediction_flush_seconds,), name="prediction-shipper", daemon=True).start()

    def _poll(self) -> None:
        """Pick up a new champion or snapshot without a restart."""
        while not self._stop.wait(self.refresh_seconds):
            self.forecasts.refresh()
            publish_state(self.forecasts)
            page_data.warm(self.forecasts)

    def _ship(self, seconds: float) -> None:
        """Production: ship the prediction log's closed chunks to S3 every ``seconds``."""
        while not self._stop.wait(seconds):
            self.prediction_log.flush()

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stop.set()
        self.prediction_log.close()  # production: ship the last chunk
