-- Dagster's database is created by the image (POSTGRES_DB); MLflow's registry gets its own.
CREATE DATABASE mlflow OWNER routeaq;
