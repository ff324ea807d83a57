"""Files the service and the pipeline share in production: key prefixes of the lake's S3 bucket.

The service's prediction log (``{prefix}/predictions/``) and the yearly history files
(``{prefix}/history/``) live here when ``ROUTEAQ_ENV=production``; embedded, both stay in folders
under ``ROUTEAQ_HOME`` and ``shared_folder`` answers None. The client is boto3's, built from the
settings dagster-aws's ``S3Resource`` is built from in ``production.py`` (``AWS_REGION``,
``AWS_ENDPOINT_URL``, the ``AWS_*`` keys or an IAM role): the service imports no dagster, so it
cannot take the resource itself. A Dagster resource passes its ``S3Resource`` client instead."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path

from routeaq_assets.core.environment import ConfigurationError, Settings
from routeaq_assets.core.files import write_atomically


class SharedFolder:
    """Objects under ``s3://{bucket}/{prefix}/``, named relative to it. Each ``put`` is one PUT of a
    whole object, so a reader sees the old object or the new one, never half."""

    def __init__(self, client, bucket: str, prefix: str):  # noqa: ANN001 - a boto3 S3 client
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put(self, name: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=data)
        return f"{self.uri}/{name}"

    def objects(self, under: str = "") -> dict[str, str]:
        """Name -> ETag of every object whose name starts with ``under``."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{under}")
        return {o["Key"].removeprefix(f"{self.prefix}/"): o["ETag"] for page in pages for o in page.get("Contents", [])}

    def read(self, name: str) -> bytes | None:
        """The object ``name``'s bytes, or None if there is none."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def modified(self, name: str) -> float | None:
        """When the object was last written (a POSIX time), or None if there is none."""
        from botocore.exceptions import ClientError

        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return answer["LastModified"].astimezone(timezone.utc).timestamp()

    def download(self, name: str, path: Path) -> Path:
        """The object ``name`` into ``path``, replaced atomically (a reader never sees half a file)."""

        def fetch(partial: Path) -> None:
            with open(partial, "wb") as out:
                self.client.download_fileobj(self.bucket, f"{self.prefix}/{name}", out)

        return write_atomically(path, fetch)


def s3_client(settings: Settings):  # noqa: ANN201 - a boto3 S3 client
    """A boto3 S3 client with short timeouts and three attempts (as the production ``S3Resource``):
    a service whose S3 is down keeps answering and retries its uploads later."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        region_name=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url or None,
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
    )


def shared_folder(settings: Settings, name: str) -> SharedFolder | None:
    """The shared folder ``name`` (``core.shared_folders``: ``PREDICTIONS``, ``HISTORY`` or ``REPORTS``) of a production deployment;
    None when embedded, where the files stay under ``ROUTEAQ_HOME``."""
    if settings.environment != "production":
        return None
    if not settings.s3_bucket:
        raise ConfigurationError(f"ROUTEAQ_ENV=production keeps the {name} files in S3: set ROUTEAQ_S3_BUCKET (the lake's bucket)")
    return SharedFolder(s3_client(settings), settings.s3_bucket, f"{settings.s3_prefix}/{name}")

