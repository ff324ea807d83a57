"""``GET /reports/{name}``: the monitoring stage's reports and plots (Evidently drift pages,
forecast-against-observed plots, the JSON records), so that the Dagster UI's links open in a
browser. Read from the lake's ``reports/`` folder: a folder under ``ROUTEAQ_HOME`` embedded, the
bucket's ``{prefix}/reports/`` in production. Only report files are served: ``.html``, ``.png``
and ``.json`` names of plain segments; anything else is 404, as is a report pruned since."""

from __future__ import annotations

from pathlib import Path

import bentoml
from fastapi import FastAPI
from fastapi import Path as PathParameter
from fastapi.responses import Response

from routeaq_assets.adapters.shared import SharedFolder
from routeaq_assets.core.shared_folders import REPORTS
from routeaq_serving.errors import UnknownReport

MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".json": "application/json"}


def read_report(lake_root: Path, shared: SharedFolder | None, name: str) -> bytes | None:
    """The report ``name`` (relative to ``reports/``) from the bucket's reports folder in
    production (``shared``), else from the local lake; None if there is none."""
    if shared is not None:
        return shared.read(name)
    path = lake_root / REPORTS / name
    return path.read_bytes() if path.is_file() else None


def install(app: FastAPI) -> None:
    @app.get("/reports/{name:path}", tags=["monitoring"], summary="A drift page, a plot or a monitoring record of the lake's reports", responses={404: {"description": "No such report"}})
    def report(name: str = PathParameter(max_length=300, examples=["drift/no2/2025-08-01T11.html"])) -> Response:
        parts = name.split("/")
        media = MEDIA_TYPES.get(Path(name).suffix)
        if media is None or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise UnknownReport(f"no report {name!r}: reports are .html, .png or .json files under reports/", "name")
        service = bentoml.get_current_service()
        data = read_report(service.lake_root, service.shared_reports, name)
        if data is None:
            raise UnknownReport(f"no report {name!r} (never written, or pruned since)", "name")
        return Response(content=data, media_type=media)
