"""Partitions, declared once. Hours are UTC and hour-beginning; they start where the deployment's
data does (``core.environment.partitions_start``)."""

import dagster as dg

from routeaq_assets.core.environment import partitions_start

hourly_partitions = dg.HourlyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")

# A range of hourly partitions is written in one run, reading each source file once.
single_run_backfill = dg.BackfillPolicy.single_run()
