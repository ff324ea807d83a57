"""core.best_time: the cleanest window for an activity, checked against a brute-force search."""

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from routeaq_assets.core.best_time import HOURLY_FORECASTS, LOW_TOP, best_time, windows

START = datetime(2025, 8, 1, 12, tzinfo=timezone.utc)


def forecasts(values: dict[str, list[float]], start: datetime = START) -> pl.DataFrame:
    return pl.DataFrame(
        [{"time": start + timedelta(hours=k), "pollutant": p, "pred": v} for p, series in values.items() for k, v in enumerate(series) if v is not None],
        schema=HOURLY_FORECASTS,
    )


@pytest.mark.parametrize("hours", [1, 2, 3])
def test_the_best_window_is_the_brute_force_minimum_of_the_worst_pollutant_share(hours):
    rng = np.random.default_rng(hours)
    values = {"no2": list(rng.uniform(5, 250, 48)), "o3": list(rng.uniform(5, 120, 48)), "pm25": list(rng.uniform(1, 40, 48))}
    found = best_time(forecasts(values), hours)
    share = np.max([np.array(values[p]) / LOW_TOP[p] for p in values], axis=0)
    means = [share[k:k + hours].mean() for k in range(48 - hours + 1)]
    assert found["best"].start == START + timedelta(hours=int(np.argmin(means)))
    assert found["worst"].start == START + timedelta(hours=int(np.argmax(means)))
    assert found["now"].start == START and found["best"].end - found["best"].start == timedelta(hours=hours)
    assert found["best"].exposure == pytest.approx(min(means)) and found["best"].exposure <= found["now"].exposure <= found["worst"].exposure
    k = int(np.argmin(means))
    assert found["best"].means["no2"] == pytest.approx(np.mean(values["no2"][k:k + hours]))


def test_ties_go_to_the_earlier_window_and_the_band_is_the_windows_highest_hour():
    # NO2 68 is index 2 (Low) and 201 index 4 (Moderate); o3 10 never sets the exposure.
    found = best_time(forecasts({"no2": [201, 68, 68, 68, 68, 201], "o3": [10] * 6}), 2)
    assert found["best"].start == START + timedelta(hours=1)  # hours 1-2, 2-3 and 3-4 tie
    assert found["best"].as_dict()["band"] == "Low" and found["best"].dominant == "no2"
    assert found["worst"].start == START and found["worst"].as_dict() | {"means": None} == {
        "start": "2025-08-01T12:00:00Z", "end": "2025-08-01T14:00:00Z", "exposure": round((201 / 200 + 68 / 200) / 2, 3),
        "index": 4, "band": "Moderate", "dominant": "no2", "means": None,
    }


def test_a_window_needs_every_pollutant_for_every_hour_and_the_activity_is_one_to_three_hours():
    gapped = forecasts({"no2": [20, 20, None, 20, 20], "o3": [50, 50, 50, 50, 50]})
    assert [w.start for w in windows(gapped, 2)] == [START, START + timedelta(hours=3)]
    assert best_time(forecasts({"no2": [20, None, 20], "o3": [50, 50, 50]}), 3) is None
    with pytest.raises(ValueError, match="an activity of 4 hours: give 1, 2 or 3"):
        windows(gapped, 4)
