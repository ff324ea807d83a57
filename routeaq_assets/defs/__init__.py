"""The asset graph's stages, one module each.

Dagster marks ``backfill_policy`` of ``@asset`` as beta and warns at every import of a module
that uses it. RouteAQ relies on it on purpose: a backfill of the hourly assets runs as one run
(``BackfillPolicy.single_run()``), which is what makes a year's backfill one DuckDB write instead
of 8,760 runs. This is the one place that silences that warning, and only that one."""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function `asset` is currently in beta", category=dg.BetaWarning)
