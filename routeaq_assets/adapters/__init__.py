"""Clients of the outside systems, shared by the assets and the service: the online store (Redis
or a Parquet file) and the history files, the S3 shared folder, the MLflow registry, webhooks,
e-mail, the subscription store (DuckDB or PostgreSQL), the Pushgateway and file locks. Built on
``core``'s contracts; never imports Dagster (the Dagster resources wrap these)."""
