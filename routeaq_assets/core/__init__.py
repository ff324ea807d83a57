"""Pure domain code: contracts, features, models, metrics and drift. No Dagster import here."""
