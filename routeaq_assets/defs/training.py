"""Training and promotion, per pollutant: ``{p}_candidate`` trains one forecaster for every hour
from 1 to 48 ahead (the lead time is a feature) on a trailing window before the held-out hours,
and scores it at each of ``GATE_LEADS`` beside persistence, same-hour-yesterday and the current
champion; the blocking check ``beats_persistence`` stops a model that loses to persistence at any
of those leads or whose interval is off target; ``{p}_champion`` moves the MLflow ``champion``
alias only when the candidate also beats the champion on the same hours.

The candidate hands over through MLflow, not through an IO manager: its materialization names the
model version it registered, and the check and ``{p}_champion`` read that version's record from its
MLflow run (``ForecastRegistry.candidate_record``). So ``{p}_champion`` can run again alone, in a
run of its own on another machine, and decides the same."""


from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl

from routeaq_assets.adapters.pushgateway import push
from routeaq_assets.core.environment import load_settings, model_name
from routeaq_assets.core.intervals import recalibrated
from routeaq_assets.core.metrics import evaluate, scorable
from routeaq_assets.core.models import GATE_LEADS, TRAINING_LEADS, TrainingSettings, champion_overlap, day_ahead_decision
from routeaq_assets.core.prometheus import champion_figures
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.defs.features import silver_features
from routeaq_assets.model_store import ModelStore
from routeaq_assets.warehouse import WarehouseResource

CHECK_GATE = "beats_persistence"
# The tables a model's rows come from: each candidate records the version of each it read
# (``{table}_version`` in MLflow), and a backtest can read them again at those versions.
TRAINING_TABLES = ("silver_features", "observations", "weather", "sites")


def current_versions(warehouse: WarehouseResource) -> dict[str, int]:
    """The versions of ``TRAINING_TABLES`` now; empty where the warehouse keeps none (DuckDB)."""
    return {t: v for t in TRAINING_TABLES if (v := warehouse.table_version(t)) is not None}


_DEFAULTS = TrainingSettings()


class ModelConfig(dg.Config):
    """How models are trained, shared by the candidates and the backtests (``settings()``)."""

    train_days: int = _DEFAULTS.train_days
    num_boost_round: int = _DEFAULTS.num_boost_round
    coverage: float = _DEFAULTS.coverage
    # "forecast": the weather the service has; "reanalysis" (the upper bound) only for user files.
    weather: str = _DEFAULTS.weather

    def settings(self) -> TrainingSettings:
        return TrainingSettings(train_days=self.train_days, num_boost_round=self.num_boost_round, coverage=self.coverage, weather=self.weather)


class TrainingConfig(ModelConfig):
    holdout_days: int = 7
    coverage_tolerance: float = 0.05
    margin: float = 0.01


def _markdown(by_lead: dict[int, dict[str, float]]) -> str:
    names = [n for n in ("model", "champion", "persistence", "yesterday") if any(f"{n}_rmse" in m for m in by_lead.values())]
    head = "| hours ahead | hours | " + " | ".join(f"{n} RMSE" for n in names) + " | skill | coverage |"
    rule = "|" + "---|" * (len(names) + 4)
    rows = [
        f"| {h} | {int(m['hours'])} | " + " | ".join(f"{m.get(f'{n}_rmse', float('nan')):.3f}" for n in names)
        + f" | {m['skill_vs_persistence']:.3f} | {m['interval_coverage']:.3f} |"
        for h, m in sorted(by_lead.items())
    ]
    return "\n".join([head, rule, *rows])


def _held_out_scores(frame: pl.DataFrame, forecaster, hours_ahead: int) -> tuple[dict[str, float], pl.DataFrame]:
    """Scores on the held-out hours, with the interval as the service would serve it over them
    (recalibrated each day from the hours already scored, as the backtests do)."""
    pred, lower, upper = forecaster.predict(frame)
    scored = recalibrated(
        frame.with_columns(pred=pl.Series(pred), lower=pl.Series(lower), upper=pl.Series(upper)), hours_ahead, coverage=forecaster.coverage
    )
    return evaluate(scored), scored


def held_out_by_lead(held_out: pl.DataFrame, forecaster, leads: tuple[int, ...] = GATE_LEADS) -> tuple[dict[int, dict[str, float]], float]:
    """Scores at each lead the forecaster serves, and the interval coverage over all of them."""
    by_lead, scored = {}, []
    for h in leads:
        rows = held_out.filter(pl.col("hours_ahead") == h)
        if h > forecaster.max_hours_ahead or rows.is_empty():
            continue
        by_lead[h], frame = _held_out_scores(rows, forecaster, h)
        scored.append(frame)
    return by_lead, evaluate(pl.concat(scored))["interval_coverage"] if scored else float("nan")


