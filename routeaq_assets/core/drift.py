"""Feature drift of one pollutant's model inputs: recent rows against the champion's training rows.

What is compared, and why:
- **Window.** ``CURRENT_WINDOW_HOURS`` (24) ending with the hour judged: every hour of the day
  once, so the daily traffic and photochemistry cycles are in the reference's proportions, and a
  step change is seen within a day (the issue's bar). A week dilutes a new step to 1/7 of the
  rows for days.
- **Thresholds, like for like.** Neighbouring hours are correlated and weather comes in spells of
  days, so one day always sits some way from a season of rows, and a fixed threshold fires on
  stationary data nearly every hour (measured: 35 of 41 features on the demo network). Each
  feature's threshold is instead calibrated on the distances that single days *of the
  champion's own training rows* have from those rows (``calibrated_thresholds``): a current day
  drifts only when it is further out than every training day and than their mean plus four
  standard deviations, weekends, stagnant spells and wet days included.
- **Features.** The calendar (``hour``, ``weekday``, ``month``, ``is_holiday``) differs by
  construction (a day has one weekday, the reference all of them) and site identity
  (coordinates, site type) is the same set of sites on both sides: both are left out
  (``CONSTANT_BY_CONSTRUCTION``).
- **Method.** The Wasserstein distance between the samples divided by the reference's standard
  deviation (Evidently's ``wasserstein`` method): an effect size in units of the feature's
  spread, which, unlike a K-S p-value, does not flag more as the sample grows.
- **Alarm.** A pollutant drifts when at least ``SHARE_THRESHOLD`` (0.1: four of the 37 compared
  features) exceed their thresholds. Measured on the demo network (three sites): over a stationary
  fortnight after 53 training days no pollutant fired on any day (after only 17 training days, O3
  on one day); NO2 doubling across the network was flagged 22 hours after it began
  (``tests/test_monitoring_drift.py`` holds both).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from routeaq_assets.core.features import FEATURE_COLUMNS, SITE_ATTRIBUTES

CURRENT_WINDOW_HOURS = 24
REFERENCE_ROWS = 5000
METHOD = "wasserstein_distance_norm"
COLUMN_FLOOR = 0.1
SPREAD_SDS = 4.0
THRESHOLD_RULE = f"max(farthest training day, mean + {SPREAD_SDS:g} sd of training days), at least {COLUMN_FLOOR}"
SHARE_THRESHOLD = 0.1
CALENDAR = ("hour", "weekday", "month", "is_holiday")
CONSTANT_BY_CONSTRUCTION = (*CALENDAR, *SITE_ATTRIBUTES)
DRIFT_FEATURES: tuple[str, ...] = tuple(c for c in FEATURE_COLUMNS if c not in CONSTANT_BY_CONSTRUCTION)
# Too few values on either side to say anything: the column is reported, not judged.
MIN_VALUES = 30


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    threshold: float
    value: float | None  # None: too few values to compare
    drifted: bool
    reference_values: int
    current_values: int


@dataclass(frozen=True)
class DriftSummary:
    pollutant: str
    method: str
    threshold_rule: str
    share_threshold: float
    drifted_columns: int
    compared_columns: int
    drifted_share: float
    drifted: bool
    reference_rows: int
    current_rows: int
    columns: list[ColumnDrift] = field(default_factory=list)

    def ranked(self) -> list[ColumnDrift]:
        """Columns, most drifted first (numerically; columns not compared last)."""
        return sorted(self.columns, key=lambda c: (c.value is None, -(c.value or 0.0), c.column))

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "columns": [asdict(c) for c in self.ranked()]}, indent=1)

    def markdown(self, top: int = 10) -> str:
        verdict = "**DRIFTED**" if self.drifted else "not drifted"
        head = (
            f"{self.pollutant}: {verdict}: {self.drifted_columns} of {self.compared_columns} features "
            f"(share {self.drifted_share:.2f}, alarm at {self.share_threshold:.2f}); "
            f"method {self.method}, each feature's threshold {self.threshold_rule}; "
            f"{self.current_rows} current rows vs {self.reference_rows} reference rows\n\n"
        )
        rows = [
            f"| {c.column} | {'-' if c.value is None else f'{c.value:.3f}'} | {c.threshold:.3f} | {'yes' if c.drifted else 'no'} |"
            for c in self.ranked()[:top]
        ]
        return head + "| feature | distance | threshold | drifted |\n|---|---|---|---|\n" + "\n".join(rows)


def wasserstein_norm(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein distance in units of the reference's standard deviation."""
    from scipy.stats import wasserstein_distance  # SciPy's stats take 2 s to import: only where drift is measured

    spread = float(np.std(reference))
    distance = float(wasserstein_distance(reference, current))
    if spread == 0.0:
        return 0.0 if distance == 0.0 else float("inf")
    return distance / spread


