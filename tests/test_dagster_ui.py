"""The Dagster UI in a real browser, after ingestion and monitoring run the demo's way: partitions
counted from the window's start, checks that pass (the freshness warning says why), forecast
figures and a plot that opens from its link, a drift report with its figures, the run in the UI's
own code location (re-executable without the "different code location" warning), and the
retraining_policy sensor's tick history saying why no retrain was requested. Screenshots go to
.routeaq/test-artifacts/."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType

from browser import chromium_page
from conftest import REPO, WINDOW_END, WINDOW_START, copy_home, home_env, partition_key
from service_process import bentoml_serve, free_port, stop, wait_for_answer

from routeaq_assets.demo import record_partitions_start

pytestmark = pytest.mark.e2e

HOUR = datetime(2025, 8, 1, 11, tzinfo=timezone.utc)  # the trained home's last hour
ARTIFACTS = REPO / ".routeaq" / "test-artifacts"
WORKSPACE = REPO / "workspace.yaml"
BIN = Path(sys.executable).parent


@contextmanager
def dagster_webserver(env: dict[str, str], log: Path):
    """A real dagster-webserver on a free loopback port over the workspace, stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE)],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not wait_for_answer(process, f"{url}/server_info", log, "dagster-webserver", 90, ready=200):
            pytest.fail(f"dagster-webserver exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        yield url
    finally:
        stop(process, timeout=20)


def tick_sensor_once(instance: dg.DagsterInstance, sensor_name: str):
    """Start the sensor and evaluate it once as the daemon does, recording the tick that the UI's
    tick history lists (the webserver alone never ticks sensors)."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(WORKSPACE)])) as context:
        (location,) = context.create_request_context().get_code_location_entries().values()
        (repository,) = location.code_location.get_repositories().values()
        instance.start_sensor(repository.get_sensor(sensor_name))
        with ThreadPoolExecutor(1) as pool:
            list(execute_sensor_iteration(context, dg.get_dagster_logger(), threadpool_executor=None, submit_threadpool_executor=pool))
    (state,) = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.name == sensor_name]
    (tick,) = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    return tick


def skip_welcome(page) -> None:
    """Dismiss the "Join the Dagster community" dialog a fresh browser profile opens with."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_role("button", name="Skip").click(timeout=15_000)
    except PlaywrightTimeout:  # no dialog on this Dagster version
        pass


def workspace_run(env: dict[str, str], *args: str) -> None:
    """A job run the way the demo runs it (``routeaq_assets.workspace_run``: ``dagster job launch``)."""
    done = subprocess.run([sys.executable, "-m", "routeaq_assets.workspace_run", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_dagster_ui_tells_the_truth_after_ingestion_and_monitoring(trained_home, tmp_path):
    """As after the demo: partitions counted from the window's start, no check failed but the
    freshness warning of a window that ended in the past (which says why), forecast_performance
    with figures and a plot that opens from its link (served by the service), the drift report's
    figures, the run in the UI's own code location, and the retraining sensor's reason."""
    home = copy_home(trained_home, tmp_path)
    record_partitions_start(home, WINDOW_START)  # as the demo records its window
    env = {k: v for k, v in {**os.environ, **home_env(home)}.items() if k != "ROUTEAQ_PARTITIONS_START"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with bentoml_serve(home, log=tmp_path / "serve.log") as service:
        env["ROUTEAQ_SERVICE_URL"] = service
        # The last day ingested and the last hour monitored, the way the demo runs them.
        workspace_run(env, "--job", "ingest_job", "--partition-range", f"{partition_key(WINDOW_END - timedelta(hours=24))}...{partition_key(HOUR)}")
        workspace_run(env, "--job", "monitoring_job", "--partition", partition_key(HOUR))
        _look_at_the_ui(home, env, service, tmp_path)


def _look_at_the_ui(home: Path, env: dict[str, str], service: str, tmp_path: Path) -> None:

    saved = dict(os.environ)
    os.environ.update(home_env(home))
    try:
        with dg.DagsterInstance.get() as instance:
            (run,) = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": partition_key(HOUR)}))
            # The run's origin is the workspace's code location itself: the UI matches runs to
            # a location by its name and the repository's, and reloads the code from its pointer.
            assert run.remote_job_origin is not None, "the run records no code location: the UI warns on re-execution"
            assert run.remote_job_origin.location_name == "routeaq_assets.definitions"  # workspace.yaml's python_module
            assert run.remote_job_origin.repository_origin.repository_name == "__repository__"
            assert run.tags["dagster/code_location"] == "routeaq_assets.definitions"
            tick = tick_sensor_once(instance, "retraining_policy")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # One hour of the trained home's (undrifted) data: no retrain, and the tick says why per pollutant.
    reason = tick.skip_reason
    assert not tick.run_ids and reason is not None, (tick.status, reason, tick.run_ids)
    assert all(f"{p}: no rule met: drift alarm 0 consecutive h" in reason for p in ("pm25", "no2", "o3")), reason

    with dagster_webserver(env, tmp_path / "webserver.log") as url, chromium_page() as page:
        # Partitions from the window's start to now, the day ingested through this instance filled.
        page.goto(f"{url}/assets/raw_aurn?view=partitions")
        skip_welcome(page)
        page.get_by_text("Materialized (24)").wait_for()
        counts = {len(dg.HourlyPartitionsDefinition(start_date=partition_key(WINDOW_START), timezone="UTC", end_offset=k).get_partition_keys()) for k in (0, 1)}
        assert any(page.get_by_text(f"{n:,} Partitions").count() for n in counts), page.inner_text("body")[:1500]
        page.screenshot(path=str(ARTIFACTS / "dagster-ui-partitions.png"))

        # Every check of raw_aurn passes but the freshness warning, which says why.
        page.goto(f"{url}/assets/raw_aurn?view=checks")
        page.get_by_text("newest_hour_is_recent").first.wait_for()
        listed = page.inner_text("body")
        for check in ("daily_completeness", "no_frozen_values", "no_rows_quarantined", "one_row_per_site_hour", "stored_values_not_nulled", "values_in_physical_range"):
            assert f"{check}\nSucceeded" in listed, listed[:2000]
        page.get_by_text("newest_hour_is_recent").first.click()
        page.get_by_text("a backfill of past hours, or a feed that stopped").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "dagster-ui-checks.png"))

        # forecast_performance has figures, and its plot opens from the link.
        page.goto(f"{url}/assets/forecast_performance?partition={partition_key(HOUR)}")
        link = page.locator(f"a[href='{service}/reports/performance/plots/{HOUR:%Y-%m-%dT%H}-no2.png']").first
        link.wait_for()
        page.get_by_text("no2_skill", exact=True).first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "dagster-ui-forecast-performance.png"))
        plot = page.goto(link.get_attribute("href"))
        assert plot.status == 200 and plot.headers["content-type"] == "image/png"
        page.screenshot(path=str(ARTIFACTS / "dagster-ui-forecast-plot.png"))

        # The run's page: the job is found in the UI's own code location.
        location_name = run.remote_job_origin.location_name
        page.goto(f"{url}/runs/{run.run_id}")
        skip_welcome(page)
        page.get_by_text("Re-execute").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "dagster-ui-run.png"))
        page.get_by_text("Re-execute").first.hover()
        page.wait_for_timeout(500)
        assert page.get_by_text("different code location").count() == 0

        page.goto(f"{url}/assets/pm25_drift_report?partition={partition_key(HOUR)}")
        summary = page.get_by_text("pm25: not drifted").or_(page.get_by_text("pm25: DRIFTED")).first
        summary.wait_for()
        text = summary.inner_text()
        assert "method wasserstein_distance_norm" in text and "(share 0." in text and "alarm at 0.10" in text, text
        page.get_by_text("drifted_share").first.wait_for()
        summary.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "dagster-ui-drift-report.png"))

        # The sensor's tick history: the tick's "0 runs requested" tag shows the reason on hover.
        page.goto(f"{url}/locations/{location_name}/sensors/retraining_policy")
        history_tag = page.get_by_role("table").last.get_by_text("0 runs requested").first
        history_tag.wait_for()
        history_tag.hover()
        tooltip = page.locator(".bp5-popover-content, [role=tooltip]").filter(has_text="pm25: no rule met")
        tooltip.first.wait_for()
        assert reason in tooltip.first.inner_text()
        page.screenshot(path=str(ARTIFACTS / "dagster-ui-retraining-policy.png"))
