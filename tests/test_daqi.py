"""DAQI bands at their published edges (Defra UK-AIR, COMEAP 2011)."""

import math

import pytest

from routeaq_assets.core.daqi import UPPER_BOUNDS, daqi


@pytest.mark.parametrize(
    "pollutant, value, index, band",
    [
        ("no2", 0.0, 1, "Low"),
        ("no2", 67.0, 1, "Low"),
        ("no2", 67.49, 1, "Low"),  # rounds to 67: still index 1
        ("no2", 67.5, 2, "Low"),  # rounds to 68: the first value of index 2
        ("no2", 200.0, 3, "Low"),
        ("no2", 201.0, 4, "Moderate"),
        ("no2", 400.0, 6, "Moderate"),
        ("no2", 401.0, 7, "High"),
        ("no2", 600.0, 9, "High"),
        ("no2", 601.0, 10, "Very High"),
        ("pm25", 11.0, 1, "Low"),
        ("pm25", 12.0, 2, "Low"),
        ("pm25", 35.0, 3, "Low"),
        ("pm25", 36.0, 4, "Moderate"),
        ("pm25", 53.0, 6, "Moderate"),
        ("pm25", 54.0, 7, "High"),
        ("pm25", 70.0, 9, "High"),
        ("pm25", 71.0, 10, "Very High"),
        ("pm10", 16.0, 1, "Low"),  # Defra's PM10 bands: 0-16, 17-33, 34-50, 51-58, ... 92-100, 101 or more
        ("pm10", 17.0, 2, "Low"),
        ("pm10", 50.0, 3, "Low"),
        ("pm10", 51.0, 4, "Moderate"),
        ("pm10", 75.0, 6, "Moderate"),
        ("pm10", 76.0, 7, "High"),
        ("pm10", 100.0, 9, "High"),
        ("pm10", 101.0, 10, "Very High"),
        ("o3", 33.0, 1, "Low"),
        ("o3", 34.0, 2, "Low"),
        ("o3", 100.0, 3, "Low"),
        ("o3", 101.0, 4, "Moderate"),
        ("o3", 160.0, 6, "Moderate"),
        ("o3", 161.0, 7, "High"),
        ("o3", 240.0, 9, "High"),
        ("o3", 241.0, 10, "Very High"),
        ("o3", 1000.0, 10, "Very High"),
    ],
)
def test_band_edges(pollutant, value, index, band):
    result = daqi(pollutant, value)
    assert (result.index, result.band) == (index, band)


def test_every_index_is_reached_once_per_pollutant():
    for pollutant, bounds in UPPER_BOUNDS.items():
        assert [daqi(pollutant, float(b)).index for b in bounds] == list(range(1, 10))
        assert [daqi(pollutant, float(b + 1)).index for b in bounds] == list(range(2, 11))


def test_only_no2_is_exact_for_an_hourly_value():
    assert daqi("no2", 10.0).indicative is False
    assert daqi("pm25", 10.0).indicative is True and daqi("o3", 10.0).indicative is True


def test_missing_is_missing_and_bad_input_is_named():
    assert daqi("pm25", None) is None and daqi("pm25", math.nan) is None
    with pytest.raises(ValueError, match="so2"):
        daqi("so2", 5.0)
    with pytest.raises(ValueError, match="negative"):
        daqi("no2", -1.0)
