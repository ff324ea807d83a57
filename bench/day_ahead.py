"""Every hour to 48 ahead: one model for every lead against a direct model per lead, on real files.

    python bench/day_ahead.py FOLDER [--pollutants no2,o3,pm25,pm10] [--folds 4] [--leads 1,6,12,24,48] [--direct]

FOLDER holds openair-format tables (the real ``ABD_2017.RData`` and ``AH_2017.RData``, or the
AQEval folder that ``bench/heldout_skill.py`` writes). Rolling-origin folds over the second half
of the data, each trained as the candidate is (``TrainingSettings``: the year before the fold,
the production rounds, the weather stand-in of files without forecasts). Per pollutant and lead:
skill against persistence (the value ``lead`` hours before), the served interval's coverage
(recalibrated day by day from the forecasts already scored, as served) pooled, in each quintile
of the predicted level and on the top decile of observed values; and, with ``--direct``, the
skill of a model trained for that lead alone, beside it. Training time per fold is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import timedelta
from pathlib import Path

import polars as pl

from routeaq_assets.core.backtest import TOP_SHARE
from routeaq_assets.core.features import build_features
from routeaq_assets.core.intervals import recalibrated
from routeaq_assets.core.metrics import evaluate, scorable
from routeaq_assets.core.models import TRAINING_LEADS, TrainingSettings
from routeaq_assets.defs.evaluation import local_panel


def _coverage(frame: pl.DataFrame) -> pl.Expr:
    return ((pl.col("target") >= pl.col("lower")) & (pl.col("target") <= pl.col("upper"))).cast(pl.Float64)


def scores(predictions: pl.DataFrame) -> dict:
    """Skill, pooled coverage, coverage per predicted-level quintile and on the observed top decile."""
    m = evaluate(predictions)
    marked = predictions.with_columns(
        inside=_coverage(predictions),
        quintile=(pl.col("pred").rank("ordinal") * 5 / pl.len()).ceil().clip(1, 5).cast(pl.Int8),
        top=pl.col("target") >= pl.col("target").quantile(1.0 - TOP_SHARE, "higher").over("site_id"),
    )
    by_quintile = marked.group_by("quintile").agg(pl.col("inside").mean()).sort("quintile")["inside"].to_list()
    return {
        "hours": int(m["hours"]), "skill": m["skill_vs_persistence"], "coverage": marked["inside"].mean(),
        "quintiles": by_quintile, "top_decile": marked.filter(pl.col("top"))["inside"].mean(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--pollutants", default="no2,o3,pm25,pm10")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--leads", default="1,6,12,24,48")
    parser.add_argument("--direct", action="store_true", help="also train a direct model per lead (slower)")
    args = parser.parse_args()
    leads = [int(h) for h in args.leads.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; folder {args.folder}; {args.folds} folds; leads {leads}")
    panel = local_panel(args.folder)
    settings = TrainingSettings()
    rows = []
    for pollutant in args.pollutants.split(","):
        if panel[pollutant].drop_nulls().is_empty():
            print(f"{pollutant}: not measured in {args.folder}, skipped")
            continue
        built = time.perf_counter()
        features = pl.concat([build_features(panel, pollutant, h) for h in sorted({*TRAINING_LEADS, *leads})])
        built = time.perf_counter() - built
        end = features["time"].max() + timedelta(hours=1)
        span = (end - features["time"].min()) / timedelta(days=1)
        test_days = max(1, int(span / 2 / args.folds))
        first = end - timedelta(days=args.folds * test_days)
        pooled = {h: [] for h in leads}
        direct = {h: [] for h in leads}
        train_s = direct_s = 0.0
        for k in range(args.folds):
            start, stop = first + timedelta(days=k * test_days), first + timedelta(days=(k + 1) * test_days)
            tic = time.perf_counter()
            model = settings.train(features.filter(pl.col("hours_ahead").is_in(list(TRAINING_LEADS))), start)
            train_s += time.perf_counter() - tic
            for h in leads:
                test = scorable(features.filter((pl.col("hours_ahead") == h) & (pl.col("time") >= start) & (pl.col("time") < stop)))
                pred, lower, upper = model.predict(test)
                keep = test.select("site_id", "time", "pollutant", "target", "target_lag_1", "target_lag_24")
                pooled[h].append(keep.with_columns(pred=pl.Series(pred), lower=pl.Series(lower), upper=pl.Series(upper)))
                if args.direct:
                    tic = time.perf_counter()
                    one = settings.train(features.filter(pl.col("hours_ahead") == h), start)
                    direct_s += time.perf_counter() - tic
                    pred, lower, upper = one.predict(test)
                    direct[h].append(keep.with_columns(pred=pl.Series(pred), lower=pl.Series(lower), upper=pl.Series(upper)))
        for h in leads:
            served = scores(recalibrated(pl.concat(pooled[h]), h, coverage=settings.coverage))
            row = {"pollutant": pollutant, "lead": h, **served}
            if args.direct:
                row["direct_skill"] = scores(recalibrated(pl.concat(direct[h]), h, coverage=settings.coverage))["skill"]
            rows.append(row)
        print(f"{pollutant}: features for {len(set(TRAINING_LEADS) | set(leads))} leads {built:.1f} s; "
              f"one model for every lead {train_s / args.folds:.1f} s a fold" + (f"; direct models {direct_s / args.folds:.1f} s a fold for {len(leads)} leads" if args.direct else ""))
    print()
    print("| pollutant | hours ahead | hours | skill (one model) | skill (direct) | coverage | coverage by predicted-level quintile | top decile observed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        direct = f"{r['direct_skill']:.3f}" if "direct_skill" in r else "-"
        quintiles = " / ".join(f"{q:.1%}" for q in r["quintiles"])
        print(f"| {r['pollutant']} | {r['lead']} | {r['hours']} | {r['skill']:.3f} | {direct} | {r['coverage']:.1%} | {quintiles} | {r['top_decile']:.1%} |")


if __name__ == "__main__":
    main()
