"""Training and promotion, per pollutant: ``{p}_candidate`` trains on a trailing window and is
scored on held-out hours beside persistence, same-hour-yesterday and the current champion;
the blocking check ``beats_persistence`` stops a bad model; ``{p}_champion`` moves the MLflow
``champion`` alias only when the candidate also beats the champion on the same hours."""


from datetime import timedelta

import dagster as dg
import polars as pl

from routeaq_assets.core.environment import model_name
from routeaq_assets.core.intervals import recalibrated
from routeaq_assets.core.metrics import evaluate, scorable
from routeaq_assets.core.models import TrainingSettings, champion_overlap, promotion_decision
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.defs.features import require_horizon, silver_features
from routeaq_assets.resources import ModelStore, WarehouseResource

CHECK_GATE = "beats_persistence"


_DEFAULTS = TrainingSettings()


class ModelConfig(dg.Config):
    """How models are trained, shared by the candidates and the backtests (``settings()``)."""

    train_days: int = _DEFAULTS.train_days
    num_boost_round: int = _DEFAULTS.num_boost_round
    coverage: float = _DEFAULTS.coverage
    # "forecast": the weather the service has; "reanalysis" (the upper bound) only for user files.
    weather: str = _DEFAULTS.weather
    # Hours ahead. 1 is the served model (``routeaq-{p}``); 2 to 24 register ``routeaq-{p}-{h}h``.
    horizon: int = 1

    def settings(self) -> TrainingSettings:
        return TrainingSettings(train_days=self.train_days, num_boost_round=self.num_boost_round, coverage=self.coverage, weather=self.weather)


class TrainingConfig(ModelConfig):
    holdout_days: int = 7
    coverage_tolerance: float = 0.05
    margin: float = 0.01


def _markdown(metrics: dict[str, float]) -> str:
    rows = [f"| {name} | {metrics.get(f'{name}_rmse', float('nan')):.3f} | {metrics.get(f'{name}_mae', float('nan')):.3f} | {metrics.get(f'{name}_bias', float('nan')):.3f} |" for name in ("model", "champion", "persistence", "yesterday") if f"{name}_rmse" in metrics]
    return "| forecast | RMSE | MAE | bias |\n|---|---|---|---|\n" + "\n".join(rows)


def _held_out_scores(frame: pl.DataFrame, forecaster, hours_ahead: int) -> tuple[dict[str, float], pl.DataFrame]:
    """Scores on the held-out hours, with the interval as the service would serve it over them
    (recalibrated each day from the hours already scored, as the backtests do)."""
    pred, lower, upper = forecaster.predict(frame)
    scored = recalibrated(
        frame.with_columns(pred=pl.Series(pred), lower=pl.Series(lower), upper=pl.Series(upper)), hours_ahead, coverage=forecaster.coverage
    )
    return evaluate(scored), scored


