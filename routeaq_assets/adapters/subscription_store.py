"""Where subscriptions and the alerts sent to them are kept: one interface, two backends.

- Embedded (default): a DuckDB file, ``$ROUTEAQ_HOME/subscriptions.duckdb``. The forecast service
  (which adds, confirms and removes subscriptions) and Dagster (which sends the alerts) are
  separate processes, and DuckDB lets one process write a file or many read it: every call opens
  a short connection under ``adapters.locks.file_lock`` on ``subscriptions.duckdb.lock`` and closes it.
- Production: PostgreSQL, when ``ROUTEAQ_SUBSCRIPTIONS_DB=postgresql://...`` is set (several
  service replicas and the Dagster run workers then share one store).

Both run the same SQL (``?`` placeholders, rewritten to ``%s`` for psycopg2). Only hashes of the
link tokens are stored: the confirmation token's and the unsubscribe token of the confirmation
message in ``subscriptions``, and each alert's own unsubscribe token in ``sent_alerts``.
Unsubscribing deletes the subscription (with its address or URL) and its sent alerts.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator

from routeaq_assets.adapters.locks import file_lock
from routeaq_assets.adapters.redact import redact_uri
from routeaq_assets.core.environment import Settings
from routeaq_assets.core.subscriptions import Alert, Subscription, rank

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS subscriptions (
        id TEXT PRIMARY KEY, channel TEXT NOT NULL, destination TEXT NOT NULL, band TEXT NOT NULL, sites TEXT NOT NULL,
        status TEXT NOT NULL, confirm_token_hash TEXT NOT NULL, unsubscribe_token_hash TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL, confirmed_at TIMESTAMPTZ)""",
    """CREATE TABLE IF NOT EXISTS sent_alerts (
        subscription_id TEXT NOT NULL, site_id TEXT NOT NULL, day DATE NOT NULL, band TEXT NOT NULL, daily_index INTEGER,
        unsubscribe_token_hash TEXT NOT NULL, sent_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (subscription_id, site_id, day, band))""",
)
COLUMNS = "id, channel, destination, band, sites, status"


def _subscription(row: tuple) -> Subscription:
    return Subscription(row[0], row[1], row[2], row[3], tuple(row[4].split(",")), row[5])


