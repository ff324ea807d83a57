"""The retraining policy: the one place that decides whether a pollutant's model is retrained.

Three rules, each with its figures:
- **drift**: the pollutant's drift alarm held for ``drift_hours`` consecutive monitored hours;
- **skill**: the champion's rolling skill against persistence (``forecast_performance``) fell
  below ``min_skill``;
- **age**: the champion's training data ends more than ``max_age_hours`` before the newest
  monitored hour.

Each triggering condition has a key that stays the same while the condition lasts (the first
hour of the drift episode, of the skill drop, the champion version that grew old), so the
sensor's run key asks Dagster for one run per condition however often it is evaluated. After a
request, the pollutant waits ``cooldown_hours`` before any rule may ask again. The clock is the
newest monitored hour, not the wall clock, so a backfill or the demo behaves as live operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetrainPolicy:
    drift_hours: int = 3
    min_skill: float = 0.0
    min_scored_hours: int = 24
    max_age_hours: int = 24 * 30
    cooldown_hours: int = 24


@dataclass(frozen=True)
class PollutantState:
    """What monitoring knows about one pollutant at ``now`` (the newest monitored hour)."""

    pollutant: str
    now: datetime
    drift_by_hour: dict[datetime, bool]  # hour -> alarm, for the recent hours monitored
    skill: float | None  # rolling skill against persistence of the one-hour champion
    scored_hours: int  # forecasts behind ``skill``
    skill_low_since: datetime | None  # the first hour of the current run of low skill
    champion_version: str | None
    champion_data_end: datetime | None  # the newest hour of the champion's training data
    last_request: datetime | None  # the newest hour a retrain was requested at
    requested: frozenset[str] = frozenset()  # condition keys already requested


@dataclass(frozen=True)
class Decision:
    pollutant: str
    request: bool
    rule: str  # drift, skill, age, cooldown or none
    key: str | None  # the triggering condition, unique per episode
    reason: str  # the figures and the rule, as the tick history shows them


def drift_episode(drift_by_hour: dict[datetime, bool], now: datetime) -> tuple[int, datetime | None]:
    """How many consecutive hours up to ``now`` the alarm held, and the first of them. A missing
    hour ends the run: an unmonitored hour is not evidence of drift."""
    run, first, hour = 0, None, now
    while drift_by_hour.get(hour):
        run, first, hour = run + 1, hour, hour - timedelta(hours=1)
    return run, first


def decide(policy: RetrainPolicy, state: PollutantState) -> Decision:
    p, now = state.pollutant, state.now
    run, first = drift_episode(state.drift_by_hour, now)
    figures = [f"drift alarm {run} consecutive h (rule: >= {policy.drift_hours} h)"]
    if state.skill is not None:
        figures.append(f"rolling skill {state.skill:.3f} over {state.scored_hours} forecasts (rule: < {policy.min_skill} with >= {policy.min_scored_hours})")
    else:
        figures.append("rolling skill not scored yet")
    age = (now - state.champion_data_end) / timedelta(hours=1) if state.champion_data_end else None
    figures.append(f"champion v{state.champion_version} data {age:.0f} h old (rule: > {policy.max_age_hours} h)" if age is not None else "no champion")
    said = "; ".join(figures)

    candidates = []
    if run >= policy.drift_hours and first is not None:
        candidates.append(("drift", f"{p}-drift-{first:%Y%m%dT%H}"))
    if state.skill is not None and state.scored_hours >= policy.min_scored_hours and state.skill < policy.min_skill and state.skill_low_since:
        candidates.append(("skill", f"{p}-skill-{state.skill_low_since:%Y%m%dT%H}"))
    if age is not None and age > policy.max_age_hours:
        candidates.append(("age", f"{p}-age-v{state.champion_version}"))
    if not candidates:
        return Decision(p, False, "none", None, f"{p}: no rule met: {said}")
    rule, key = candidates[0]
    if key in state.requested:
        return Decision(p, False, rule, key, f"{p}: {rule} rule met, already requested for this condition ({key}): {said}")
    if state.last_request is not None and now - state.last_request < timedelta(hours=policy.cooldown_hours):
        waited = (now - state.last_request) / timedelta(hours=1)
        return Decision(p, False, "cooldown", key, f"{p}: {rule} rule met but in cooldown ({waited:.0f} of {policy.cooldown_hours} h since the last request): {said}")
    return Decision(p, True, rule, key, f"{p}: retrain requested by the {rule} rule: {said}")
