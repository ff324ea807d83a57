"""Pure domain code: contracts, features, models, metrics and drift. No Dagster import and no
outside I/O here: the clients of outside systems are in ``routeaq_assets.adapters``."""
