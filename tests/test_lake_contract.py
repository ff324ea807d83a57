"""One contract for the lake's files, run against each implementation: the local folder of the
embedded default and S3 (a moto server started here) of production. Monitoring (performance
records, drift reports, their pruning) and the retraining sensor use nothing else."""

from pathlib import Path

import dagster as dg
import pytest

from production_services import S3_CREDENTIALS, bucket, s3_client, s3_endpoint  # noqa: F401 - fixtures
from routeaq_assets.lake import Lake, LocalLake


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path, monkeypatch) -> Lake:
    if request.param == "local":
        resource = LocalLake(root=str(tmp_path / "lake"))
    else:
        for name, value in S3_CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        from dagster_aws.s3 import S3Resource

        from routeaq_assets.storage import S3Lake

        endpoint, name = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("bucket")
        resource = S3Lake(s3=S3Resource(endpoint_url=endpoint, region_name="us-east-1"), bucket=name, prefix="routeaq")
    with dg.build_resources({"lake": resource}) as built:
        yield built.lake


def test_what_is_written_is_read_back_and_a_missing_key_reads_none(lake):
    uri = lake.write_bytes("reports/drift/no2/2025-08-01T12.json", b'{"drifted": true}')
    assert uri == lake.uri("reports/drift/no2/2025-08-01T12.json")
    assert lake.read_bytes("reports/drift/no2/2025-08-01T12.json") == b'{"drifted": true}'
    lake.write_bytes("reports/drift/no2/2025-08-01T12.json", b"{}")
    assert lake.read_bytes("reports/drift/no2/2025-08-01T12.json") == b"{}"
    assert lake.read_bytes("reports/drift/no2/2025-08-01T13.json") is None
    assert lake.read_bytes("reports/drift/no2") is None  # a folder is not a file


def test_keys_are_listed_in_name_order_by_suffix_and_only_directly_under_the_folder(lake):
    for key in ("r/b/2025-08-01T13.json", "r/b/2025-08-01T12.json", "r/b/2025-08-01T12.html", "r/b/old/2025-07-01T00.json", "r/bb/x.json"):
        lake.write_bytes(key, b"1")
    assert lake.list_keys("r/b", ".json") == ["r/b/2025-08-01T12.json", "r/b/2025-08-01T13.json"]
    assert lake.list_keys("r/b") == ["r/b/2025-08-01T12.html", "r/b/2025-08-01T12.json", "r/b/2025-08-01T13.json"]
    assert lake.list_keys("r/nothing-here", ".json") == []


def test_delete_removes_one_key_and_a_missing_key_is_no_error(lake):
    lake.write_bytes("r/a.json", b"1")
    lake.write_bytes("r/b.json", b"2")
    lake.delete("r/a.json")
    lake.delete("r/a.json")
    assert lake.list_keys("r", ".json") == ["r/b.json"]
    assert lake.read_bytes("r/a.json") is None


def test_a_uri_names_the_object_itself(lake):
    uri = lake.uri("reports/backtest/20250801T120000")
    if uri.startswith("s3:"):
        assert uri.startswith("s3://") and uri.endswith("/routeaq/reports/backtest/20250801T120000")
    else:
        assert uri == str(Path(lake.uri()) / "reports/backtest/20250801T120000")
