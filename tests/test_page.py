"""The forecast page: its JSON endpoints over the real serving state, and the page itself in
headless Chromium against a real ``bentoml serve`` (numbers equal the API's; states in words).

The served data is the trained home's online panel with two changes, so every state shows:
MAN3's NO2 feed stops 31 hours before the newest observation, and BEX (London Bexley, which has
no ozone instrument in the AURN metadata) reports CLL2's hours without ozone. The data ends in
2025, so it is stale whenever the tests run."""

from __future__ import annotations

import gzip
import json
import math

from decimal import ROUND_HALF_UP, Decimal

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import requests

from browser import chromium_page
from conftest import REPO, copy_home
from routeaq_assets.core.daqi import daqi
from routeaq_assets.core.environment import load_settings
from routeaq_serving import page_data
from routeaq_serving.forecasts import ForecastItem, Forecasts
from routeaq_serving.prediction_log import PredictionLog
from service_process import bentoml_serve

UTC = timezone.utc
ARTIFACTS = REPO / ".routeaq" / "test-artifacts"
STOPPED_HOURS = 31


@pytest.fixture(scope="module")
def served_env(trained_home, tmp_path_factory) -> dict[str, str]:
    """Environment of a service over the trained models and the changed online panel."""
    folder = tmp_path_factory.mktemp("page")
    panel = pl.read_parquet(trained_home / "online" / "features.parquet")
    origin = panel.filter(pl.col("no2").is_not_null())["time"].max()
    stopped = (pl.col("site_id") == "MAN3") & (pl.col("time") > origin - timedelta(hours=STOPPED_HOURS))
    panel = panel.with_columns(pl.when(stopped).then(None).otherwise(pl.col("no2")).alias("no2"))
    bexley = panel.filter(pl.col("site_id") == "CLL2").with_columns(site_id=pl.lit("BEX"), o3=pl.lit(None, dtype=pl.Float64))
    store = folder / "online.parquet"
    pl.concat([panel, bexley]).write_parquet(store)
    return {
        "ROUTEAQ_ONLINE_STORE": str(store),
        "MLFLOW_TRACKING_URI": f"sqlite:///{trained_home / 'mlflow' / 'mlflow.db'}",
        "ROUTEAQ_REFRESH_SECONDS": "3600",
    }


@pytest.fixture
def serving(trained_home, served_env, tmp_path, monkeypatch) -> Forecasts:
    monkeypatch.setenv("ROUTEAQ_HOME", str(tmp_path / "routeaq"))  # its own prediction log
    for key, value in served_env.items():
        monkeypatch.setenv(key, value)
    service = Forecasts(load_settings())
    assert service.refresh(), service._reason
    return service


def _by_key(sites: dict) -> dict[tuple[str, str], dict]:
    return {(s["site_id"], p["pollutant"]): p for s in sites["sites"] for p in s["pollutants"]}