def calibrated_thresholds(reference: pl.DataFrame, columns: tuple[str, ...], block_hours: int = CURRENT_WINDOW_HOURS, floor: float = COLUMN_FLOOR) -> dict[str, float]:
    """Per feature, how far a window of ``block_hours`` may sit from the reference: the
    ``block_spread`` of the distances of the reference's own whole blocks from the reference
    (never below ``floor``). Give it the full training rows: a sample leaves too few rows per
    block."""
    start = reference["time"].min()
    block = ((reference["time"] - start).dt.total_hours() // block_hours).to_numpy()
    times = reference["time"].to_numpy()
    full = [b for b in np.unique(block) if times[block == b].max() - times[block == b].min() >= np.timedelta64(block_hours // 2, "h")]
    values = _values(reference, columns)
    matrix = reference.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()
    thresholds = {}
    for i, column in enumerate(columns):
        distances = []
        for b in full:
            part = matrix[block == b, i]
            part = part[~np.isnan(part)]
            if len(part) >= MIN_VALUES and len(values[column]) >= MIN_VALUES:
                distances.append(wasserstein_norm(values[column], part))
        spread = block_spread(np.array(distances)) if distances else 0.0
        thresholds[column] = round(max(floor, spread), 4)
    return thresholds


def block_spread(distances: np.ndarray) -> float:
    """The larger of the farthest block and the blocks' mean plus ``SPREAD_SDS`` standard
    deviations: with a few weeks of training days the farthest day alone undershoots what a
    stationary day can reach."""
    return float(max(distances.max(), distances.mean() + SPREAD_SDS * distances.std()))


def _values(frame: pl.DataFrame, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    matrix = frame.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()
    return {c: matrix[:, i][~np.isnan(matrix[:, i])] for i, c in enumerate(columns)}


def column_drift(column: str, reference: np.ndarray, current: np.ndarray, threshold: float = COLUMN_FLOOR) -> ColumnDrift:
    if len(reference) < MIN_VALUES or len(current) < MIN_VALUES:
        return ColumnDrift(column, METHOD, threshold, None, False, len(reference), len(current))
    value = round(wasserstein_norm(reference, current), 4)
    return ColumnDrift(column, METHOD, threshold, value, value > threshold, len(reference), len(current))


def feature_drift(
    pollutant: str,
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: tuple[str, ...] = DRIFT_FEATURES,
    thresholds: dict[str, float] | None = None,
    share_threshold: float = SHARE_THRESHOLD,
) -> DriftSummary:
    """Per-feature drift of ``current`` against ``reference`` and the pollutant's verdict;
    ``thresholds`` per column (default: ``calibrated_thresholds`` of the reference)."""
    if reference.is_empty():
        raise ValueError(f"{pollutant}: the reference (the champion's training rows) is empty")
    if current.is_empty():
        raise ValueError(f"{pollutant}: no current rows to compare")
    thresholds = thresholds if thresholds is not None else calibrated_thresholds(reference, columns)
    ref, cur = _values(reference, columns), _values(current, columns)
    results = [column_drift(c, ref[c], cur[c], thresholds[c]) for c in columns]
    compared = [r for r in results if r.value is not None]
    if not compared:
        raise ValueError(f"{pollutant}: no feature has {MIN_VALUES} values in both the reference and the current window")
    drifted = sum(r.drifted for r in compared)
    share = round(drifted / len(compared), 3)
    return DriftSummary(
        pollutant=pollutant,
        method=METHOD,
        threshold_rule=THRESHOLD_RULE,
        share_threshold=share_threshold,
        drifted_columns=drifted,
        compared_columns=len(compared),
        drifted_share=share,
        drifted=share >= share_threshold,
        reference_rows=reference.height,
        current_rows=current.height,
        columns=results,
    )


def reference_sample_sql(rows: int = REFERENCE_ROWS, seed: int = 7) -> str:
    """The champion's training rows of a pollutant, sampled *after* the filter (DuckDB applies a
    ``USING SAMPLE`` written beside a ``WHERE`` to the table before filtering)."""
    return (
        "SELECT * FROM (SELECT * FROM silver_features WHERE pollutant = ? AND time >= ? AND time < ?) "
        f"USING SAMPLE reservoir({int(rows)} ROWS) REPEATABLE ({int(seed)})"
    )


def evidently_html(reference: pl.DataFrame, current: pl.DataFrame, columns: tuple[str, ...], threshold: float = COLUMN_FLOOR) -> str:
    """Evidently's interactive report over the same columns, method and threshold (only written
    when the alarm fires or a user asks: it is several MB)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    usable = [c for c in columns if reference[c].drop_nulls().len() >= MIN_VALUES and current[c].drop_nulls().len() >= MIN_VALUES]
    definition = DataDefinition(numerical_columns=usable)
    snapshot = Report([DataDriftPreset(columns=usable, method="wasserstein", threshold=threshold)]).run(
        Dataset.from_pandas(current.select(usable).to_pandas(), data_definition=definition),
        Dataset.from_pandas(reference.select(usable).to_pandas(), data_definition=definition),
    )
    return snapshot.get_html_str(as_iframe=False)