def build_model_assets(pollutant: str) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition, dg.AssetsDefinition]:
    candidate_name = f"{pollutant}_candidate"

    @dg.asset(name=candidate_name, group_name="training", deps=[silver_features], kinds={"lightgbm", "mlflow"})
    def candidate(context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: WarehouseResource, model_store: ModelStore) -> dg.Output[dict]:
        """A LightGBM forecaster with an 80 % interval, trained on the trailing window before the
        held-out hours and registered in MLflow as a new version (one model per horizon)."""
        require_horizon(candidate_name, config.horizon)
        if config.weather != "forecast":
            raise dg.Failure(f"{candidate_name}: a served model trains on the weather the service has (weather: forecast), not {config.weather!r}")
        settings = config.settings()
        (newest,) = warehouse.query(
            "SELECT max(time) FROM silver_features WHERE pollutant = ? AND target IS NOT NULL", [pollutant]
        ).row(0)
        if newest is None:
            raise dg.Failure(f"{candidate_name}: silver_features has no {pollutant} rows; materialize the features first")
        end = newest + timedelta(hours=1)
        holdout_start = end - timedelta(days=config.holdout_days)
        frame = warehouse.stored_features(pollutant, holdout_start - timedelta(days=settings.train_days), end, config.horizon)
        train = settings.training_rows(frame, holdout_start)
        start = train["time"].min()
        held_out = scorable(frame.filter(pl.col("time") >= holdout_start))
        forecaster = settings.train(frame, holdout_start)
        metrics, _ = _held_out_scores(held_out, forecaster, config.horizon)

        registry = model_store.registry()
        name = model_name(pollutant, model_store.prefix, config.horizon)
        champion = registry.load(name)
        champion_refused = champion_overlap(champion.metadata, holdout_start) if champion is not None else None
        if champion is not None and champion_refused is None:
            champion_metrics, _ = _held_out_scores(held_out, champion.forecaster, config.horizon)
            metrics.update({f"champion_{k[len('model_'):]}": v for k, v in champion_metrics.items() if k.startswith("model_")})
        elif champion_refused:
            context.log.warning(f"{name} v{champion.version} is not compared: {champion_refused}")
        window = {
            "train_start": start.isoformat(),
            "train_end": holdout_start.isoformat(),
            "holdout_start": holdout_start.isoformat(),
            "holdout_end": end.isoformat(),
            "sites": sorted(frame["site_id"].unique().to_list()),
            "horizon_hours": config.horizon,
        }
        run_id, version = registry.log_candidate(
            name,
            forecaster,
            params={**forecaster.params, "pollutant": pollutant, "train_rows": train.height, **{k: v for k, v in window.items() if k != "sites"}},
            metrics=metrics,
            metadata={"pollutant": pollutant, **window, "holdout_metrics": metrics},
            example=held_out,
            run_name=f"{pollutant}-{end:%Y%m%dT%H}",
            tags={"pollutant": pollutant, "role": "candidate", "horizon_hours": str(config.horizon)},
        )
        result = {
            "pollutant": pollutant,
            "model_name": name,
            "version": version,
            "run_id": run_id,
            "champion_version": champion.version if champion else None,
            "champion_refused": champion_refused,
            "metrics": metrics,
            "config": config.model_dump(),
            **window,
        }
        return dg.Output(
            result,
            metadata={
                "model_version": version,
                "mlflow_run_id": run_id,
                "held_out_hours": int(metrics["hours"]),
                "rmse": metrics["model_rmse"],
                "persistence_rmse": metrics["persistence_rmse"],
                "skill_vs_persistence": metrics["skill_vs_persistence"],
                "interval_coverage": metrics["interval_coverage"],
                "scores": dg.MetadataValue.md(_markdown(metrics)),
                "train_window": f"{window['train_start']} .. {window['holdout_start']}",
            },
        )

    @dg.asset_check(asset=candidate, name=CHECK_GATE, blocking=True)
    def gate(candidate: dict) -> dg.AssetCheckResult:
        """Blocks promotion of a model that does not beat persistence on the held-out hours or
        whose interval coverage is off target, and refuses a comparison with a champion that
        trained on the held-out hours."""
        m, cfg = candidate["metrics"], candidate["config"]
        decision = promotion_decision(
            m["model_rmse"], m["persistence_rmse"], None, m["interval_coverage"],
            target_coverage=cfg["coverage"], coverage_tolerance=cfg["coverage_tolerance"], champion_refused=candidate.get("champion_refused"),
        )
        return dg.AssetCheckResult(
            passed=decision.promote,
            severity=dg.AssetCheckSeverity.ERROR,
            description=decision.reason,
            metadata={
                "rmse": m["model_rmse"],
                "persistence_rmse": m["persistence_rmse"],
                "interval_coverage": m["interval_coverage"],
                "target_coverage": cfg["coverage"],
                "coverage_tolerance": cfg["coverage_tolerance"],
                "champion_refused": candidate.get("champion_refused") or "",
            },
        )

    @dg.asset(name=f"{pollutant}_champion", group_name="training", ins={"candidate": dg.AssetIn(candidate_name)}, kinds={"mlflow"})
    def champion(context: dg.AssetExecutionContext, candidate: dict, model_store: ModelStore) -> dg.MaterializeResult:
        """The MLflow ``champion`` alias: moved to the candidate only if it beats the current
        champion by the configured margin on the same held-out hours."""
        m, cfg = candidate["metrics"], candidate["config"]
        decision = promotion_decision(
            m["model_rmse"], m["persistence_rmse"], m.get("champion_rmse"), m["interval_coverage"],
            target_coverage=cfg["coverage"], coverage_tolerance=cfg["coverage_tolerance"], margin=cfg["margin"],
            champion_refused=candidate.get("champion_refused"),
        )
        registry = model_store.registry()
        if decision.promote:
            registry.promote(candidate["model_name"], candidate["version"], decision.reason)
            serving = candidate["version"]
        else:
            registry.record_rejection(candidate["model_name"], candidate["version"], decision.reason)
            serving = candidate["champion_version"]
        context.log.info(f"{candidate['model_name']} v{candidate['version']}: {'promoted' if decision.promote else 'not promoted'}: {decision.reason}")
        return dg.MaterializeResult(
            metadata={
                "promoted": decision.promote,
                "reason": decision.reason,
                "champion_version": str(serving),
                "candidate_version": candidate["version"],
                "candidate_rmse": m["model_rmse"],
                "champion_rmse_before": m.get("champion_rmse"),
                "persistence_rmse": m["persistence_rmse"],
                "margin": cfg["margin"],
            }
        )

    return candidate, gate, champion


MODEL_ASSETS = [build_model_assets(p) for p in FORECAST_POLLUTANTS]
candidates = [c for c, _, _ in MODEL_ASSETS]
gates = [g for _, g, _ in MODEL_ASSETS]
champions = [h for _, _, h in MODEL_ASSETS]
