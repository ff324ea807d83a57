"""A window written as a stream of frames is replaced atomically, like a single frame."""

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from routeaq_assets.warehouse import Warehouse

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
END = START + timedelta(hours=4)


def rows(site: str, value: float) -> pl.DataFrame:
    times = pl.datetime_range(START, END, "1h", closed="left", time_unit="us", time_zone="UTC", eager=True)
    return pl.DataFrame({"site_id": [site] * len(times), "time": times, "value": [value] * len(times)})


def stored(warehouse: Warehouse) -> list[tuple]:
    return warehouse.query("SELECT site_id, value, count(*) AS n FROM t GROUP BY ALL ORDER BY site_id").rows()


def test_frames_written_in_turn_replace_the_window_once(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    warehouse.replace_window("t", rows("A", 1.0), START, END)
    replaced = warehouse.replace_window("t", iter([rows("A", 2.0), rows("B", 3.0)]), START, END)
    assert replaced == 4
    assert stored(warehouse) == [("A", 2.0, 4), ("B", 3.0, 4)]
    assert warehouse.replace_window("t", iter([rows("A", 2.0), rows("B", 3.0)]), START, END) == 8
    assert stored(warehouse) == [("A", 2.0, 4), ("B", 3.0, 4)]


def test_a_failure_while_producing_frames_keeps_the_old_rows(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    warehouse.replace_window("t", iter([rows("A", 1.0), rows("B", 1.0)]), START, END)

    def failing():
        yield rows("A", 9.0)
        raise RuntimeError("features for site B could not be built")

    with pytest.raises(RuntimeError, match="site B"):
        warehouse.replace_window("t", failing(), START, END)
    assert stored(warehouse) == [("A", 1.0, 4), ("B", 1.0, 4)]


def test_a_later_frame_outside_the_window_fails_the_whole_write(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    warehouse.replace_window("t", rows("A", 1.0), START, END)
    late = rows("B", 5.0).with_columns(pl.col("time") + timedelta(hours=4))
    with pytest.raises(ValueError, match="4 rows fall outside the window"):
        warehouse.replace_window("t", iter([rows("A", 2.0), late]), START, END)
    assert stored(warehouse) == [("A", 1.0, 4)]
