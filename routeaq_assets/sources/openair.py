"""openair site-year files: ``{base}{SITE}_{YEAR}.RData`` as published for AURN and the other
UK regulatory networks, and the same tables exported by users as CSV or Parquet.

The ``date`` column is GMT, hour beginning, so it maps to the observations contract unchanged.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from routeaq_assets.core.schema import OBSERVATIONS, SourceDataError, TIME, conform
from routeaq_assets.core.sites import PARAMETER_CODES

NETWORK_BASE_URLS = {
    "aurn": "https://uk-air.defra.gov.uk/openair/R_data/",
    "aqe": "https://airqualityengland.co.uk/assets/openair/R_data/",
    "saqn": "https://www.scottishairquality.scot/openair/R_data/",
    "waqn": "https://airquality.gov.wales/sites/default/files/openair/R_data/",
    "ni": "https://www.airqualityni.co.uk/openair/R_data/",
}

UNIT = "ugm-3"


def read_rdata_table(path: Path) -> pl.DataFrame:
    """The single data.frame held in an openair ``.RData`` file, as Polars."""
    import pyreadr

    try:
        objects = pyreadr.read_r(str(path))
    except Exception as exc:  # pyreadr raises its own and zlib errors for damaged files
        raise SourceDataError(f"{path.name}: not a readable RData file ({exc})") from exc
    if len(objects) != 1:
        raise SourceDataError(f"{path.name}: expected one data.frame, found {list(objects)}")
    (frame,) = objects.values()
    if "code" in frame.columns:
        frame["code"] = frame["code"].astype(str)
    return pl.from_pandas(frame)


def read_openair_csv(path: Path) -> pl.DataFrame:
    """An openair table exported as CSV, every cell as text (``NA`` and empty cells null), with
    each row's file line in ``__line``. A row is whole or it is an error: one with fewer or more
    fields than the header (a line cut by a failed copy, the last line included, or a stray
    field) names its line and field count. An empty file is an empty table (no new data)."""
    raw = path.read_bytes()
    if (nul := raw.find(b"\x00")) >= 0:
        raise SourceDataError(f"{path.name}: not a text CSV table (binary data at byte {nul})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceDataError(f"{path.name}: not a UTF-8 CSV table (undecodable byte at {exc.start})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return pl.DataFrame()
    if len(set(header)) != len(header):
        raise SourceDataError(f"{path.name}: the header names a column twice: {header}")
    rows, lines = [], []
    for row in reader:
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            raise SourceDataError(
                f"{path.name}: line {reader.line_num} has {len(row)} field{'s' * (len(row) != 1)} where the header has {len(header)} "
                f"(a cut or ragged row): {','.join(row)[:80]!r}"
            )
        rows.append([None if cell in ("", "NA") else cell for cell in row])
        lines.append(reader.line_num)
    table = pl.DataFrame(rows, schema={name: pl.Utf8 for name in header}, orient="row")
    return table.with_columns(pl.Series("__line", lines, dtype=pl.Int64))


def read_openair_table(path: Path) -> pl.DataFrame:
    """A user's openair-format table from RData, CSV or Parquet. A file that cannot be read as
    its kind raises ``SourceDataError`` naming it; an empty file is an empty table."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        return pl.DataFrame()
    if suffix in (".rdata", ".rda"):
        return read_rdata_table(path)
    if suffix == ".csv":
        return read_openair_csv(path)
    if suffix == ".parquet":
        try:
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SourceDataError(f"{path.name}: not a readable Parquet table ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    raise SourceDataError(f"{path.name}: unsupported table format {suffix!r} (use .RData, .csv or .parquet)")


def utc_hours(table: pl.DataFrame) -> pl.Expr:
    """The ``date`` column as UTC: naive values are GMT (openair's convention). Text dates must
    have passed ``require_dates``."""
    date = pl.col("date")
    dtype = table.schema["date"]
    if dtype == pl.Utf8:
        return date.str.to_datetime(time_zone="UTC", strict=False).cast(TIME)
    if getattr(dtype, "time_zone", None) is None:
        return date.dt.replace_time_zone("UTC").cast(TIME)
    return date.dt.convert_time_zone("UTC").cast(TIME)


def _raise_first(table: pl.DataFrame, bad: pl.Series, column: str, problem: str, *, source: str, site_id: str | None) -> None:
    """Raise naming the file, site, column and line of the first row flagged in ``bad``, and how
    many there are. The file is ``__file`` when the table joins several files, else ``source``;
    the line ``__line`` when the reader kept one (a CSV's line numbers), else rows count from 1."""
    if not bad.any():
        return
    at = int(bad.arg_true()[0])
    where = f"line {table['__line'][at]}" if "__line" in table.columns else f"row {at + 1}"
    origin = f"local:{table['__file'][at]}" if "__file" in table.columns else source
    site = site_id if site_id is not None else table["code"][at]
    raise SourceDataError(f"{origin}: site {site}, column {column!r}, {where}: {table[column][at]!r} {problem} ({int(bad.sum())} such cells in the column)")


def require_dates(table: pl.DataFrame, *, source: str, site_id: str | None) -> None:
    """Raise naming the file, site and line of the first ``date`` that is missing or does not
    parse as a date and time (a cut line, a stray value)."""
    bad = table.select(utc_hours(table).is_null()).to_series() if table.schema["date"] == pl.Utf8 else table["date"].is_null()
    _raise_first(table, bad, "date", "is not a date and time like 2017-01-01 00:00:00", source=source, site_id=site_id)


def require_numbers(table: pl.DataFrame, columns: list[str], *, source: str, site_id: str | None) -> None:
    """Raise naming the file, site, column and line of the first cell in ``columns`` that is text
    where a number belongs (``NA``/``NaN``/empty are missing values, not errors)."""
    for column in columns:
        if table.schema[column].is_numeric() or table.schema[column] == pl.Null:
            continue
        text = table[column].cast(pl.Utf8).str.strip_chars()
        bad = text.is_not_null() & ~text.str.to_lowercase().is_in(["", "na", "nan"]) & text.cast(pl.Float64, strict=False).is_null()
        _raise_first(table, bad, column, "is not a number", source=source, site_id=site_id)


def openair_to_observations(
    table: pl.DataFrame,
    *,
    site_id: str | None,
    network: str,
    source: str,
    ingested_at: datetime | None = None,
) -> pl.DataFrame:
    """Normalise an openair wide table to long observations.

    Pollutant columns are matched by their published names (``PM2.5``, ``NO2``, ``NOXasNO2`` ...)
    or openair's lower-cased export names (``pm2.5``, ``nox`` ...); other columns are ignored.
    ``site_id`` None takes the site from the table's ``code`` column (one file, many sites).
    """
    if "date" not in table.columns:
        raise SourceDataError(f"{source}: no 'date' column; columns are {table.columns}")
    value_columns = {c: PARAMETER_CODES[c] for c in table.columns if c in PARAMETER_CODES}
    if not value_columns:
        raise SourceDataError(f"{source}: no pollutant columns among {table.columns}")
    if site_id is None and "code" not in table.columns:
        raise SourceDataError(f"{source}: no site given and no 'code' column to take it from")
    require_dates(table, source=source, site_id=site_id)
    require_numbers(table, list(value_columns), source=source, site_id=site_id)
    date = utc_hours(table)
    site = pl.lit(site_id) if site_id is not None else pl.col("code").cast(pl.Utf8)
    wide = table.select(
        site.alias("site_id"),
        date.alias("time"),
        *[pl.col(c).cast(pl.Float64, strict=False).fill_nan(None).alias(code) for c, code in value_columns.items()],
    )
    long = wide.unpivot(index=["site_id", "time"], variable_name="pollutant", value_name="value")
    stamped = long.with_columns(
        pl.lit(UNIT).alias("unit"),
        pl.lit(None, pl.Utf8).alias("status"),
        pl.lit(network).alias("network"),
        pl.lit(source).alias("source"),
        pl.lit(ingested_at or datetime.now(timezone.utc)).cast(TIME).alias("ingested_at"),
    )
    return conform(stamped, OBSERVATIONS, source).sort("site_id", "time", "pollutant")


def site_year_filename(site_id: str, year: int) -> str:
    return f"{site_id}_{year}.RData"
