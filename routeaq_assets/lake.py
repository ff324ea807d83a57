"""The lake's contract for files that are not tables, and the local folder that implements it
(the production lake on S3 is ``storage.S3Lake``)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from routeaq_assets.core.files import write_atomically


class Lake(dg.ConfigurableResource):
    """The lake's contract for files that are not tables (reports, plots, monitoring records).

    Keys are relative, ``/``-separated names (``reports/drift/no2/2025-08-01T12.json``); every
    method takes and returns keys, and ``uri`` turns one into an address a person or tool can
    open. Two implementations, chosen by the environment mapping: ``LocalLake`` (a folder) and
    ``storage.S3Lake`` (objects under a bucket prefix). ``tests/test_lake_contract.py`` runs the
    same tests against both."""

    def uri(self, key: str = "") -> str:
        """Where ``key`` lives (a folder path, or ``s3://bucket/prefix/key``); '' for the root."""
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` at ``key`` atomically (a reader sees the old or the new file); returns its URI."""
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes | None:
        """The file at ``key``, or None if there is none."""
        raise NotImplementedError

    def list_keys(self, prefix: str, suffix: str = "") -> list[str]:
        """Keys directly under the folder ``prefix`` (not in its sub-folders) ending with
        ``suffix``, in name order."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a key that is not there is not an error."""
        raise NotImplementedError


class LocalLake(Lake):
    """The lake as a local folder (the embedded default)."""

    root: str

    def uri(self, key: str = "") -> str:
        return str(Path(self.root) / key) if key else str(Path(self.root))

    def write_bytes(self, key: str, data: bytes) -> str:
        return str(write_atomically(Path(self.root) / key, data))

    def read_bytes(self, key: str) -> bytes | None:
        path = Path(self.root) / key
        return path.read_bytes() if path.is_file() else None

    def list_keys(self, prefix: str, suffix: str = "") -> list[str]:
        folder = Path(self.root) / prefix
        return sorted(f"{prefix}/{p.name}" for p in folder.glob(f"*{suffix}") if p.is_file()) if folder.exists() else []

    def delete(self, key: str) -> None:
        (Path(self.root) / key).unlink(missing_ok=True)
