"""Partitions, declared once. Hours are UTC and hour-beginning."""

import dagster as dg

hourly_partitions = dg.HourlyPartitionsDefinition(start_date="2015-01-01-00:00", timezone="UTC")

# A range of hourly partitions is written in one run, reading each source file once.
single_run_backfill = dg.BackfillPolicy.single_run()
