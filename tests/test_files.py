"""The one atomic-write helper: readers see the old version or the new one, never half."""

from __future__ import annotations

import polars as pl
import pytest

from routeaq_assets.core.files import write_atomically


def test_bytes_replace_the_file_and_leave_no_partial(tmp_path):
    path = tmp_path / "deep" / "folder" / "report.json"
    write_atomically(path, b"old")
    write_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_a_failure_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "panel.parquet"
    old = pl.DataFrame({"site_id": ["MY1"], "value": [1.0]})
    write_atomically(path, old.write_parquet)

    def half_then_fail(partial):
        partial.write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half_then_fail)
    assert pl.read_parquet(path).equals(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["panel.parquet"]


def test_writers_do_not_share_a_partial_file(tmp_path):
    path = tmp_path / "state.json"
    seen = []

    def record(partial):
        seen.append(partial)
        partial.write_bytes(b"{}")

    write_atomically(path, record)
    write_atomically(path, record)
    assert seen[0] != seen[1] and all(p.parent == tmp_path for p in seen)
