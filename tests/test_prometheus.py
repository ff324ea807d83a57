"""Watching RouteAQ with the real parts: Debian's Prometheus, Pushgateway and Alertmanager (installed
with apt-get when missing), a real ``bentoml serve``, and the monitoring stage's own runs.

- The rule files pass ``promtool check rules`` and their unit tests (``promtool test rules``);
  the configurations pass ``promtool check config`` and ``amtool check-config``.
- The Kubernetes PrometheusRule holds the rule file's groups; the dashboards' JSON is what their
  generator writes.
- End to end: the stages push to a Pushgateway, Prometheus scrapes it and the service with the
  deploy's scrape configuration and rule file; the network's newest observation moves hours into
  the past, the stale-data alert fires in Prometheus, reaches Alertmanager (deploy's routing) and
  arrives at a local webhook receiver; every dashboard panel's query returns data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml

from conftest import REPO, SITES_CONFIG, TRAIN_CONFIG, WINDOW_END, copy_home, home_env, make_definitions, partition_key
from debian import apt_install
from service_process import bentoml_serve, free_port, stop

from routeaq_assets.adapters.pushgateway import Pushgateway
from routeaq_assets.core.prometheus import METRICS, Figure, registry_of
from routeaq_assets.core.retraining import RetrainPolicy
from routeaq_assets.defs.monitoring.platform import platform_metrics
from routeaq_assets.defs.monitoring.sensors import build_retraining_sensor

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "routeaq.yml"
PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
PUSHGATEWAY, ALERTMANAGER, AMTOOL = "/usr/bin/prometheus-pushgateway", "/usr/bin/prometheus-alertmanager", "/usr/bin/amtool"


@pytest.fixture(scope="module")
def prometheus_tools() -> None:
    problem = apt_install(["prometheus", "prometheus-alertmanager", "prometheus-pushgateway"], [PROMETHEUS, PROMTOOL, PUSHGATEWAY, ALERTMANAGER, AMTOOL])
    if problem:
        pytest.skip(f"Prometheus test: {problem}")


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_rule_files_pass_promtool_and_their_unit_tests(prometheus_tools):
    assert "SUCCESS: 12 rules found" in _run(PROMTOOL, "check", "rules", str(RULES))
    assert "SUCCESS" in _run(PROMTOOL, "test", "rules", str(RULES.with_name("routeaq.test.yml")))


def test_rule_unit_tests_fail_when_a_threshold_moves(prometheus_tools, tmp_path):
    """The unit tests judge the thresholds: a stale-data bound of 3 h instead of 2 fails them."""
    for name in ("routeaq.yml", "routeaq.test.yml"):
        (tmp_path / name).write_text(RULES.with_name(name).read_text())
    rules = tmp_path / "routeaq.yml"
    rules.write_text(rules.read_text().replace("time() - max(routeaq_newest_observation_timestamp_seconds) > 2 * 3600", "time() - max(routeaq_newest_observation_timestamp_seconds) > 3 * 3600"))
    done = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "routeaq.test.yml")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "RouteAQDataStale" in done.stdout + done.stderr


def test_prometheus_and_alertmanager_configurations_are_valid(prometheus_tools):
    assert "SUCCESS" in _run(PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    said = _run(AMTOOL, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    assert "SUCCESS" in said and "3 receivers" in said


def _script(path: Path):
    """A generator script of deploy/, loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"routeaq_deploy_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_kubernetes_rule_manifest_holds_the_rule_files_groups():
    text = (DEPLOY / "k8s" / "monitoring.yaml").read_text()
    assert text == _script(DEPLOY / "k8s" / "monitoring.py").manifests(), "deploy/k8s/monitoring.yaml is stale: run deploy/k8s/monitoring.py"
    documents = list(yaml.safe_load_all(text))
    (rule,) = [d for d in documents if d["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    monitors = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ServiceMonitor"}
    service = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / "service.yaml").read_text()) if d["kind"] == "Service")
    assert monitors["routeaq-service"]["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitors["routeaq-service"]["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitors["routeaq-pushgateway"]["spec"]["endpoints"][0]["honorLabels"] is True


def _dashboards():
    return _script(DEPLOY / "grafana" / "dashboards.py")


def test_the_dashboards_are_what_their_generator_writes():
    rendered = _dashboards().rendered()
    folder = DEPLOY / "grafana" / "dashboards"
    assert {p.name for p in folder.glob("*.json")} == set(rendered)
    for name, text in rendered.items():
        assert (folder / name).read_text() == text, f"{name} differs from deploy/grafana/dashboards.py: run it and commit the JSON"
    titles = {json.loads(t)["title"] for t in rendered.values()}
    assert {"RouteAQ: overview", "RouteAQ: forecast quality by pollutant and horizon", "RouteAQ: the daily index, verified", "RouteAQ: drift",
            "RouteAQ: data freshness by site", "RouteAQ: training and promotion", "RouteAQ: serving"} == titles


def test_a_figure_must_be_declared_with_its_labels():
    with pytest.raises(ValueError, match="undeclared metric 'routeaq_made_up'"):
        registry_of([Figure("routeaq_made_up", 1.0)])
    with pytest.raises(ValueError, match=r"routeaq_drift_share takes labels \('pollutant',\)"):
        registry_of([Figure("routeaq_drift_share", 0.5, {"site": "MY1"})])
    text = "\n".join(f"{m.name} {m.type}" for m in registry_of([Figure("routeaq_retrain_requests", 2, {"pollutant": "no2", "rule": "drift"})]).collect())
    assert "routeaq_retrain_requests counter" in text


@contextmanager
def server(command: list[str], ready_url: str, log: Path, timeout: float = 60) -> Iterator[None]:
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                assert process.poll() is None, f"{command[0]} ended: {log.read_text()[-2000:]}"
                try:
                    if requests.get(ready_url, timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, f"{command[0]} not ready in {timeout:.0f} s: {log.read_text()[-2000:]}"
                time.sleep(0.2)
            yield
        finally:
            stop(process)


@contextmanager
def pushgateway(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    # Debian's build persists to /var/lib/prometheus by default: this one keeps its figures in memory.
    with server([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="], f"http://127.0.0.1:{port}/-/ready", tmp_path / "pushgateway.log"):
        yield f"http://127.0.0.1:{port}"


def _pushed(url: str) -> str:
    return requests.get(f"{url}/metrics", timeout=5).text


def test_a_push_replaces_its_group_and_an_unreachable_gateway_is_said_not_raised(prometheus_tools, tmp_path):
    with pushgateway(tmp_path) as url:
        gateway = Pushgateway(url)
        assert gateway.push("drift", [Figure("routeaq_drift_share", 0.4, {"pollutant": "no2"}), Figure("routeaq_drift_detected", 1, {"pollutant": "no2"})], pollutant="no2")[0]
        assert gateway.push("drift", [Figure("routeaq_drift_share", 0.1, {"pollutant": "o3"})], pollutant="o3")[0]
        assert gateway.push("drift", [Figure("routeaq_drift_share", 0.0, {"pollutant": "no2"})], pollutant="no2")[0]
        text = _pushed(url)
        assert 'routeaq_drift_share{instance="",job="routeaq",pollutant="no2",stage="drift"} 0' in text
        assert 'routeaq_drift_share{instance="",job="routeaq",pollutant="o3",stage="drift"} 0.1' in text  # another group: kept
        assert "routeaq_drift_detected{" not in text  # no2's second push no longer holds it
    closed = f"http://user:secret@127.0.0.1:{free_port()}/prefix/token"
    taken, said = Pushgateway(closed).push("ingest", [Figure("routeaq_ingest_rows", 3)])
    assert not taken and "not pushed to http://127.0.0.1:" in said and "secret" not in said and "token" not in said


# ---- end to end -----------------------------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    """The team's webhook: keeps every JSON body posted to it."""

    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


def _prometheus_config(tmp_path: Path, service: str, gateway: str, alertmanager: str) -> Path:
    """deploy/prometheus/prometheus.yml with this test's addresses and a 1 s scrape and evaluation."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    addresses = {"service:3000": service, "pushgateway:9091": gateway, "alertmanager:9093": alertmanager}
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    for block in [*config["scrape_configs"], *config["alerting"]["alertmanagers"]]:
        for static in block["static_configs"]:
            static["targets"] = [addresses.get(t, t) for t in static["targets"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _alertmanager_config(tmp_path: Path, receiver: str) -> Path:
    """deploy/alertmanager/alertmanager.yml with the webhook at this test's receiver."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    (webhook,) = [r for r in config["receivers"] if r["name"] == "routeaq-webhook"]
    webhook["webhook_configs"][0]["url"] = receiver
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _query(prometheus: str, expr: str) -> list:
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]["result"]


def _wait(what: str, found, timeout: float = 90):  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.5)
    return result


def _use_home(monkeypatch, home: Path, gateway: str) -> dg.Definitions:
    for key, value in {**home_env(home), "ROUTEAQ_PUSHGATEWAY_URL": gateway}.items():
        monkeypatch.setenv(key, value)
    return make_definitions(home)


def _range(start: datetime, end: datetime) -> dict[str, str]:
    """The tags of a single-run backfill of the hours [start, end)."""
    return {"dagster/asset_partition_range_start": partition_key(start), "dagster/asset_partition_range_end": partition_key(end - timedelta(hours=1))}


def _ingest(defs: dg.Definitions, instance: dg.DagsterInstance, start: datetime, end: datetime) -> None:
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance, tags=_range(start, end)).success


@pytest.mark.e2e
def test_stale_data_alerts_through_alertmanager_and_every_dashboard_query_has_data(prometheus_tools, trained_home, tmp_path, monkeypatch):
    Receiver.received = []
    webhook = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    with pushgateway(tmp_path) as gateway:
        # A network observed up to this hour: fresh.
        fresh = _use_home(monkeypatch, tmp_path / "fresh", gateway)
        instance = dg.DagsterInstance.ephemeral()
        assert dg.materialize([fresh.get_assets_def("site_registry")], resources=fresh.resources, run_config=SITES_CONFIG, instance=instance).success
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        _ingest(fresh, instance, now - timedelta(hours=3), now)
        assert "routeaq_newest_observation_timestamp_seconds{" in _pushed(gateway)

        am_port, prom_port = free_port(), free_port()
        alertmanager, prometheus = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
        home = copy_home(trained_home, tmp_path)
        with bentoml_serve(home, log=tmp_path / "serve.log") as service, server(
            [ALERTMANAGER, f"--config.file={_alertmanager_config(tmp_path, f'http://127.0.0.1:{webhook.server_port}/alerts')}",
             f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            f"{alertmanager}/-/ready", tmp_path / "alertmanager.log",
        ), server(
            [PROMETHEUS, f"--config.file={_prometheus_config(tmp_path, service.removeprefix('http://'), gateway.removeprefix('http://'), f'127.0.0.1:{am_port}')}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            f"{prometheus}/-/ready", tmp_path / "prometheus.log",
        ):
            _wait("both targets scraped", lambda: len(_query(prometheus, 'up{job=~"routeaq-service|pushgateway"} == 1')) == 2)
            _wait("the fresh figures", lambda: _query(prometheus, "routeaq_newest_observation_timestamp_seconds"))
            time.sleep(3)  # a few rule evaluations on the fresh figures
            assert not _query(prometheus, 'ALERTS{alertname="RouteAQDataStale"}')

            # The stages of the trained home run and push: the network's newest observation is
            # now the demo's last hour, long past; scores, drift, factors, a promotion decision,
            # a retrain request and Dagster's run and check figures come with it.
            defs = _use_home(monkeypatch, home, gateway)
            instance = dg.DagsterInstance.ephemeral()
            last = WINDOW_END - timedelta(hours=1)
            _ingest(defs, instance, last, WINDOW_END)
            # Monitoring over the last 36 hours: enough scored forecasts (>= 100) for interval factors.
            assert defs.resolve_job_def("monitoring_job").execute_in_process(instance=instance, tags=_range(WINDOW_END - timedelta(hours=36), WINDOW_END)).success
            # The last full UK day of the held-out hours verified (before the retrain below trains on it).
            assert dg.materialize([defs.get_assets_def("daqi_verification")], resources=defs.resources, instance=instance, partition_key="2025-07-31").success
            no2 = [defs.get_assets_def(f"no2_{a}") for a in ("candidate", "champion")]
            assert dg.materialize(no2, resources=defs.resources, instance=instance, run_config={"ops": {"no2_candidate": TRAIN_CONFIG["ops"]["no2_candidate"]}}).success
            sensor = build_retraining_sensor(RetrainPolicy(min_skill=1.0, min_scored_hours=1))  # asks: no skill reaches 1
            assert sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=defs.resources)).run_requests
            platform_metrics.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
            for body in ({"site_id": "CLL2", "timestamp": "2025-08-01T12:00:00Z"}, {"site_id": "MY1", "timestamp": "2025-08-01T18:00:00Z", "pollutant": "no2"}, {"site_id": "NOPE"}):
                requests.post(f"{service}/predict", json=body, timeout=30)

            firing = _wait("RouteAQDataStale firing in Prometheus", lambda: _query(prometheus, 'ALERTS{alertname="RouteAQDataStale", alertstate="firing"}'))
            assert firing[0]["metric"]["severity"] == "critical"
            managed = _wait("the alert in Alertmanager", lambda: [a for a in requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json() if a["labels"]["alertname"] == "RouteAQDataStale"])
            assert "No new observation at any site for" in managed[0]["annotations"]["summary"]
            posted = _wait("the alert at the webhook", lambda: [a for body in Receiver.received for a in body["alerts"] if a["labels"]["alertname"] == "RouteAQDataStale"], timeout=60)
            assert posted[0]["status"] == "firing" and Receiver.received[0]["receiver"] == "routeaq-webhook"
            assert not _query(prometheus, 'ALERTS{alertname="RouteAQIngestionStopped"}')  # ingestion itself succeeded

            time.sleep(3)  # two scrapes of the requests, for rate()
            empty = []
            for dashboard in _dashboards().DASHBOARDS:
                for panel in dashboard.panels:
                    expr = panel.expr.replace("$pollutant", ".*").replace("$hours_ahead", ".*").replace("$__rate_interval", "1m")
                    if not _query(prometheus, expr):
                        empty.append(f"{dashboard.title} / {panel.title}: {expr}")
            assert not empty, "panels without data:\n" + "\n".join(empty)
            declared = {name for name in METRICS}
            scraped = {r["metric"]["__name__"] for r in _query(prometheus, '{__name__=~"routeaq_.+", job="routeaq"}')}
            assert {n.removesuffix("_total") for n in scraped if not n.endswith("_created")} == declared
    webhook.shutdown()
