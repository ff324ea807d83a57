"""The cleanest hours ahead: for an activity of ``hours`` hours, the window of the next forecast
hours with the lowest expected exposure, beside the window that starts now and the worst one.

An hour's exposure is the highest, over the pollutants forecast, of the forecast concentration as
a share of the top of that pollutant's Low band (the upper bound of DAQI index 3: PM2.5 35,
PM10 50, NO2 200, O3 100 µg/m³), so 1.0 is where Moderate begins whichever pollutant sets it.
A window's exposure is the mean of its hours'; its band is the highest hourly (indicative) DAQI
band in it. A window needs a forecast of every pollutant for each of its hours. Ties go to the
earlier window: nobody waits for an equally clean hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from routeaq_assets.core.daqi import BANDS, UPPER_BOUNDS, daqi

LOW_TOP = {pollutant: float(bounds[2]) for pollutant, bounds in UPPER_BOUNDS.items()}
ACTIVITY_HOURS = (1, 2, 3)
LOOK_AHEAD_HOURS = (24, 48)
HOURLY_FORECASTS = {"time": pl.Datetime("us", "UTC"), "pollutant": pl.Utf8, "pred": pl.Float64}


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime  # exclusive
    exposure: float
    index: int  # the highest hourly DAQI index in the window
    dominant: str  # the pollutant that sets the exposure most often (the first on ties)
    means: dict[str, float]  # mean forecast per pollutant, µg/m³

    def as_dict(self) -> dict:
        return {
            "start": f"{self.start:%Y-%m-%dT%H:%M:%SZ}", "end": f"{self.end:%Y-%m-%dT%H:%M:%SZ}",
            "exposure": round(self.exposure, 3), "index": self.index, "band": BANDS[self.index - 1], "dominant": self.dominant,
            "means": {p: round(v, 1) for p, v in sorted(self.means.items())},
        }


def hourly_exposure(forecasts: pl.DataFrame) -> pl.DataFrame:
    """Per hour with every pollutant forecast: ``exposure``, ``index``, ``dominant`` and the
    forecasts themselves as columns (one per pollutant), in time order."""
    pollutants = sorted(forecasts["pollutant"].unique().to_list())
    wide = forecasts.pivot(on="pollutant", index="time", values="pred").drop_nulls().sort("time")
    rows = []
    for row in wide.iter_rows(named=True):
        share = {p: row[p] / LOW_TOP[p] for p in pollutants}
        dominant = max(pollutants, key=lambda p: (share[p], -pollutants.index(p)))
        rows.append({"time": row["time"], "exposure": share[dominant], "index": max(daqi(p, row[p]).index for p in pollutants), "dominant": dominant,
                     **{p: row[p] for p in pollutants}})
    return pl.DataFrame(rows, schema={"time": pl.Datetime("us", "UTC"), "exposure": pl.Float64, "index": pl.Int64, "dominant": pl.Utf8, **{p: pl.Float64 for p in pollutants}})


def windows(forecasts: pl.DataFrame, hours: int) -> list[Window]:
    """Every window of ``hours`` consecutive hours whose hours all have every pollutant forecast."""
    if hours not in ACTIVITY_HOURS:
        raise ValueError(f"an activity of {hours} hours: give 1, 2 or 3")
    hourly = hourly_exposure(forecasts)
    pollutants = [c for c in hourly.columns if c not in ("time", "exposure", "index", "dominant")]
    times = hourly["time"].to_list()
    found = []
    for k in range(len(times) - hours + 1):
        if times[k + hours - 1] - times[k] != timedelta(hours=hours - 1):
            continue  # a gap: an hour lacks a pollutant's forecast
        part = hourly.slice(k, hours)
        dominant = part["dominant"].mode().sort()[0]
        found.append(Window(times[k], times[k] + timedelta(hours=hours), float(part["exposure"].mean()), int(part["index"].max()), dominant,
                            {p: float(part[p].mean()) for p in pollutants}))
    return found


def best_time(forecasts: pl.DataFrame, hours: int) -> dict[str, Window] | None:
    """``best`` (lowest exposure, the earliest on ties), ``now`` (the first window) and ``worst``
    (the highest, the earliest on ties) of ``forecasts`` (``HOURLY_FORECASTS``); None when no
    window has every hour forecast."""
    found = windows(forecasts, hours)
    if not found:
        return None
    return {
        "best": min(found, key=lambda w: (w.exposure, w.start)),
        "now": found[0],
        "worst": min(found, key=lambda w: (-w.exposure, w.start)),
    }
