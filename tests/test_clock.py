"""A wall clock that jumps an hour forward or back (an NTP step, a host restored from a snapshot):
what keeps time across processes (the SOS circuit breaker's state file, the download caches'
file times) stays bounded, and the scheduler runs each scheduled hour once."""

from __future__ import annotations

import os
import time

import pytest

from routeaq_assets.sources.http import fetch_to_cache, shared_session
from routeaq_assets.sources.sos import CircuitBreaker, CircuitOpen

HOUR_S = 3600.0


class Clock:
    def __init__(self, now: float = 1.8e9):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_clock_set_back_an_hour_keeps_the_sos_circuit_open_no_longer_than_its_cooldown(tmp_path):
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=900, state_path=tmp_path / "circuit.json", clock=clock)
    breaker.record(False)  # the service failed: open for 900 s
    clock.now -= HOUR_S  # set back an hour: the opening now lies 3,600 s ahead
    with pytest.raises(CircuitOpen, match=r"retry in 900 s"):
        breaker.check("getData")
    clock.now += 899
    with pytest.raises(CircuitOpen, match=r"retry in 1 s"):
        breaker.check("getData")
    clock.now += 1
    breaker.check("getData")  # a cooldown after the jump, one request probes the service


def test_a_clock_set_forward_an_hour_lets_one_request_probe_early():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=900, clock=clock)
    breaker.record(False)
    clock.now += HOUR_S
    breaker.check("getData")  # the probe
    with pytest.raises(CircuitOpen):  # the others wait for its answer
        breaker.check("getData")
    breaker.record(False)  # it failed: open again for a whole cooldown
    clock.now += 899
    with pytest.raises(CircuitOpen, match=r"retry in 1 s"):
        breaker.check("getData")


def test_a_remembered_404_stamped_in_the_future_is_asked_again(httpserver, tmp_path):
    """A site-year's 404 is remembered for a day. Once the clock is set back, the marker written
    a minute ago is stamped an hour ahead: it is of unknown age, so the file is asked for again
    (before, it was trusted for a day and an hour more)."""
    httpserver.expect_request("/MY1_2025.RData").respond_with_data(b"RDX3\n", content_type="application/octet-stream")
    dest = tmp_path / "MY1_2025.RData"
    marker = dest.with_name(dest.name + ".404")
    marker.touch()
    assert fetch_to_cache(shared_session(), httpserver.url_for("/MY1_2025.RData"), dest) is None  # remembered: not asked
    assert len(httpserver.log) == 0
    ahead = time.time() + HOUR_S - 60
    os.utime(marker, (ahead, ahead))
    assert fetch_to_cache(shared_session(), httpserver.url_for("/MY1_2025.RData"), dest) == dest
    assert len(httpserver.log) == 1 and dest.read_bytes() == b"RDX3\n"


LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
# Each schedule of the code location evaluated for one scheduled time, and the wall clock it saw.
EVALUATE_SCHEDULES = """
import json, sys
from datetime import datetime, timezone
import dagster as dg
from routeaq_assets.definitions import defs

when = datetime.fromisoformat(sys.argv[1])
requests = {}
repository = defs.get_repository_def()
for schedule in repository.schedule_defs:
    with dg.build_schedule_context(scheduled_execution_time=when, repository_def=repository) as context:
        asked = schedule.evaluate_tick(context).run_requests or []
    requests[schedule.name] = [{"run_key": r.run_key, "partition_key": r.partition_key, "tags": dict(r.tags)} for r in asked]
print(json.dumps({"wall_clock": datetime.now(timezone.utc).timestamp(), "requests": requests}))
"""


@pytest.mark.e2e  # three processes loading the definitions, and apt-get on a new machine
def test_every_schedule_asks_for_the_same_runs_with_the_wall_clock_an_hour_ahead_or_behind(tmp_path):
    """Dagster's scheduler keeps one tick per scheduled time, and a run key keeps one run per key:
    what is left to RouteAQ is that each schedule's request depends on the scheduled time alone,
    never on the wall clock. Evaluated under libfaketime an hour behind, on time and an hour ahead,
    every schedule asks for the same runs (the same run keys and partitions), so a clock set back
    re-asks for no hour it has run, and one set forward skips none."""
    import json
    import subprocess
    import sys

    from conftest import REPO, home_env
    from debian import apt_install

    problem = apt_install(["libfaketime"], [LIBFAKETIME])
    if problem:
        pytest.fail(problem)
    seen = {}
    for offset in ("-1h", "+0", "+1h"):
        env = {**os.environ, **home_env(tmp_path / "routeaq"), "LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset, "DONT_FAKE_MONOTONIC": "1"}
        done = subprocess.run([sys.executable, "-c", EVALUATE_SCHEDULES, "2026-03-29T01:20:00+00:00"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        seen[offset] = json.loads(done.stdout.strip().splitlines()[-1])
    real = seen["+0"]["wall_clock"]
    assert seen["-1h"]["wall_clock"] < real - HOUR_S + 120 and seen["+1h"]["wall_clock"] > real + HOUR_S - 120  # the clocks did jump
    requests = seen["+0"]["requests"]
    assert {"ingest_job_schedule", "publish_schedule", "ratify_schedule", "monitoring_schedule", "daily_verification_schedule", "lake_maintenance_schedule"} <= set(requests)
    (ingest,) = requests["ingest_job_schedule"]
    assert ingest["run_key"] == ingest["partition_key"] == "2026-03-29-00:00"  # the hour that ended before 01:20
    assert requests["monitoring_schedule"][0]["partition_key"] == "2026-03-29-00:00" and requests["ratify_schedule"][0]["run_key"] == "ratify-2026-03-28-01:00"
    assert seen["-1h"]["requests"] == requests == seen["+1h"]["requests"]
