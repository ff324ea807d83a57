"""The forecast page: its JSON endpoints over the real serving state, and the page itself in
headless Chromium against a real ``bentoml serve`` (numbers equal the API's; states in words).

The served data is the trained home's online panel with two changes, so every state shows:
MAN3's NO2 feed stops 31 hours before the newest observation, and BEX (London Bexley, which has
no ozone instrument in the AURN metadata) reports CLL2's hours without ozone. The data ends in
2025, so it is stale whenever the tests run."""

from __future__ import annotations

import gzip
import json

from decimal import ROUND_HALF_UP, Decimal

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import requests

from browser import chromium_page
from conftest import REPO
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
    assert (bex_o3["measured"], bex_o3["forecasts"]) == (False, []) and "BEX does not measure o3" in bex_o3["problem"]
    assert cells[("BEX", "no2")]["forecasts"], "a site's other pollutants still forecast"
    man3_no2 = cells[("MAN3", "no2")]
    assert man3_no2["feed_stopped"] and man3_no2["forecasts"] == [] and "feed stopped" in man3_no2["problem"]
    assert man3_no2["newest_observation"] == (origin - timedelta(hours=STOPPED_HOURS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not cells[("MAN3", "pm25")]["feed_stopped"]
    # each site's daily index for today and tomorrow, with the odds of Moderate and of High
    for site in body["sites"]:
        assert [d["day"] for d in site["daily"]] == [(origin + timedelta(hours=1)).date().isoformat(), (origin + timedelta(hours=25)).date().isoformat()]
        for day in site["daily"]:
            assert 0.0 <= day["p_high_or_above"] <= day["p_moderate_or_above"] <= 1.0
            assert day["index"] == max(p["index"] for p in day["pollutants"] if p["index"] is not None)
    # the next hours, from the hour after the newest observation to 48 h, answered as /predict answers
    my1 = cells[("MY1", "no2")]["forecasts"]
    assert [f["hours_ahead"] for f in my1] == [1, 6, 12, 24, 48]
    for f in my1:
        hour = datetime.fromisoformat(f["time"].replace("Z", "+00:00"))
        (answer,) = serving.forecast([ForecastItem("MY1", hour, "no2")])
        assert (f["pred"], f["lower"], f["upper"]) == (answer["pred"], answer["lower"], answer["upper"])
        assert f["daqi"]["band"] == "Low" and f["daqi"]["indicative"] is False


def test_site_detail_shows_served_forecasts_and_scores_against_persistence(serving):
    state = serving.current()
    served_hour = state.origin - timedelta(hours=5)
    (answer,) = serving.forecast([ForecastItem("MY1", served_hour, "no2")])
    PredictionLog(serving.settings.prediction_log_dir).append([{**answer, "pred": answer["pred"] + 1.0}])
    detail = page_data.site_detail(serving, "my1", datetime.now(UTC))
    no2 = next(p for p in detail["pollutants"] if p["pollutant"] == "no2")
    history = {h["time"]: h for h in no2["history"]}
    assert len(history) == 24 * page_data.HISTORY_DAYS and no2["history"][-1]["time"] == detail["forecast_origin"]
    served = history[served_hour.strftime("%Y-%m-%dT%H:%M:%SZ")]["forecast"]
    assert (served["source"], served["pred"]) == ("served", answer["pred"] + 1.0)
    as_of_hour = state.origin - timedelta(hours=30)
    as_of = history[as_of_hour.strftime("%Y-%m-%dT%H:%M:%SZ")]["forecast"]
    assert as_of["source"] == "as_of" and as_of["pred"] == serving.forecast([ForecastItem("MY1", as_of_hour, "no2")])[0]["pred"]
    # skill: the forecasts shown against persistence, over hours the champion did not train on
    obs = {r["time"]: r["no2"] for r in state.observations.filter(pl.col("site_id") == "MY1").iter_rows(named=True) if r["no2"] is not None}
    trained_before = datetime.fromisoformat(no2["skill"]["model_trained_before"].replace("Z", "+00:00"))
    pairs = [
        (obs[t], h["forecast"]["pred"], obs[t - timedelta(hours=1)])
        for h in no2["history"]
        if h["forecast"] and (t := datetime.fromisoformat(h["time"].replace("Z", "+00:00"))) in obs
        and t - timedelta(hours=1) in obs and (h["forecast"]["source"] == "served" or t >= trained_before)
    ]
    assert no2["skill"]["hours"] == len(pairs) > 100
    assert no2["skill"]["mae_persistence"] == round(sum(abs(o - p) for o, _, p in pairs) / len(pairs), 3)
    assert no2["skill"]["mae_forecast"] == round(sum(abs(o - f) for o, f, _ in pairs) / len(pairs), 3)


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _shown_forecasts(page, view: str) -> dict[tuple[str, str, str], dict]:
    items = page.locator(f"{view} li.forecast")
    shown = {}
    for i in range(items.count()):
        item = items.nth(i)
        key = (item.get_attribute("data-site"), item.get_attribute("data-pollutant"), item.get_attribute("data-time"))
        shown[key] = {
            "text": item.locator(".value").inner_text(),
            "value": float(item.locator(".value").get_attribute("data-value")),
            "range": item.locator(".range").inner_text(),
            "band": item.locator(".band").inner_text(),
        }
    return shown


def _fixed(value: float) -> str:
    """``value.toFixed(1)`` as the page's JavaScript writes it: the exact binary value, halves up
    (Python's ``f"{5.25:.1f}"`` gives 5.2, JavaScript 5.3)."""
    return str(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _expect_equal(shown: dict, forecasts: dict) -> None:
    assert shown.keys() == forecasts.keys()
    for key, f in forecasts.items():
        s = shown[key]
        assert (s["text"], s["value"]) == (_fixed(f["pred"]), f["pred"]), key
        assert s["range"].startswith(f"likely {_fixed(f['lower'])} to {_fixed(f['upper'])}"), key
        assert s["band"].startswith(f"DAQI {f['daqi']['index']} {f['daqi']['band']}"), key


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
    means = {h: (share[h] + share[h + timedelta(hours=1)]) / 2 for h in share if h + timedelta(hours=1) in share}
    best, worst = min(means, key=lambda h: (means[h], h)), min(means, key=lambda h: (-means[h], h))
    assert result["best"]["start"] == f"{best:%Y-%m-%dT%H:%M:%SZ}" and result["best"]["exposure"] == round(means[best], 3)
    assert result["worst"]["start"] == f"{worst:%Y-%m-%dT%H:%M:%SZ}"
    assert result["now"]["start"] == result["first_hour"] and len(answers) == len(share) * len(result["pollutants"])


@pytest.mark.e2e
def test_the_page_shows_the_api_numbers_and_the_states_in_words(trained_home, served_env, tmp_path):
    with bentoml_serve(trained_home, log=tmp_path / "serve.log", env=served_env) as url:
        sites = requests.get(f"{url}/api/sites", timeout=30).json()
        schema = requests.get(f"{url}/openapi.json", timeout=30).json()
        assert {"/api/sites", "/api/sites/{site_id}"} <= set(schema["paths"]) and "SitesResponse" in schema["components"]["schemas"]
        daily = requests.post(f"{url}/predict/daily", json={"site_id": "my1"}, timeout=30)
        assert daily.status_code == 200, daily.text
        assert [d["day"] for d in daily.json()["days"]] == [d["day"] for d in next(s for s in sites["sites"] if s["site_id"] == "MY1")["daily"]]
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
        with chromium_page() as page:
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            expected = {(s["site_id"], p["pollutant"], f["time"]): f for s in sites["sites"] for p in s["pollutants"] for f in p["forecasts"]}
            assert len(expected) >= 10
            _expect_equal(_shown_forecasts(page, "#grid"), expected)
            status = page.locator("#status").inner_text()
            assert "The data is stale." in status and "days old" in status
            assert page.locator('tr[data-site="BEX"] td[data-pollutant="o3"]').inner_text() == "O₃ is not measured at this site."
            assert page.locator('tr[data-site="MAN3"] td[data-pollutant="no2"]').inner_text().startswith("Feed stopped: no NO₂ observation since")
            _shot(page, "page-grid")

            # the site view, reached from the keyboard
            page.focus('a[href="#site=MY1"]')
            page.keyboard.press("Enter")
            page.wait_for_selector('body[data-ready=true][data-route="#site=MY1"]')
            detail = requests.get(f"{url}/api/sites/MY1", timeout=30).json()
            assert page.locator("#site-title").inner_text() == "London Marylebone Road (MY1)"
            assert "Newest observation Fri, 1 Aug 2025, 12:00 BST" in page.locator("#site .meta").inner_text()  # another year: said
            assert page.evaluate("document.activeElement.id") == "site-title"
            assert page.locator(".pollutant-panel .uplot canvas").count() == 4
            upcoming = {("MY1", p["pollutant"], f["time"]): f for p in detail["pollutants"] for f in p["forecasts"]}
            _expect_equal(_shown_forecasts(page, "#site"), upcoming)
            for p in detail["pollutants"]:
                skill = page.locator(f'.pollutant-panel[data-pollutant="{p["pollutant"]}"] .skill')
                assert int(skill.get_attribute("data-skill-hours")) == p["skill"]["hours"] > 100
                assert skill.locator(".mae-forecast").inner_text() == f"{p['skill']['mae_forecast']:.1f}"
                assert skill.locator(".mae-persistence").inner_text() == f"{p['skill']['mae_persistence']:.1f}"
                assert skill.locator(".skill-value").inner_text() == f"{p['skill']['skill']:.2f}"
            path = _shot(page, "page-site-MY1")
            assert path.stat().st_size > 50_000

            # the cleanest hours: what the page says is the API's window, for the activity chosen
            for hours, within in ((2, "24"), (3, "48")):
                box = page.locator(".best-time")
                if (hours, within) != (2, "24"):
                    box.evaluate("b => b.dataset.ready = 'false'")
                    page.select_option(".best-time select[name=within]", within)
                    page.select_option(".best-time select[name=hours]", str(hours))
                page.wait_for_selector(".best-time[data-ready=true] .best")
                answer = requests.get(f"{url}/api/best-time", params={"site_id": "MY1", "hours": hours, "within": within}, timeout=30).json()
                shown = box.locator(".best")
                assert (shown.get_attribute("data-start"), shown.get_attribute("data-band")) == (answer["best"]["start"], answer["best"]["band"])
                assert box.locator(".worst").get_attribute("data-start") == answer["worst"]["start"]
                assert f"Cleanest {hours} h in the next {within} h:" in shown.inner_text() and "NO₂ about" in shown.inner_text()
            box.scroll_into_view_if_needed()
            _shot(page, "page-best-time-MY1")
        with chromium_page(viewport={"width": 390, "height": 844}) as phone:
            phone.goto(url)
            phone.wait_for_selector("body[data-ready=true]")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390, "the grid fits a phone's width"
            _shot(phone, "page-phone")


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
