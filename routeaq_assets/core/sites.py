"""Site registry: which sites exist, where they are, and what each measures when."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import polars as pl

# Published parameter names (openair upper case, and openair's own lower-cased export) -> codes.
PARAMETER_CODES = {
    "PM2.5": "pm25",
    "pm2.5": "pm25",
    "PM10": "pm10",
    "pm10": "pm10",
    "NO2": "no2",
    "no2": "no2",
    "O3": "o3",
    "o3": "o3",
    "NOXasNO2": "nox",
    "nox": "nox",
}

# Location types as published, to a stable integer code used as a model feature.
LOCATION_TYPES = {
    "Rural Background": 0,
    "Suburban Background": 1,
    "Urban Background": 2,
    "Suburban Industrial": 3,
    "Urban Industrial": 4,
    "Urban Traffic": 5,
}

SITES = {
    "site_id": pl.Utf8,
    "site_name": pl.Utf8,
    "location_type": pl.Utf8,
    "location_type_code": pl.Int32,
    "latitude": pl.Float64,
    "longitude": pl.Float64,
    "network": pl.Utf8,
    "pollutant": pl.Utf8,
    "start_date": pl.Date,
    "end_date": pl.Date,
}


def packaged_metadata_csv() -> str:
    return str(resources.files("routeaq_assets") / "data" / "aurn_metadata.csv")


def read_site_metadata(frame: pl.DataFrame, network: str = "aurn") -> pl.DataFrame:
    """Normalise a metadata table (AURN_metadata layout) to one row per site and pollutant.

    Parameters other than the forecast pollutants are dropped; ``end_date`` 'ongoing' is null.
    A site and parameter listed twice (a closed and a reopened instrument) keeps both rows.
    """
    required = {"site_id", "site_name", "location_type", "latitude", "longitude", "parameter", "start_date", "end_date"}
    missing = sorted(required - set(frame.columns))
    if missing:
        raise ValueError(f"site metadata is missing columns {missing}")
    return (
        frame.with_columns(pl.col("parameter").cast(pl.Utf8).replace_strict(PARAMETER_CODES, default=None).alias("pollutant"))
        .filter(pl.col("pollutant").is_not_null())
        .select(
            pl.col("site_id").cast(pl.Utf8),
            pl.col("site_name").cast(pl.Utf8),
            pl.col("location_type").cast(pl.Utf8),
            pl.col("location_type").cast(pl.Utf8).replace_strict(LOCATION_TYPES, default=-1, return_dtype=pl.Int32).alias("location_type_code"),
            pl.col("latitude").cast(pl.Float64),
            pl.col("longitude").cast(pl.Float64),
            pl.lit(network).alias("network"),
            "pollutant",
            pl.col("start_date").cast(pl.Utf8).str.to_date("%Y-%m-%d", strict=False),
            pl.col("end_date").cast(pl.Utf8).str.to_date("%Y-%m-%d", strict=False),
        )
        .sort("site_id", "pollutant", "start_date")
    )


@lru_cache(maxsize=1)
def _packaged_registry() -> pl.DataFrame:
    return read_site_metadata(pl.read_csv(packaged_metadata_csv(), infer_schema_length=0))


def load_packaged_registry(site_ids: tuple[str, ...] | None = None) -> pl.DataFrame:
    registry = _packaged_registry()
    if site_ids:
        unknown = sorted(set(site_ids) - set(registry["site_id"].to_list()))
        if unknown:
            raise ValueError(f"unknown site ids {unknown}: not in the AURN metadata")
        registry = registry.filter(pl.col("site_id").is_in(list(site_ids)))
    return registry


def site_attributes(registry: pl.DataFrame) -> pl.DataFrame:
    """One row per site: the attributes used as model features and for weather lookups."""
    return (
        registry.group_by("site_id", maintain_order=True)
        .agg(pl.col("site_name", "location_type", "location_type_code", "latitude", "longitude", "network").first())
        .sort("site_id")
    )


def measures(registry: pl.DataFrame, site_id: str, pollutant: str, year: int) -> bool:
    """Whether ``site_id`` measured ``pollutant`` at any time during ``year``."""
    rows = registry.filter(
        (pl.col("site_id") == site_id)
        & (pl.col("pollutant") == pollutant)
        & (pl.col("start_date").dt.year() <= year)
        & (pl.col("end_date").is_null() | (pl.col("end_date").dt.year() >= year))
    )
    return rows.height > 0