def test_overview_names_every_state_and_answers_like_predict(serving):
    now = datetime.now(UTC)
    body = page_data.overview(serving, now)
    cells = _by_key(body)
    origin = serving.current().origin
    assert body["model_loaded"] and body["stale"] and body["forecast_origin"] == origin.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["age_hours"] == round((now - origin) / timedelta(hours=1), 1)
    bex_o3 = cells[("BEX", "o3")]
    assert (bex_o3["measured"], bex_o3["next_hour"], bex_o3["worst"]) == (False, None, None) and "BEX does not measure o3" in bex_o3["problem"]
    assert cells[("BEX", "no2")]["next_hour"], "a site's other pollutants still forecast"
    man3_no2 = cells[("MAN3", "no2")]
    assert man3_no2["feed_stopped"] and man3_no2["next_hour"] is None and "feed stopped" in man3_no2["problem"]
    assert man3_no2["newest_observation"] == (origin - timedelta(hours=STOPPED_HOURS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not cells[("MAN3", "pm25")]["feed_stopped"]
    # each site's daily index for today and tomorrow, with the odds of Moderate and of High, as POST /predict/daily gives them
    from routeaq_serving.daily import daily_outlook

    for site in body["sites"]:
        assert (site["today"]["day"], site["tomorrow"]["day"]) == ((origin + timedelta(hours=1)).date().isoformat(), (origin + timedelta(hours=25)).date().isoformat())
        full = [d.as_dict() for d in daily_outlook(serving, serving.current(), site["site_id"])[0]]
        for shown, day in zip((site["today"], site["tomorrow"]), full):
            assert shown == {k: day[k] for k in shown} and 0.0 <= shown["p_high_or_above"] <= shown["p_moderate_or_above"] <= 1.0
    # the next hour and the worst of the next 48 hours, answered as /predict answers (to 0.1 µg/m³)
    my1 = cells[("MY1", "no2")]
    hours = [origin + timedelta(hours=k) for k in range(1, 49)]
    answers = serving.forecast([ForecastItem("MY1", hour, "no2") for hour in hours])
    assert my1["next_hour"]["time"] == answers[0]["timestamp"] and my1["next_hour"]["pred"] == round(answers[0]["pred"], 1)
    worst = max(answers, key=lambda a: (round(a["pred"], 1), -a["hours_ahead"]))
    assert (my1["worst"]["time"], my1["worst"]["pred"], my1["worst"]["upper"]) == (worst["timestamp"], round(worst["pred"], 1), round(worst["upper"], 1))
    assert my1["worst"]["hours_ahead"] == worst["hours_ahead"] and my1["worst"]["index"] == daqi("no2", worst["pred"]).index
    # what the answer carries once, not per row
    assert set(body["bands"]) == {"Low", "Moderate", "High", "Very High"} and body["models"]["no2"] and body["interval"] == 0.8
    facts = next(s for s in body["sites"] if s["site_id"] == "MY1")
    assert (facts["site_type"], round(facts["latitude"], 2), round(facts["longitude"], 2)) == ("Urban Traffic", 51.52, -0.15)


def test_site_detail_shows_served_forecasts_and_scores_against_persistence(serving):
    state = serving.current()
    served_hour = state.origin - timedelta(hours=5)
    (answer,) = serving.forecast([ForecastItem("MY1", served_hour, "no2")])
    PredictionLog(serving.settings.prediction_log_dir).append([{**answer, "pred": answer["pred"] + 1.0}])
    detail = page_data.site_detail(serving, "my1", datetime.now(UTC))
    no2 = next(p for p in detail["pollutants"] if p["pollutant"] == "no2")
    times = detail["times"]
    assert len(times) == 24 * page_data.HISTORY_DAYS and times[-1] == detail["forecast_origin"]
    assert all(len(column) == len(times) for column in no2["history"].values())
    at = {t: k for k, t in enumerate(times)}
    k = at[served_hour.strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert (no2["history"]["source"][k], no2["history"]["pred"][k]) == ("served", round(answer["pred"] + 1.0, 1))
    as_of_hour = state.origin - timedelta(hours=30)
    k = at[as_of_hour.strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert no2["history"]["source"][k] == "as_of" and no2["history"]["pred"][k] == round(serving.forecast([ForecastItem("MY1", as_of_hour, "no2")])[0]["pred"], 1)
    # the next 48 hours, as /predict answers them
    assert detail["next_times"][0] == (state.origin + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ") and len(detail["next_times"]) == 48
    ahead = serving.forecast([ForecastItem("MY1", datetime.fromisoformat(t.replace("Z", "+00:00")), "no2") for t in detail["next_times"]])
    assert no2["next"]["pred"] == [round(a["pred"], 1) for a in ahead] and no2["next"]["upper"] == [round(a["upper"], 1) for a in ahead]
    assert no2["band_from"] == {"Moderate": 200.5, "High": 400.5, "Very High": 600.5}
    # skill: the forecasts shown against persistence, over hours the champion did not train on
    obs = {r["time"]: r["no2"] for r in state.observations.filter(pl.col("site_id") == "MY1").iter_rows(named=True) if r["no2"] is not None}
    trained_before = datetime.fromisoformat(no2["skill"]["model_trained_before"].replace("Z", "+00:00"))
    made = {h: answer["pred"] + 1.0 if h == served_hour else serving.forecast([ForecastItem("MY1", h, "no2")])[0]["pred"]
            for t, source in zip(times, no2["history"]["source"])
            if source and ((h := datetime.fromisoformat(t.replace("Z", "+00:00"))) >= trained_before or source == "served")}
    pairs = [(obs[t], f, obs[t - timedelta(hours=1)]) for t, f in made.items() if t in obs and t - timedelta(hours=1) in obs]
    assert no2["skill"]["hours"] == len(pairs) > 100
    assert no2["skill"]["mae_persistence"] == round(sum(abs(o - p) for o, _, p in pairs) / len(pairs), 3)
    assert no2["skill"]["mae_forecast"] == round(sum(abs(o - f) for o, f, _ in pairs) / len(pairs), 3)


def test_places_and_the_nearest_sites():
    """Typed names find UK places from the packaged gazetteer; the nearest sites are ranked by
    great-circle distance."""
    from routeaq_assets.core.places import distance_km, find_places, nearest, uk_places

    assert [p.name for p in find_places("leeds")][:1] == ["Leeds"] and find_places("stoke-on-trent")[0].name == "Stoke-on-Trent"
    assert all(49.8 <= p.latitude <= 60.95 for p in uk_places()) and "Akrotiri" not in {p.name for p in uk_places()}
    assert find_places("zzqx") == [] and find_places(" ") == []
    assert round(distance_km(51.5074, -0.1278, 48.8566, 2.3522)) == 344  # London to Paris
    sites = [{"site_id": "MY1", "latitude": 51.5225, "longitude": -0.1546}, {"site_id": "MAN3", "latitude": 53.4815, "longitude": -2.2379},
             {"site_id": "X", "latitude": None, "longitude": None}]
    leeds = find_places("Leeds")[0]
    assert [s["site_id"] for s in nearest(leeds.latitude, leeds.longitude, sites, 5)] == ["MAN3", "MY1"]
    assert nearest(leeds.latitude, leeds.longitude, sites, 1)[0]["distance_km"] == round(distance_km(leeds.latitude, leeds.longitude, 53.4815, -2.2379), 1)


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _whole(value: float) -> str:
    """``Math.round(value)`` as the page's JavaScript writes a concentration (halves up)."""
    return str(math.floor(value + 0.5))


def _best_and_worst(share: dict[datetime, float], hours: int) -> tuple[datetime, datetime, dict[datetime, float]]:
    """The earliest window of ``hours`` with the lowest and with the highest mean share."""
    means = {h: sum(share[h + timedelta(hours=k)] for k in range(hours)) / hours for h in share if all(h + timedelta(hours=k) in share for k in range(hours))}
    return min(means, key=lambda h: (means[h], h)), min(means, key=lambda h: (-means[h], h)), means


def test_the_best_time_is_the_true_minimum_of_the_served_forecasts(serving):
    """The cleanest 2 hours in the next 48 at MY1: every pollutant's hour forecast one by one as
    POST /predict answers it, each hour's worst share of the Moderate boundary, the mean over each
    window; the answer's window is the minimum (and the worst the maximum) of those."""
    from routeaq_assets.core.best_time import LOW_TOP
    from routeaq_serving.best_time import best_time_at

    state = serving.current()
    result, answers = best_time_at(serving, state, "MY1", 2, 48)
    start = datetime.fromisoformat(result["first_hour"].replace("Z", "+00:00"))
    assert start == max(t for (site, p), t in state.origins.items() if site == "MY1") + timedelta(hours=1)
    share: dict[datetime, float] = {}
    for k in range(48):
        hour = start + timedelta(hours=k)
        if any(hour > state.origins[("MY1", p)] + timedelta(hours=state.models[p].forecaster.max_hours_ahead) for p in result["pollutants"]):
            continue
        served = serving.forecast([ForecastItem("MY1", hour, p) for p in result["pollutants"]])
        share[hour] = max(a["pred"] / LOW_TOP[a["pollutant"]] for a in served)
    best, worst, means = _best_and_worst(share, 2)
    assert result["best"]["start"] == f"{best:%Y-%m-%dT%H:%M:%SZ}" and result["best"]["exposure"] == round(means[best], 3)
    assert result["worst"]["start"] == f"{worst:%Y-%m-%dT%H:%M:%SZ}"
    assert result["now"]["start"] == result["first_hour"] and len(answers) == len(share) * len(result["pollutants"])


@pytest.mark.e2e
def test_the_page_shows_the_api_numbers_and_the_states_in_words(trained_home, served_env, tmp_path):
    with bentoml_serve(copy_home(trained_home, tmp_path), log=tmp_path / "serve.log", env=served_env) as url:  # it logs predictions
        sites = requests.get(f"{url}/api/sites", timeout=30).json()
        schema = requests.get(f"{url}/openapi.json", timeout=30).json()
        assert {"/api/sites", "/api/sites/{site_id}"} <= set(schema["paths"]) and "SitesResponse" in schema["components"]["schemas"]
        daily = requests.post(f"{url}/predict/daily", json={"site_id": "my1"}, timeout=30)
        assert daily.status_code == 200, daily.text
        my1 = next(s for s in sites["sites"] if s["site_id"] == "MY1")
        for day, shown in zip(daily.json()["days"], (my1["today"], my1["tomorrow"])):
            assert shown == {k: day[k] for k in shown}, "the page's day is POST /predict/daily's"
        for route in ("/api/sites", "/api/sites/MY1"):  # compressed for a client that accepts it, whole for one that does not
            packed = requests.get(f"{url}{route}", headers={"Accept-Encoding": "gzip"}, timeout=30, stream=True)
            raw = packed.raw.read(decode_content=False)
            plain = requests.get(f"{url}{route}", headers={"Accept-Encoding": "identity"}, timeout=30)
            assert packed.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
            unpacked, whole = json.loads(gzip.decompress(raw)), plain.json()
            for answer in (unpacked, whole):
                answer.pop("generated_at", None)  # the two answers may be a second apart
            assert len(raw) < len(plain.content) / 4 and unpacked == whole
        best = requests.get(f"{url}/api/best-time", params={"site_id": "my1", "hours": 2, "within": 24}, timeout=30)
        assert best.status_code == 200 and best.json()["best"]["exposure"] <= best.json()["now"]["exposure"], best.text
        assert "best-time" in "".join(schema["paths"]) and best.headers.get("content-type", "").startswith("application/json")
        for params, field in (({"site_id": "MY1", "hours": 4}, "hours"), ({"site_id": "MY1", "within": 12}, "within"), ({"site_id": "ZZZ"}, "site_id")):
            refused = requests.get(f"{url}/api/best-time", params=params, timeout=30)
            assert refused.status_code in (404, 422) and field in refused.text, (params, refused.text)
        unknown = requests.post(f"{url}/predict/daily", json={"site_id": "ZZZ"}, timeout=30)
        assert unknown.status_code == 404 and "unknown site_id 'ZZZ'" in unknown.json()["error"]
        near = requests.get(f"{url}/api/nearest", params={"place": "Leeds", "limit": 5}, timeout=30).json()
        assert [x["site_id"] for x in near["sites"]][:1] == ["MAN3"] and near["place"] == "Leeds"
        for params, field in (({"place": "Qwzxv"}, "place"), ({"lat": 48.85, "lon": 2.35}, "lat"), ({"lat": 51.5}, "lon")):
            refused = requests.get(f"{url}/api/nearest", params=params, timeout=30)
            assert refused.status_code in (404, 422) and refused.json()["field"] == field, refused.text
        by_point = requests.get(f"{url}/api/best-time", params={"lat": near["latitude"], "lon": near["longitude"], "hours": 2}, timeout=30).json()
        assert (by_point["site_id"], by_point["distance_km"]) == ("MAN3", near["sites"][0]["distance_km"])
        for width in (1280, 390):
            with chromium_page(viewport={"width": width, "height": 900}) as page:
                _check_page(page, url, sites, near, width)


def _check_page(page, url: str, sites: dict, near: dict, width: int) -> None:
    """The overview, the map, a typed town and a site, at one width, against the API's answers."""
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "nothing scrolls sideways"
    status = page.locator("#status").inner_text()
    assert "The data is stale." in status and "days old" in status
    # the grid: tomorrow's highest index first; each day's index and odds, each pollutant's next hour, as the API gives them
    expected = sorted(sites["sites"], key=lambda x: (-(x["tomorrow"]["index"] or 0), -(x["today"]["index"] or 0), f"{x['site_name']} ({x['site_id']})" if x["site_name"] else x["site_id"]))
    rows = page.locator("#grid tbody tr")
    assert [rows.nth(i).get_attribute("data-site") for i in range(rows.count())] == [x["site_id"] for x in expected]
    for site in sites["sites"]:
        row = page.locator(f'#grid tr[data-site="{site["site_id"]}"]')
        for label in ("today", "tomorrow"):
            day, cell = site[label], row.locator(f"td.{label} .day")
            assert (int(cell.get_attribute("data-daqi-index")), float(cell.get_attribute("data-p-moderate")), float(cell.get_attribute("data-p-high"))) == (
                day["index"], day["p_moderate_or_above"], day["p_high_or_above"])
            assert f"{day['band']} {day['index']}" in cell.inner_text() and f"{_whole(day['p_moderate_or_above'] * 100)} %" in cell.inner_text()
            assert cell.locator(".odds").get_attribute("data-odds-from") == day["odds_from"] == "hourly_intervals"  # no day verified yet
            assert cell.locator(".odds").get_attribute("title") == "Odds from the ranges of the hourly forecasts"
        for p in site["pollutants"]:
            shown = row.locator(f'td[data-pollutant="{p["pollutant"]}"]')
            if p["next_hour"]:
                nxt = shown.locator(".next")
                assert (nxt.locator(".value").inner_text(), float(nxt.get_attribute("data-value"))) == (_whole(p["next_hour"]["pred"]), p["next_hour"]["pred"])
                assert shown.locator(".peak").get_attribute("data-time") == p["worst"]["time"] and f"Peak in 48 h {_whole(p['worst']['pred'])} " in shown.inner_text()
    assert page.locator('tr[data-site="BEX"] td[data-pollutant="o3"]').inner_text() == "O₃ is not measured at this site."
    assert page.locator('tr[data-site="MAN3"] td[data-pollutant="no2"]').inner_text().startswith("Feed stopped: no NO₂ observation since")
    assert page.locator("#advice tr[data-band]").count() == 4 and "uk-air.defra.gov.uk/air-pollution/daqi" in page.locator("#advice a").get_attribute("href")
    # the map: every site with coordinates, in tomorrow's band
    for site in sites["sites"]:
        dot = page.locator(f'#map .site-dot[data-site="{site["site_id"]}"]')
        assert dot.count() == 1 and dot.get_attribute("data-band") == site["tomorrow"]["band"], site["site_id"]
    _shot(page, f"page-grid-{width}")
    page.locator("#map").screenshot(path=str(ARTIFACTS / f"page-map-{width}.png"))
    # High and above only: the sites whose today or tomorrow reaches 7
    page.check("#only-high")
    high = [x["site_id"] for x in expected if max(x["today"]["index"] or 0, x["tomorrow"]["index"] or 0) >= 7]
    assert page.locator("#grid tbody tr").count() == len(high) and (high or page.locator('[data-state="none-high"]').count() == 1)
    page.uncheck("#only-high")
    # a typed town lists its nearest sites, nearest first, with the distance and the cleanest hours there
    page.fill("#place", "Leeds")
    page.locator("#place-form").evaluate("f => f.requestSubmit()")
    page.wait_for_selector("#near-answer[data-ready=true] ol.nearest")
    listed = page.locator("ol.nearest li")
    assert [listed.nth(i).get_attribute("data-site") for i in range(listed.count())] == [x["site_id"] for x in near["sites"]]
    assert f"{near['sites'][0]['distance_km']:.1f} km, Urban Background" in listed.first.inner_text()
    assert "Roadside and kerbside sites" in page.locator("#near-answer").inner_text()
    assert page.locator("#near-answer .near-best").get_attribute("data-site") == "MAN3"
    page.locator("#near").screenshot(path=str(ARTIFACTS / f"page-near-leeds-{width}.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= width

    # the site view, reached from the keyboard
    page.focus('#grid a[href="#site=MY1"]')
    page.keyboard.press("Enter")
    page.wait_for_selector('body[data-ready=true][data-route="#site=MY1"]')
    detail = requests.get(f"{url}/api/sites/MY1", timeout=30).json()
    assert page.locator("#site-title").inner_text() == "London Marylebone Road (MY1)"
    assert "Newest observation Fri, 1 Aug 2025, 12:00 BST" in page.locator("#site .meta").inner_text()  # another year: said
    assert page.evaluate("document.activeElement.id") == "site-title"
    days = page.locator(".site-days .day")
    assert [int(days.nth(i).get_attribute("data-daqi-index")) for i in range(2)] == [detail["today"]["index"], detail["tomorrow"]["index"]]
    assert page.locator(".site-days table.advice tr[data-band]").count() >= 1
    assert page.locator(".pollutant-panel .uplot canvas").count() == 4
    for p in detail["pollutants"]:
        panel = page.locator(f'.pollutant-panel[data-pollutant="{p["pollutant"]}"]')
        # the legend starts at now (the newest observation), values whole
        legend = panel.locator(".u-legend .u-series .u-value")
        assert legend.nth(0).inner_text() == "Fri, 1 Aug 2025, 12:00 BST"
        observed = p["history"]["observed"][-1]
        assert legend.nth(1).inner_text() == ("–" if observed is None else _whole(observed))
        # the table under the chart has the forecast hours too
        assert panel.locator("table.numbers tr.ahead").count() == sum(v is not None for v in p["next"]["pred"]) == 48
        skill = panel.locator(".skill")
        assert int(skill.get_attribute("data-skill-hours")) == p["skill"]["hours"] > 100
        assert skill.locator(".mae-forecast").inner_text() == f"{p['skill']['mae_forecast']:.1f}"
        assert skill.locator(".skill-value").inner_text() == f"{p['skill']['skill']:.2f}"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    _shot(page, f"page-site-MY1-{width}")
    # the alert form posts to /api/subscriptions and says what the service answered, naming the field
    page.fill(".alert-form input[name=address]", "not-an-address")
    page.locator(".alert-form").evaluate("f => f.requestSubmit()")
    page.wait_for_selector(".alert-answer[data-ready=true]")
    refused = page.locator(".alert-answer .notice")
    assert refused.get_attribute("data-field") == "email" and "Not subscribed." in refused.inner_text()

    # the cleanest hours: the page's window is the API's, and the true minimum of the served forecasts
    from routeaq_assets.core.best_time import LOW_TOP

    box = page.locator(".best-time")
    for hours, within in ((2, "24"), (3, "48")):
        if (hours, within) != (2, "24"):
            box.evaluate("b => b.dataset.ready = 'false'")
            page.select_option(".best-time select[name=within]", within)
            page.select_option(".best-time select[name=hours]", str(hours))
        page.wait_for_selector(".best-time[data-ready=true] .best")
        answer = requests.get(f"{url}/api/best-time", params={"site_id": "MY1", "hours": hours, "within": within}, timeout=30).json()
        first = datetime.fromisoformat(answer["first_hour"].replace("Z", "+00:00"))
        items = [{"site_id": "MY1", "timestamp": (first + timedelta(hours=k)).isoformat(), "pollutant": p} for k in range(int(within)) for p in answer["pollutants"]]
        served = requests.post(f"{url}/predict/batch", json={"items": items}, timeout=60).json()["predictions"]
        share: dict[datetime, float] = {}
        for a in served:
            hour = datetime.fromisoformat(a["timestamp"].replace("Z", "+00:00"))
            share[hour] = max(share.get(hour, 0.0), a["pred"] / LOW_TOP[a["pollutant"]])
        best, worst, _ = _best_and_worst(share, hours)
        shown = box.locator(".best")
        assert (shown.get_attribute("data-start"), shown.get_attribute("data-band")) == (answer["best"]["start"], answer["best"]["band"])
        assert shown.get_attribute("data-start") == f"{best:%Y-%m-%dT%H:%M:%SZ}" and box.locator(".worst").get_attribute("data-start") == f"{worst:%Y-%m-%dT%H:%M:%SZ}"
        assert f"Cleanest {hours} h in the next {within} h:" in shown.inner_text() and "NO₂ about" in shown.inner_text()
    box.screenshot(path=str(ARTIFACTS / f"page-best-time-MY1-{width}.png"))


@pytest.mark.e2e
def test_the_page_says_when_no_model_is_loaded(tmp_path):
    home = tmp_path / "routeaq"
    (home / "mlflow").mkdir(parents=True)
    with bentoml_serve(home, log=tmp_path / "serve.log", ready_status=503) as url:
        sites = requests.get(f"{url}/api/sites", timeout=30).json()
        assert (sites["model_loaded"], sites["sites"]) == (False, [])
        assert requests.get(f"{url}/api/sites/MY1", timeout=30).status_code == 503
        with chromium_page() as page:
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            status = page.locator("#status").inner_text()
            assert "No forecast model is loaded, so there are no forecasts to show." in status
            assert sites["reason"] in status and "no MLflow store at sqlite:" in sites["reason"]
            assert page.locator("li.forecast").count() == 0
            page.goto(f"{url}/#site=MY1")
            page.wait_for_selector("body[data-ready=true]")
            assert "No forecast model is loaded, so this site has no forecasts." in page.locator("#site").inner_text()
            _shot(page, "page-no-model")
