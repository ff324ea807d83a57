"""A folder of openair-format tables that users already have, as a first-class source.

Files: ``.RData``/``.rda`` (as published), ``.csv`` or ``.parquet`` with a ``date`` column (GMT,
hour beginning), pollutant columns by their published or openair names (``no2``, ``pm2.5``,
``o3``, ``NO2``, ``PM2.5`` ...) and optionally ``ws``, ``wd``, ``air_temp``/``temp``. One file per
site (the site code is the file name up to the first ``_``: ``MY1_2023.csv``, ``MY1.parquet``) or
files with a ``code`` column holding the site code.

Each file is read on its own. One that cannot be read (binary, a cut or ragged row, a date that
does not parse) fails the site its name gives and no other; an empty file is no new data, and so
is openair's site metadata table (``AURN_metadata.RData``: sites, not hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import polars as pl

from routeaq_assets.core.schema import TIME, WEATHER, SourceDataError, conform
from routeaq_assets.sources.openair import openair_to_observations, read_openair_table, require_dates, require_numbers, utc_hours

SUFFIXES = (".rdata", ".rda", ".csv", ".parquet")
# openair met columns -> weather contract (openair's modelled met: a reanalysis product).
MET_COLUMNS = {"ws": "wind_speed_10m", "wd": "wind_direction_10m", "air_temp": "temperature_2m", "temp": "temperature_2m"}


def table_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceDataError(f"local source folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
    if not files:
        raise SourceDataError(f"local source folder {folder} holds no .RData, .csv or .parquet table")
    return files


def _site_column(table: pl.DataFrame, path: Path) -> pl.Expr:
    if "code" in table.columns:
        return pl.col("code").cast(pl.Utf8).str.to_uppercase()
    return pl.lit(_file_site(path))


def _file_site(path: Path) -> str:
    return path.stem.split("_")[0].upper()


@dataclass(frozen=True)
class Folder:
    """A folder's tables read file by file: every site's rows (each with its ``__file`` and,
    for CSV, its ``__line``), and the files that could not be read, by the site their name
    gives. A file that fails fails its own site only."""

    tables: dict[str, pl.DataFrame]
    unreadable: dict[str, list[str]]

    def site(self, site_id: str) -> pl.DataFrame | None:
        """A site's rows, None when no file holds it; raises naming every file of the site that
        could not be read (the site's other files are not a whole answer)."""
        if site_id in self.unreadable:
            raise SourceDataError("; ".join(self.unreadable[site_id]))
        return self.tables.get(site_id)


# openair's site metadata (importMeta, e.g. AURN_metadata.RData beside the site-years): a table of
# sites, not of hours; a folder may hold it, and it is no site's data.
SITE_METADATA_COLUMNS = {"site_id", "latitude", "longitude"}


def _read_file(path: Path) -> pl.DataFrame:
    table = read_openair_table(path)
    if table.is_empty():
        return table
    if "date" not in table.columns and SITE_METADATA_COLUMNS <= set(table.columns):
        return table.clear()  # site metadata: read as no data
    if "date" not in table.columns:
        raise SourceDataError(f"{path.name}: no 'date' column; columns are {table.columns}")
    table = table.with_columns(_site_column(table, path).alias("__site"), pl.lit(str(path)).alias("__file"))
    require_dates(table, source=f"local:{path}", site_id=None if "code" in table.columns else _file_site(path))
    return table


@lru_cache(maxsize=4)
def _load(folder: str, signature: tuple) -> Folder:
    tables: dict[str, list[pl.DataFrame]] = {}
    unreadable: dict[str, list[str]] = {}
    for path in table_files(Path(folder)):
        try:
            table = _read_file(path)
        except SourceDataError as exc:
            unreadable.setdefault(_file_site(path), []).append(str(exc))
            continue
        if table.is_empty():
            continue  # an empty file: no new data
        for (site,), rows in table.group_by("__site"):
            tables.setdefault(site, []).append(rows)
    return Folder({site: pl.concat(parts, how="diagonal_relaxed") for site, parts in tables.items()}, unreadable)


def load_folder(folder: Path) -> Folder:
    """Every site's table in ``folder``, re-read only when a file changes."""
    signature = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in table_files(folder))
    return _load(str(Path(folder).resolve()), signature)


def local_observations(folder: Path, site_id: str, network: str) -> pl.DataFrame | None:
    """A site's observations from every file that holds it (each row's ``source`` names its
    file), or None when no file holds the site (no data)."""
    table = load_folder(folder).site(site_id)
    if table is None:
        return None
    return pl.concat(
        openair_to_observations(rows.drop("code", strict=False), site_id=site_id, network=network, source=f"local:{file}")
        for (file,), rows in table.group_by("__file", maintain_order=True)
    )


def local_weather(folder: Path, site_id: str) -> pl.DataFrame | None:
    """The met columns of a site's tables as weather (kind ``reanalysis``): no rows when its
    tables have no met column, None when no file holds the site (no data either way)."""
    table = load_folder(folder).site(site_id)
    if table is None:
        return None
    present = {source: target for source, target in MET_COLUMNS.items() if source in table.columns}
    if not present:
        return pl.DataFrame(schema=WEATHER)
    require_numbers(table, list(present), source=f"local weather {folder}", site_id=site_id)
    columns = {target: pl.col(source).cast(pl.Float64, strict=False).fill_nan(None) for source, target in reversed(list(present.items()))}
    frame = table.select(
        pl.lit(site_id).alias("site_id"),
        utc_hours(table).alias("time"),
        *(expr.alias(name) for name, expr in columns.items()),
        (pl.lit("local:") + pl.col("__file")).alias("source"),
    ).with_columns(
        *(pl.lit(None, pl.Float64).alias(c) for c in WEATHER if c not in columns and c not in ("site_id", "time", "kind", "source", "ingested_at")),
        pl.lit("reanalysis").alias("kind"),
        pl.lit(datetime.now(timezone.utc)).cast(TIME).alias("ingested_at"),
    )
    return conform(frame, WEATHER, f"local weather {site_id}").unique(["site_id", "time"], keep="first").sort("time")


def folder_sites(folder: Path) -> list[str]:
    """The sites of the folder's files, those whose file cannot be read included (reading them
    names the problem)."""
    loaded = load_folder(folder)
    return sorted(set(loaded.tables) | set(loaded.unreadable))
