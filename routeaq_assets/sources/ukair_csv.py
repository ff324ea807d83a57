"""UK-AIR per-site-year CSV files (``.../datastore/data_files/site_data/{SITE}_{YEAR}.csv``).

Layout: four preamble lines, a header ``Date,time,<name>,status,unit,...``, a blank line, data.
Values come in value/status/unit triplets matched by position (older files pair each value with
one combined ``status/unit`` column). Times are GMT **hour ending** ``01:00``..``24:00``: the row
stamped 01:00 covers 00:00-01:00 and becomes hour-beginning 00:00; ``24:00`` is the last hour
of the day. Missing values are empty cells or ``No data``.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone

import polars as pl

from routeaq_assets.core.schema import OBSERVATIONS, TIME, SourceDataError, conform

# Pollutant names as UK-AIR prints them (HTML stripped, lower case) -> pollutant codes.
UKAIR_NAMES = {
    "pm2.5 particulate matter (hourly measured)": "pm25",
    "pm10 particulate matter (hourly measured)": "pm10",
    "nitrogen dioxide": "no2",
    "ozone": "o3",
    "nitrogen oxides as nitrogen dioxide": "nox",
}
MISSING = {"", "no data", "nodata", "-"}
UKAIR_BASE_URL = "https://uk-air.defra.gov.uk/datastore/data_files/site_data/"


def _clean(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", name)).strip().lower()


def _hour_beginning(day: str, clock: str) -> datetime:
    try:
        date = datetime.strptime(day.strip(), "%d-%m-%Y").replace(tzinfo=timezone.utc)
        hours, minutes = (int(x) for x in clock.strip().split(":"))
    except ValueError as exc:
        raise SourceDataError(f"bad date/time {day!r} {clock!r}: expected dd-mm-yyyy and hh:mm") from exc
    if not (1 <= hours <= 24 and minutes == 0):
        raise SourceDataError(f"bad hour-ending time {clock!r}: expected 01:00..24:00")
    return date + timedelta(hours=hours - 1)


def parse_ukair_csv(text: str, *, site_id: str, network: str = "aurn", source: str = "uk-air", ingested_at: datetime | None = None) -> pl.DataFrame:
    """Normalise a UK-AIR site-year CSV to long observations (hour-beginning UTC)."""
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines[:20]) if line.lower().startswith("date,time")), None)
    if header_at is None:
        raise SourceDataError(f"{source}: no 'Date,time' header in the first 20 lines")
    rows = list(csv.reader(io.StringIO("\n".join(lines[header_at:]))))
    header = rows[0]
    columns: list[tuple[int, str, int | None, int | None]] = []  # value index, code, status index, unit index
    i = 2
    while i < len(header):
        name = _clean(header[i])
        width = 1
        status_at = unit_at = None
        if i + 1 < len(header) and _clean(header[i + 1]) in ("status", "status/unit"):
            status_at = i + 1
            width = 2
            if _clean(header[i + 1]) == "status" and i + 2 < len(header) and _clean(header[i + 2]) == "unit":
                unit_at = i + 2
                width = 3
        if name in UKAIR_NAMES:
            columns.append((i, UKAIR_NAMES[name], status_at, unit_at))
        i += width
    if not columns:
        raise SourceDataError(f"{source}: no known pollutant column in header {header}")
    records = []
    for number, row in enumerate(rows[1:], start=header_at + 2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise SourceDataError(f"{source}: site {site_id}, line {number} has {len(row)} fields where the header has {len(header)} (a cut or ragged row)")
        try:
            time = _hour_beginning(row[0], row[1])
        except SourceDataError as exc:
            raise SourceDataError(f"{source}: site {site_id}, line {number}: {exc}") from exc
        for value_at, code, status_at, unit_at in columns:
            raw = row[value_at].strip()
            try:
                value = None if raw.lower() in MISSING else float(raw)
            except ValueError as exc:
                raise SourceDataError(
                    f"{source}: site {site_id}, column {_clean(header[value_at])!r} ({code}), line {number}: {raw!r} is not a number"
                ) from exc
            status = row[status_at].strip() if status_at is not None else None
            unit = row[unit_at].strip() if unit_at is not None else None
            if status and "/" in status and unit is None:
                status, _, unit = status.partition("/")
            records.append((time, code, value, status or None, unit or "ugm-3"))
    frame = pl.DataFrame(records, schema={"time": TIME, "pollutant": pl.Utf8, "value": pl.Float64, "status": pl.Utf8, "unit": pl.Utf8}, orient="row")
    stamped = frame.with_columns(
        pl.lit(site_id).alias("site_id"),
        pl.lit(network).alias("network"),
        pl.lit(source).alias("source"),
        pl.lit(ingested_at or datetime.now(timezone.utc)).cast(TIME).alias("ingested_at"),
    )
    return conform(stamped, OBSERVATIONS, source).sort("time", "pollutant")


def ukair_csv_url(site_id: str, year: int, base: str = UKAIR_BASE_URL) -> str:
    return f"{base}{site_id}_{year}.csv"


UKAIR_HEADERS = {
    "pm25": "PM<sub>2.5</sub> particulate matter (Hourly measured)",
    "pm10": "PM<sub>10</sub> particulate matter (Hourly measured)",
    "no2": "Nitrogen dioxide",
    "o3": "Ozone",
    "nox": "Nitrogen oxides as nitrogen dioxide",
}


def format_ukair_csv(site_name: str, observations: pl.DataFrame, status: str = "R", supplied: str = "1/5/2026") -> str:
    """Write long observations of one site as a UK-AIR site-year CSV (the published layout)."""
    codes = [c for c in UKAIR_HEADERS if c in set(observations["pollutant"].to_list())]
    wide = observations.pivot(on="pollutant", index="time", values="value", aggregate_function="first").sort("time")
    out = io.StringIO()
    out.write(f"Data supplied by UK-AIR on {supplied}\nAll Data GMT hour ending\nStatus: R =Ratified P=Provisional,P*=As supplied\n")
    out.write(",," + site_name + ",,,,,,,,\n")
    out.write("Date,time," + ",".join(f'"{UKAIR_HEADERS[c]}",status,unit' for c in codes) + "\n\n")
    for row in wide.iter_rows(named=True):
        ending = row["time"] + timedelta(hours=1)
        day, clock = (ending.strftime("%d-%m-%Y"), ending.strftime("%H:%M")) if ending.hour else ((ending - timedelta(days=1)).strftime("%d-%m-%Y"), "24:00")
        cells = []
        for c in codes:
            value = row.get(c)
            cells += ["" if value is None else repr(float(value)), status, "ugm-3"]
        out.write(f"{day},{clock}," + ",".join(cells) + "\n")
    return out.getvalue()
