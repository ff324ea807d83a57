"""Data-quality measures for observations: completeness, frozen instruments, freshness."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl


def daily_completeness(observations: pl.DataFrame, end: datetime, first: pl.DataFrame | None = None) -> pl.DataFrame:
    """Share of hours with a value per site, pollutant and UTC day, counting a day's hours only
    up to ``end`` (so today's partial day is judged on the hours that have passed) and, with
    ``first`` (``site_id``, ``pollutant``, ``first``: each one's first stored hour), only from
    that hour (a series that starts mid-day, a window's first day, is judged on its own hours)."""
    daily = (
        observations.with_columns(pl.col("time").dt.truncate("1d").alias("day"))
        .group_by("site_id", "pollutant", "day")
        .agg(pl.col("value").count().alias("hours_with_value"))
    )
    before = pl.lit(0)
    if first is not None:
        daily = daily.join(first, on=["site_id", "pollutant"], how="left")
        before = ((pl.col("first") - pl.col("day")).dt.total_hours()).clip(0, 24).fill_null(0)
    return (
        daily.with_columns((pl.min_horizontal(pl.lit(24), (pl.lit(end) - pl.col("day")).dt.total_hours()) - before).alias("hours_expected"))
        .with_columns((pl.col("hours_with_value") / pl.col("hours_expected")).alias("completeness"))
        .select("site_id", "pollutant", "day", "hours_with_value", "hours_expected", "completeness")
        .sort("site_id", "pollutant", "day")
    )


def frozen_runs(observations: pl.DataFrame, min_hours: int) -> pl.DataFrame:
    """Runs of at least ``min_hours`` consecutive hours with the same non-null value at one site
    and pollutant: a stuck instrument or a repeated placeholder."""
    keys = ["site_id", "pollutant"]
    runs = (
        observations.sort(*keys, "time")
        .with_columns(
            (
                (pl.col("value") != pl.col("value").shift(1)).fill_null(True)
                | (pl.col("time") - pl.col("time").shift(1) != timedelta(hours=1)).fill_null(True)
            )
            .cum_sum()
            .over(keys)
            .alias("run")
        )
        .filter(pl.col("value").is_not_null())
        .group_by(*keys, "run")
        .agg(pl.col("value").first(), pl.col("time").min().alias("start"), pl.col("time").max().alias("end"), pl.len().alias("hours"))
    )
    return runs.filter(pl.col("hours") >= min_hours).drop("run").sort(*keys, "start")


CHANGE_KINDS = ("value_to_value", "value_to_null", "null_to_value", "status_only", "value_to_quarantine")
KEYS = ["site_id", "time", "pollutant"]


def value_changes(stored: pl.DataFrame, incoming: pl.DataFrame, quarantined: pl.DataFrame) -> dict[str, int]:
    """What a re-read changes in the stored rows it replaces, by kind: a value replaced by
    another (a correction), a value turned missing, a missing value filled (a provisional value
    ratified or a late one), the status alone, and a stored value whose new reading was
    quarantined (its row leaves the observations; the quarantine keeps both)."""
    if stored.is_empty():
        return dict.fromkeys(CHANGE_KINDS, 0)
    joined = incoming.select(*KEYS, "value", "status").join(stored.select(*KEYS, "value", "status"), on=KEYS, how="inner", suffix="_stored")
    new, old = pl.col("value"), pl.col("value_stored")
    counts = joined.select(
        (new.is_not_null() & old.is_not_null() & (new != old)).sum().alias("value_to_value"),
        (new.is_null() & old.is_not_null()).sum().alias("value_to_null"),
        (new.is_not_null() & old.is_null()).sum().alias("null_to_value"),
        (new.eq_missing(old) & pl.col("status").ne_missing(pl.col("status_stored"))).sum().alias("status_only"),
    ).row(0, named=True)
    counts["value_to_quarantine"] = quarantined.select(KEYS).join(stored.filter(pl.col("value").is_not_null()).select(KEYS), on=KEYS, how="semi").height
    return {kind: int(counts[kind]) for kind in CHANGE_KINDS}


def nulled_share(stored: pl.DataFrame, changes: dict[str, int]) -> float:
    """The share of the stored values that a re-read turned missing."""
    values = stored.filter(pl.col("value").is_not_null()).height if not stored.is_empty() else 0
    return changes["value_to_null"] / values if values else 0.0


def with_replaced_values(quarantined: pl.DataFrame, stored: pl.DataFrame, stored_quarantine: pl.DataFrame) -> pl.DataFrame:
    """Quarantined rows with the value each one displaced from the observations
    (``replaced_value``, ``replaced_source``): the stored observation of its key, or, when an
    earlier read quarantined the key too, what that read kept. A quarantined reading never
    loses a stored value."""
    replaced = stored.filter(pl.col("value").is_not_null()).select(*KEYS, pl.col("value").alias("replaced_value"), pl.col("source").alias("replaced_source")) if not stored.is_empty() else None
    if not stored_quarantine.is_empty() and "replaced_value" in stored_quarantine.columns:
        earlier = stored_quarantine.filter(pl.col("replaced_value").is_not_null()).select(*KEYS, "replaced_value", "replaced_source")
        replaced = earlier if replaced is None else pl.concat([replaced, earlier.join(replaced, on=KEYS, how="anti")])
    if replaced is None:
        return quarantined.with_columns(pl.lit(None, pl.Float64).alias("replaced_value"), pl.lit(None, pl.Utf8).alias("replaced_source"))
    return quarantined.join(replaced, on=KEYS, how="left")


def hours_missing_from_source(stored: pl.DataFrame, incoming: pl.DataFrame) -> pl.DataFrame:
    """Site-hours stored from a source file that the same file, read again, no longer holds (a
    truncated or shrunk file): one row per site and file with the number of hours and the first
    and last of them. ``stored`` holds the rows of the files read again (``site_id``, ``time``,
    ``source``); ``incoming`` what they hold now."""
    gone = stored.select("site_id", "time", "source").unique().join(
        incoming.select("site_id", "time").unique(), on=["site_id", "time"], how="anti"
    )
    return (
        gone.group_by("site_id", "source")
        .agg(pl.len().alias("hours"), pl.col("time").min().alias("first"), pl.col("time").max().alias("last"))
        .sort("site_id", "source")
    )


def describe_missing_hours(missing: pl.DataFrame) -> list[str]:
    """One sentence per site and file of ``hours_missing_from_source``."""
    return [
        f"{row['source']}, site {row['site_id']}: holds {row['hours']} fewer hours than stored "
        f"({row['first']:%Y-%m-%d %H:%M} to {row['last']:%Y-%m-%d %H:%M} UTC are gone; truncated file?); stored rows kept"
        for row in missing.iter_rows(named=True)
    ]


# Published hourly values can dip a little below zero (instrument noise near the detection
# limit, e.g. -0.5 ug/m3 PM2.5 in ratified AURN data); anything outside these bounds is impossible.
VALUE_RANGES = {"pm25": (-10.0, 1000.0), "pm10": (-10.0, 2000.0), "no2": (-10.0, 2000.0), "o3": (-10.0, 1000.0), "nox": (-10.0, 5000.0)}


def _bounds() -> pl.DataFrame:
    return pl.DataFrame({"pollutant": list(VALUE_RANGES), "low": [b[0] for b in VALUE_RANGES.values()], "high": [b[1] for b in VALUE_RANGES.values()]})


def out_of_range(observations: pl.DataFrame) -> pl.DataFrame:
    """Rows whose value lies outside its pollutant's physical range, with the ``reason``."""
    return (
        observations.join(_bounds(), on="pollutant")
        .filter((pl.col("value") < pl.col("low")) | (pl.col("value") > pl.col("high")))
        .with_columns(
            pl.format("{} {} outside the physical range {} to {} ug/m3", pl.col("pollutant"), pl.col("value"), pl.col("low"), pl.col("high")).alias("reason")
        )
        .drop("low", "high")
    )


def split_out_of_range(observations: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows to store, rows to quarantine with their ``reason``): a value outside its physical
    range is kept out of the observations, which then have no row for that site, hour and
    pollutant (missing, as if the source had no value)."""
    bad = out_of_range(observations)
    keys = ["site_id", "time", "pollutant"]
    return observations.join(bad.select(keys), on=keys, how="anti"), bad


def duplicate_hours(observations: pl.DataFrame) -> pl.DataFrame:
    """Site, pollutant and hour keys that a source gives more than once, with the files."""
    keys = ["site_id", "time", "pollutant"]
    return (
        observations.group_by(keys)
        .agg(pl.len().alias("copies"), pl.col("source").unique().sort().str.join(", ").alias("files"))
        .filter(pl.col("copies") > 1)
        .sort(keys)
    )


def describe_duplicates(duplicates: pl.DataFrame, shown: int = 5) -> list[str]:
    """One sentence per site: its files, how many hours repeat, and the first of them."""
    sentences = []
    for (site_id,), rows in duplicates.group_by("site_id", maintain_order=True):
        hours = rows["time"].unique().sort()
        listed = ", ".join(f"{t:%Y-%m-%d %H:%M}" for t in hours.head(shown))
        more = f" and {hours.len() - shown} more" if hours.len() > shown else ""
        files = ", ".join(sorted(set(", ".join(rows["files"].to_list()).split(", "))))
        sentences.append(f"{files}, site {site_id}: {hours.len()} hours appear more than once ({listed}{more} UTC); stored rows kept")
    return sentences


def markdown_table(frame: pl.DataFrame, limit: int = 20) -> str:
    """A small frame as a Markdown table for check metadata (readable in the Dagster UI)."""
    if frame.is_empty():
        return "none"
    shown = frame.head(limit)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in shown.iter_rows()]
    if frame.height > limit:
        lines.append(f"\n{frame.height - limit} more rows")
    return "\n".join(lines)
