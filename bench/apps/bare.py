"""The floor: a bare FastAPI app calling ``Booster.predict`` on an in-memory feature row."""

import os
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
from fastapi import FastAPI

HOME = Path(os.environ["ROUTEAQ_HOME"])
mlflow.set_tracking_uri(f"sqlite:///{HOME / 'mlflow' / 'mlflow.db'}")
BOOSTER: lgb.Booster = mlflow.lightgbm.load_model("models:/routeaq-pm25@champion")
ROW = np.random.default_rng(0).normal(size=(1, BOOSTER.num_feature()))

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/predict")
def predict(body: dict) -> dict:
    return {"site_id": body["site_id"], "timestamp": body["timestamp"], "pm25_pred": float(BOOSTER.predict(ROW, num_threads=1)[0]), "source": "bare"}