class SubscriptionStore:
    """The store's operations, on a backend's ``_cursor`` (a context giving a DB-API cursor
    inside one transaction, committed when the block ends)."""

    placeholder = "?"

    def _cursor(self, write: bool):  # noqa: ANN202 - a context manager of a DB-API cursor
        raise NotImplementedError

    def _run(self, cursor, sql: str, params: tuple = ()) -> None:  # noqa: ANN001
        cursor.execute(sql.replace("?", self.placeholder), params)

    def create_schema(self) -> None:
        with self._cursor(write=True) as cur:
            for statement in SCHEMA:
                self._run(cur, statement)

    def add_pending(self, subscription: Subscription, confirm_hash: str, unsubscribe_hash: str) -> None:
        with self._cursor(write=True) as cur:
            self._run(
                cur, f"INSERT INTO subscriptions ({COLUMNS}, confirm_token_hash, unsubscribe_token_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (subscription.id, subscription.channel, subscription.destination, subscription.band, ",".join(subscription.sites), "pending",
                 confirm_hash, unsubscribe_hash, datetime.now(timezone.utc)),
            )

    def get(self, subscription_id: str) -> Subscription | None:
        with self._cursor(write=False) as cur:
            self._run(cur, f"SELECT {COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,))
            row = cur.fetchone()
        return _subscription(row) if row else None

    def confirm(self, confirm_hash: str) -> tuple[str, str] | None:
        """Confirm the subscription whose confirmation token hashes to ``confirm_hash``: (its id,
        "confirmed" or "already confirmed"), or None for no such subscription."""
        with self._cursor(write=True) as cur:
            self._run(cur, "SELECT id, status FROM subscriptions WHERE confirm_token_hash = ?", (confirm_hash,))
            row = cur.fetchone()
            if row is None:
                return None
            if row[1] == "confirmed":
                return row[0], "already confirmed"
            self._run(cur, "UPDATE subscriptions SET status = 'confirmed', confirmed_at = ? WHERE id = ?", (datetime.now(timezone.utc), row[0]))
            return row[0], "confirmed"

    def unsubscribe(self, unsubscribe_hash: str) -> str | None:
        """Delete the subscription that the token belongs to (from its confirmation message or
        any alert) and its sent alerts; its id, or None when nothing matches (already gone)."""
        with self._cursor(write=True) as cur:
            self._run(cur, "SELECT id FROM subscriptions WHERE unsubscribe_token_hash = ?", (unsubscribe_hash,))
            row = cur.fetchone()
            if row is None:
                self._run(cur, "SELECT subscription_id FROM sent_alerts WHERE unsubscribe_token_hash = ?", (unsubscribe_hash,))
                row = cur.fetchone()
            if row is None:
                return None
            self.remove(row[0], cur)
            return row[0]

    def remove(self, subscription_id: str, cur=None) -> None:  # noqa: ANN001
        if cur is None:
            with self._cursor(write=True) as cur:
                return self.remove(subscription_id, cur)
        self._run(cur, "DELETE FROM sent_alerts WHERE subscription_id = ?", (subscription_id,))
        self._run(cur, "DELETE FROM subscriptions WHERE id = ?", (subscription_id,))

    def confirmed(self) -> list[Subscription]:
        with self._cursor(write=False) as cur:
            self._run(cur, f"SELECT {COLUMNS} FROM subscriptions WHERE status = 'confirmed' ORDER BY created_at, id")
            return [_subscription(row) for row in cur.fetchall()]

    def expire_pending(self, created_before: datetime) -> int:
        """Delete subscriptions never confirmed since ``created_before``: an address someone gave
        and its owner never confirmed is not kept."""
        with self._cursor(write=True) as cur:
            self._run(cur, "SELECT count(*) FROM subscriptions WHERE status = 'pending' AND created_at < ?", (created_before,))
            (count,) = cur.fetchone()
            self._run(cur, "DELETE FROM subscriptions WHERE status = 'pending' AND created_at < ?", (created_before,))
        return int(count)

    def sent_bands(self, days: list[date]) -> dict[tuple[str, str, date], str]:
        """(subscription, site, day) -> the highest band alerted, for ``days``."""
        sent: dict[tuple[str, str, date], str] = {}
        with self._cursor(write=False) as cur:
            for day in days:
                self._run(cur, "SELECT subscription_id, site_id, day, band FROM sent_alerts WHERE day = ?", (day,))
                for subscription_id, site_id, on, band in cur.fetchall():
                    key = (subscription_id, site_id, on)
                    if key not in sent or rank(band) > rank(sent[key]):
                        sent[key] = band
        return sent

    def record_sent(self, alert: Alert, unsubscribe_hash: str) -> None:
        """Record a delivered alert; recording it twice keeps one row."""
        with self._cursor(write=True) as cur:
            self._run(
                cur,
                "INSERT INTO sent_alerts (subscription_id, site_id, day, band, daily_index, unsubscribe_token_hash, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (alert.subscription_id, alert.site_id, alert.day, alert.band, alert.index, unsubscribe_hash, datetime.now(timezone.utc)),
            )

    def counts(self) -> dict[str, int]:
        """Rows by status, and sent alerts: for tests and the asset's metadata."""
        with self._cursor(write=False) as cur:
            self._run(cur, "SELECT status, count(*) FROM subscriptions GROUP BY status")
            found = {status: int(n) for status, n in cur.fetchall()}
            self._run(cur, "SELECT count(*) FROM sent_alerts")
            found["sent_alerts"] = int(cur.fetchone()[0])
        return {"pending": 0, "confirmed": 0, **found}


class DuckDBSubscriptionStore(SubscriptionStore):
    def __init__(self, path: Path, lock_timeout_s: float = 30.0):
        self.path, self.lock_timeout_s = Path(path), lock_timeout_s
        self.create_schema()

    def __repr__(self) -> str:
        return f"DuckDBSubscriptionStore({self.path})"

    @contextmanager
    def _cursor(self, write: bool) -> Iterator:
        import duckdb

        write = write or not self.path.exists()  # the first opener creates the file
        lock = self.path.with_name(self.path.name + ".lock")
        with file_lock(lock, exclusive=write, timeout_s=self.lock_timeout_s, what=f"subscription store {self.path}"):
            con = duckdb.connect(str(self.path), read_only=not write)
            try:
                con.execute("SET TimeZone = 'UTC'")
                con.execute("BEGIN TRANSACTION")
                yield con
                con.execute("COMMIT")
            finally:
                con.close()  # an uncommitted transaction is rolled back


class PostgresSubscriptionStore(SubscriptionStore):
    placeholder = "%s"

    def __init__(self, url: str):
        self.url = url
        self.create_schema()

    def __repr__(self) -> str:
        return f"PostgresSubscriptionStore({redact_uri(self.url)})"

    @contextmanager
    def _cursor(self, write: bool) -> Iterator:
        import psycopg2

        con = psycopg2.connect(self.url, connect_timeout=10)
        try:
            with con:  # commits at the end of the block, rolls back on an exception
                with con.cursor() as cur:
                    yield cur
        finally:
            con.close()


def subscription_store(settings: Settings) -> SubscriptionStore:
    """The store ``ROUTEAQ_SUBSCRIPTIONS_DB`` names: PostgreSQL for ``postgresql://...``, else the
    DuckDB file in the home (the setting is checked in ``core.environment``)."""
    if settings.subscriptions_db:
        return PostgresSubscriptionStore(settings.subscriptions_db)
    return DuckDBSubscriptionStore(settings.subscriptions_path)
