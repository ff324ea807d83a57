-- Dagster's database is created by the image (POSTGRES_DB); MLflow's registry gets its own.
CREATE DATABASE mlflow OWNER routeaq;
-- Alerts people subscribe to (ROUTEAQ_SUBSCRIPTIONS_DB); the service creates its tables.
CREATE DATABASE routeaq_subscriptions OWNER routeaq;
