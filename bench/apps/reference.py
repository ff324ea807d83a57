"""A forecast API written the way the reference RouteAQ project serves: FastAPI, the champion
through ``mlflow.pyfunc``, and the features looked up per request from the stored history."""

import os
from datetime import datetime, timedelta
from pathlib import Path

import mlflow
import polars as pl
from fastapi import FastAPI

from routeaq_assets.core.features import MAX_LOOKBACK_HOURS, build_features

HOME = Path(os.environ["ROUTEAQ_HOME"])
mlflow.set_tracking_uri(f"sqlite:///{HOME / 'mlflow' / 'mlflow.db'}")
MODEL = mlflow.pyfunc.load_model("models:/routeaq-pm25@champion")
COLUMNS = MODEL.metadata.get_input_schema().input_names()
PANEL = HOME / "online" / "features.parquet"

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/predict")
def predict(body: dict) -> dict:
    hour = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    history = pl.scan_parquet(PANEL).filter(
        (pl.col("site_id") == body["site_id"]) & (pl.col("time") >= hour - timedelta(hours=MAX_LOOKBACK_HOURS)) & (pl.col("time") <= hour)
    ).collect()
    row = build_features(history, "pm25").filter(pl.col("time") == hour)
    change = MODEL.predict(row.select(COLUMNS).to_pandas())
    base = row.select(pl.coalesce("target_lag_1", "target_lag_2", "target_mean_3", "target_mean_24"))[0, 0]
    return {"site_id": body["site_id"], "timestamp": body["timestamp"], "pm25_pred": float(base + change[0]), "source": "reference"}
