"""The UK Daily Air Quality Index (DAQI) for PM2.5, PM10, NO2 and O3: index 1-10 and its band.

Source: Defra UK-AIR, "Daily Air Quality Index" (https://uk-air.defra.gov.uk/air-pollution/daqi,
"Boundaries between index points for each pollutant"), which implements the index recommended
by COMEAP, "Review of the UK Air Quality Index" (Committee on the Medical Effects of Air
Pollutants, 2011). Bands: 1-3 Low, 4-6 Moderate, 7-9 High, 10 Very High.

The DAQI defines each pollutant's index on its own averaging period:
- PM2.5 and PM10: the 24-hour mean (UK-AIR uses the running 24-hour mean for the latest data);
- NO2: the hourly mean;
- O3: the running 8-hour mean.

RouteAQ forecasts hourly means. An hourly forecast is placed in a band by comparing the hourly
value itself with the pollutant's boundaries: exact for NO2, and an *indicative* band for PM2.5,
PM10 and O3, whose index is defined on a longer mean (a single hour can sit above or below it).
``indicative`` says which. The published boundaries are whole µg/m³ (0-67, 68-134, ...), so a
value is rounded to the nearest whole µg/m³ (halves up) before it is placed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Upper boundary (µg/m³, inclusive) of indices 1-9; anything above the ninth is index 10.
UPPER_BOUNDS: dict[str, tuple[int, ...]] = {
    "pm25": (11, 23, 35, 41, 47, 53, 58, 64, 70),
    "pm10": (16, 33, 50, 58, 66, 75, 83, 91, 100),
    "no2": (67, 134, 200, 267, 334, 400, 467, 534, 600),
    "o3": (33, 66, 100, 120, 140, 160, 187, 213, 240),
}
AVERAGING: dict[str, str] = {"pm25": "24-hour mean", "pm10": "24-hour mean", "no2": "hourly mean", "o3": "running 8-hour mean"}
BANDS = ("Low", "Low", "Low", "Moderate", "Moderate", "Moderate", "High", "High", "High", "Very High")


@dataclass(frozen=True)
class Daqi:
    index: int  # 1-10
    band: str  # Low, Moderate, High, Very High
    indicative: bool  # True where the DAQI is defined on a longer mean than the hour placed

    def as_dict(self) -> dict:
        return {"index": self.index, "band": self.band, "indicative": self.indicative}


def daqi(pollutant: str, hourly_value: float | None) -> Daqi | None:
    """The DAQI index and band of an hourly concentration (µg/m³); None for a missing value."""
    if pollutant not in UPPER_BOUNDS:
        raise ValueError(f"no DAQI boundaries for pollutant {pollutant!r}; known: {sorted(UPPER_BOUNDS)}")
    if hourly_value is None or math.isnan(hourly_value):
        return None
    if hourly_value < 0:
        raise ValueError(f"{pollutant} concentration {hourly_value} is negative: not a concentration")
    whole = math.floor(hourly_value + 0.5)
    index = 1 + sum(whole > upper for upper in UPPER_BOUNDS[pollutant])
    return Daqi(index=index, band=BANDS[index - 1], indicative=AVERAGING[pollutant] != "hourly mean")


DEFRA_DAQI_PAGE = "https://uk-air.defra.gov.uk/air-pollution/daqi"
# What each band means for people, in RouteAQ's words after Defra's health advice for the DAQI
# (DEFRA_DAQI_PAGE): "at_risk" is for adults and children with lung or heart conditions, and older
# people; "everyone" for the rest.
ADVICE: dict[str, dict[str, str]] = {
    "Low": {
        "at_risk": "Go out as you usually would.",
        "everyone": "Go out as you usually would.",
    },
    "Moderate": {
        "at_risk": "If you notice symptoms, think about doing less strenuous exercise outdoors.",
        "everyone": "Go out as you usually would.",
    },
    "High": {
        "at_risk": "Do less strenuous exercise outdoors, above all if you notice symptoms; with asthma you may need your reliever inhaler more often.",
        "everyone": "If your eyes are sore or you have a cough or sore throat, think about doing less outdoors.",
    },
    "Very High": {
        "at_risk": "Avoid strenuous exercise, outdoors above all; with asthma you may need your reliever inhaler more often.",
        "everyone": "Do less strenuous exercise outdoors, above all if you have a cough, sore throat or sore eyes.",
    },
}


def band_starts(pollutant: str) -> dict[str, float]:
    """The hourly value from which Moderate, High and Very High begin: values are rounded to whole
    µg/m³ before they are placed, so index 4 begins half a unit above index 3's upper bound."""
    bounds = UPPER_BOUNDS[pollutant]
    return {"Moderate": bounds[2] + 0.5, "High": bounds[5] + 0.5, "Very High": bounds[8] + 0.5}