def candidate_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str) -> dg.EventLogEntry | None:
    """Run ``run_id``'s materialization of ``key``, or, when that run has none (a champion run
    alone), the latest: a run decides on its own candidate even when another run trained one since."""
    started = instance.get_run_record_by_id(run_id).start_time
    since = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_timestamp=started), limit=100).records
    return next((r.event_log_entry for r in since if r.run_id == run_id), None) or instance.get_latest_materialization_event(key)


def build_model_assets(pollutant: str) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition, dg.AssetsDefinition]:
    candidate_name = f"{pollutant}_candidate"

    @dg.asset(name=candidate_name, group_name="training", deps=[silver_features], kinds={"lightgbm", "mlflow"})
    def candidate(context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: WarehouseResource, model_store: ModelStore) -> dg.MaterializeResult:
        """A LightGBM forecaster of every hour from 1 to 48 ahead, with an 80 % interval, trained
        on the trailing window before the held-out hours (rows of ``TRAINING_LEADS`` with the lead
        time as a feature) and registered in MLflow as a new version of ``routeaq-{pollutant}``;
        its run keeps what the promotion decision reads. The materialization names the model and
        version (``model_name``, ``model_version``)."""
        if config.weather != "forecast":
            raise dg.Failure(f"{candidate_name}: a served model trains on the weather the service has (weather: forecast), not {config.weather!r}")
        settings = config.settings()
        versions = current_versions(warehouse)
        reads = warehouse.as_of(versions)  # every read below sees the tables at the versions recorded
        (newest,) = reads.query(
            "SELECT max(time) FROM silver_features WHERE pollutant = ? AND target IS NOT NULL", [pollutant]
        ).row(0)
        if newest is None:
            raise dg.Failure(f"{candidate_name}: silver_features has no {pollutant} rows; materialize the features first")
        end = newest + timedelta(hours=1)
        holdout_start = end - timedelta(days=config.holdout_days)
        frame = reads.stored_features(pollutant, holdout_start - timedelta(days=settings.train_days), end, TRAINING_LEADS, thin_before=holdout_start)
        train = settings.training_rows(frame, holdout_start)
        start = train["time"].min()
        held_out = scorable(frame.filter(pl.col("time") >= holdout_start))
        forecaster = settings.train(frame, holdout_start)
        by_lead, coverage = held_out_by_lead(held_out, forecaster)

        registry = model_store.registry()
        name = model_name(pollutant, model_store.prefix)
        champion = registry.load(name)
        champion_refused = champion_overlap(champion.metadata, holdout_start) if champion is not None else None
        if champion is not None and champion_refused is None:
            champion_by_lead, _ = held_out_by_lead(held_out, champion.forecaster)
            for h, m in champion_by_lead.items():
                by_lead[h]["champion_rmse"] = m["model_rmse"]
        elif champion_refused:
            context.log.warning(f"{name} v{champion.version} is not compared: {champion_refused}")
        metrics = {f"{k}_{h}h": v for h, m in by_lead.items() for k, v in m.items()} | {"interval_coverage": coverage}
        window = {
            "train_start": start.isoformat(),
            "train_end": holdout_start.isoformat(),
            "holdout_start": holdout_start.isoformat(),
            "holdout_end": end.isoformat(),
            "sites": sorted(frame["site_id"].unique().to_list()),
            "max_hours_ahead": forecaster.max_hours_ahead,
        }
        run_id, version = registry.log_candidate(
            name,
            forecaster,
            params={**forecaster.params, "pollutant": pollutant, "train_rows": train.height, "leads": ",".join(map(str, forecaster.leads)),
                    **{k: v for k, v in window.items() if k != "sites"}, **{f"{t}_version": v for t, v in versions.items()}},
            metrics=metrics,
            metadata={"pollutant": pollutant, **window, "holdout_metrics": {str(h): m for h, m in by_lead.items()}},
            example=held_out,
            run_name=f"{pollutant}-{end:%Y%m%dT%H}",
            record={
                "pollutant": pollutant,
                "champion_version": champion.version if champion else None,
                "champion_refused": champion_refused,
                "by_lead": {str(h): m for h, m in by_lead.items()},
                "interval_coverage": coverage,
                "config": config.model_dump(),
                **window,
            },
            tags={"pollutant": pollutant, "role": "candidate", "max_hours_ahead": str(forecaster.max_hours_ahead)},
        )
        return dg.MaterializeResult(
            metadata={
                "model_name": name,
                "model_version": version,
                "mlflow_run_id": run_id,
                "max_hours_ahead": forecaster.max_hours_ahead,
                "held_out_hours": int(by_lead[1]["hours"]) if 1 in by_lead else 0,
                "interval_coverage": coverage,
                **{f"skill_vs_persistence_{h}h": m["skill_vs_persistence"] for h, m in by_lead.items()},
                **{f"rmse_{h}h": m["model_rmse"] for h, m in by_lead.items()},
                "scores": dg.MetadataValue.md(_markdown(by_lead)),
                "train_window": f"{window['train_start']} .. {window['holdout_start']}",
                **{f"{t}_version": v for t, v in versions.items()},
            },
        )

    def registered_candidate(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, model_store: ModelStore) -> dict:
        """The record of the model version that ``{p}_candidate`` registered (its materialization
        that ``candidate_materialization`` picks), read from MLflow (``ForecastRegistry.candidate_record``)."""
        event = candidate_materialization(context.instance, dg.AssetKey(candidate_name), context.run.run_id)
        metadata = event.asset_materialization.metadata if event is not None and event.asset_materialization else {}
        if "model_name" not in metadata or "model_version" not in metadata:
            raise dg.Failure(f"no materialization of {candidate_name} names a registered model version: materialize {candidate_name} first")
        name, version = metadata["model_name"].value, metadata["model_version"].value
        context.log.info(f"{name} v{version}, registered by run {event.run_id}")
        try:
            return model_store.registry().candidate_record(name, version)
        except LookupError as exc:
            raise dg.Failure(f"{candidate_name}: {exc}") from None

    def decide(candidate: dict, compare_champion: bool):
        cfg = candidate["config"]
        return day_ahead_decision(
            {int(h): m for h, m in candidate["by_lead"].items()}, candidate["interval_coverage"],
            target_coverage=cfg["coverage"], coverage_tolerance=cfg["coverage_tolerance"], margin=cfg["margin"],
            champion_refused=candidate.get("champion_refused"), compare_champion=compare_champion,
        )

    @dg.asset_check(asset=candidate, name=CHECK_GATE, blocking=True)
    def gate(context: dg.AssetCheckExecutionContext, model_store: ModelStore) -> dg.AssetCheckResult:
        """Blocks promotion of a model that does not beat persistence on the held-out hours at
        every lead of ``GATE_LEADS``, or whose interval coverage is off target. (The champion is
        compared by ``{p}_champion``.)"""
        candidate = registered_candidate(context, model_store)
        decision = decide(candidate, compare_champion=False)
        return dg.AssetCheckResult(
            passed=decision.promote,
            severity=dg.AssetCheckSeverity.ERROR,
            description=decision.reason,
            metadata={
                **{f"skill_vs_persistence_{h}h": m["skill_vs_persistence"] for h, m in candidate["by_lead"].items()},
                "interval_coverage": candidate["interval_coverage"],
                "target_coverage": candidate["config"]["coverage"],
                "coverage_tolerance": candidate["config"]["coverage_tolerance"],
                "champion_refused": candidate.get("champion_refused") or "",
            },
        )

    @dg.asset(name=f"{pollutant}_champion", group_name="training", deps=[candidate], kinds={"mlflow"})
    def champion(context: dg.AssetExecutionContext, model_store: ModelStore) -> dg.MaterializeResult:
        """The MLflow ``champion`` alias: moved to the candidate (the version the latest
        ``{p}_candidate`` registered, read from MLflow) only if it beats the champion it was
        compared with by the configured margin on the same held-out hours (averaged over the leads)."""
        candidate = registered_candidate(context, model_store)
        decision = decide(candidate, compare_champion=True)
        registry = model_store.registry()
        if decision.promote:
            registry.promote(candidate["model_name"], candidate["version"], decision.reason)
        else:
            registry.record_rejection(candidate["model_name"], candidate["version"], decision.reason)
        serving = registry.champion_version(candidate["model_name"])
        context.log.info(f"{candidate['model_name']} v{candidate['version']}: {'promoted' if decision.promote else 'not promoted'}: {decision.reason}")
        if url := load_settings().pushgateway_url:  # the champion's figures cost two registry calls: only when pushed
            version, trained_until = registry.champion_trained_until(candidate["model_name"])
            push(url, "champion", champion_figures(pollutant, version, trained_until, decision.promote, datetime.now(timezone.utc)), context.log, pollutant=pollutant)
        by_lead = candidate["by_lead"]
        return dg.MaterializeResult(
            metadata={
                "promoted": decision.promote,
                "reason": decision.reason,
                "champion_version": str(serving),
                "candidate_version": candidate["version"],
                **{f"candidate_rmse_{h}h": m["model_rmse"] for h, m in by_lead.items()},
                **{f"champion_rmse_before_{h}h": m["champion_rmse"] for h, m in by_lead.items() if m.get("champion_rmse") is not None},
                **{f"persistence_rmse_{h}h": m["persistence_rmse"] for h, m in by_lead.items()},
                "margin": candidate["config"]["margin"],
            }
        )

    return candidate, gate, champion


MODEL_ASSETS = [build_model_assets(p) for p in FORECAST_POLLUTANTS]
candidates = [c for c, _, _ in MODEL_ASSETS]
gates = [g for _, g, _ in MODEL_ASSETS]
champions = [h for _, _, h in MODEL_ASSETS]
