"""The demo network seen through the UK-AIR SOS API: the same JSON shapes, built from the demo's
openair files, so the live path (``sources.sos``) runs unchanged on the demo.

It answers ``timeseries?expanded=true&phenomenon=`` (one series per site and pollutant, labelled
``{Site name}-{Pollutant} (air)`` like the real service, no site code) and
``timeseries/{id}/getData?timespan={start}/{end}`` (values stamped at the END of each hourly mean,
``-99`` where the demo instrument had an outage).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import polars as pl

from routeaq_assets.core.windows import year_span
from routeaq_assets.sources.openair import openair_to_observations, read_rdata_table
from routeaq_assets.sources.sos import MISSING_MARKER, PHENOMENA

if TYPE_CHECKING:
    from routeaq_assets.sources.demo_network import DemoNetwork

DEMO_SOS_URL = "demo-sos://network/api/v1/"
LABELS = {"no2": "Nitrogen dioxide (air)", "pm25": "PM2.5 particulate matter (aerosol)", "pm10": "PM10 particulate matter (aerosol)",
          "o3": "Ozone (air)", "nox": "Nitrogen oxides as nitrogen dioxide (air)"}
POLLUTANT_OF = {code: pollutant for pollutant, code in PHENOMENA.items()}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(timezone.utc)


class DemoSosView:
    """A transport for ``SosClient``: (url, params, timeout) -> (status, JSON body)."""

    def __init__(self, network: DemoNetwork):
        self.network = network

    def __call__(self, url: str, params: dict, timeout: float) -> tuple[int, Any]:
        if not url.startswith(DEMO_SOS_URL):
            return 404, None
        parts = url[len(DEMO_SOS_URL):].strip("/").split("/")
        if parts == ["timeseries"] and params.get("phenomenon") in POLLUTANT_OF:
            return 200, self._series(params["phenomenon"])
        if len(parts) == 3 and parts[0] == "timeseries" and parts[2] == "getData" and "/" in params.get("timespan", ""):
            site_id, _, phenomenon = parts[1].rpartition("-")
            if site_id not in self.network.sites or phenomenon not in POLLUTANT_OF:
                return 404, None
            first, last = (_parse(p) for p in params["timespan"].split("/"))
            return 200, {"values": self._values(site_id, POLLUTANT_OF[phenomenon], first, last)}
        return 400, None

    def _series(self, phenomenon: str) -> list[dict]:
        newest = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        return [
            {
                "id": f"{site.site_id}-{phenomenon}",
                "label": f"{LABELS[POLLUTANT_OF[phenomenon]]}, {site.site_name}",
                "uom": "ug.m-3",
                "station": {"type": "Feature", "properties": {"id": index, "label": f"{site.site_name}-{LABELS[POLLUTANT_OF[phenomenon]]}"},
                            "geometry": {"type": "Point", "coordinates": [site.latitude, site.longitude, "NaN"]}},
                "parameters": {"phenomenon": {"id": phenomenon, "label": LABELS[POLLUTANT_OF[phenomenon]]}},
                "lastValue": {"timestamp": _ms(newest), "value": None},
            }
            for index, site in enumerate(self.network.sites.values())
        ]

    def _values(self, site_id: str, pollutant: str, first: datetime, last: datetime) -> list[dict]:
        """Values whose hour ends in [first, last], as the service stamps them."""
        frames = []
        for year in year_span(first - timedelta(hours=1), last):
            self.network.ensure_site_year(site_id, year)
            table = read_rdata_table(self.network.openair_path(site_id, year))
            frames.append(openair_to_observations(table, site_id=site_id, network="aurn", source="demo"))
        hours = pl.concat(frames).filter(
            (pl.col("pollutant") == pollutant) & pl.col("time").is_between(first - timedelta(hours=1), last - timedelta(hours=1))
        )
        return [
            {"timestamp": _ms(row["time"] + timedelta(hours=1)), "value": MISSING_MARKER if row["value"] is None else row["value"]}
            for row in hours.sort("time").iter_rows(named=True)
        ]
