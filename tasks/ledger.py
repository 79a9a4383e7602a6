"""Ledger: the durable record of every (integration, document, version), each integration's cursor,
and an audit trail of events. SQLAlchemy; a SQLite file by default, PostgreSQL at scale.

A delivery is recorded only after the connector confirmed it. One run per
integration at a time holds the integration's lock (`Ledger.lock`), which dies
with the process that held it: an advisory lock on PostgreSQL, a file lock
beside a SQLite ledger.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PENDING, DELIVERED, FAILED, NEEDS_ATTENTION, SUPERSEDED = "pending", "delivered", "failed", "needs-attention", "superseded"
OPEN_STATUSES = (PENDING, FAILED)
UNREADABLE = "unreadable"  # version of a document whose metadata could not be read

metadata = sa.MetaData()
documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("integration", sa.String(200), nullable=False),
    sa.Column("doc_id", sa.String(300), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("remote_ref", sa.Text),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("sending_since", sa.DateTime(timezone=True)),
    sa.Column("approved_at", sa.DateTime(timezone=True)),
    sa.Column("fingerprint", sa.Text),
    sa.Column("doc_type", sa.String(100)),
    sa.Column("number", sa.String(200)),
    sa.Column("supplier", sa.String(300)),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_run", sa.String(64)),
    sa.UniqueConstraint("integration", "doc_id", "version", name="uq_documents_key"),
    sa.Index("ix_documents_status", "integration", "status"),
)
cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("integration", sa.String(200), primary_key=True),
    sa.Column("position", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_run", sa.String(64)),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("integration", sa.String(200), nullable=False),
    sa.Column("doc_id", sa.String(300)),
    sa.Column("version", sa.String(100)),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("run", sa.String(64)),
    sa.Index("ix_events_doc", "integration", "doc_id"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything we store is UTC.
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class LockTimeout(RuntimeError):
    pass


class Ledger:
    """Access to the ledger database."""

    def __init__(self, url: str):
        self.url = sa.engine.make_url(url)
        kwargs: dict[str, Any] = {"future": True}
        if self.url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 60}
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.url.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    def __repr__(self) -> str:  # never show a password
        return f"Ledger({self.url.render_as_string(hide_password=True)})"

    @classmethod
    def from_settings(cls) -> Ledger:
        from tasks.settings import get_settings

        return cls(get_settings().resolved_ledger_url())

    def dispose(self) -> None:
        self.engine.dispose()

    # -- lock -----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, integration: str, timeout: float = 600.0) -> Iterator[None]:
        """Hold the integration's lock for a run; waits up to `timeout` seconds for another run to end."""
        deadline = time.monotonic() + timeout
        if self.url.get_backend_name() == "postgresql":
            key = int.from_bytes(hashlib.sha256(integration.encode()).digest()[:8], "big", signed=True)
            with self.engine.connect() as conn:
                while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"integration {integration}: another run still holds the lock after {timeout:.0f}s")
                    time.sleep(0.2)
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            return
        folder = Path(self.url.database or "ledger").with_suffix(".locks")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (hashlib.sha256(integration.encode()).hexdigest()[:16] + ".lock")
        with path.open("a+") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"integration {integration}: another run still holds the lock after {timeout:.0f}s") from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- cursor ---------------------------------------------------------------
    def cursor(self, integration: str) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(cursors.c.position).where(cursors.c.integration == integration)).scalar()
        return _aware(value)

    def set_cursor(self, integration: str, position: datetime, run: str | None = None) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                cursors.update()
                .where(cursors.c.integration == integration)
                .values(position=position, updated_at=utcnow(), last_run=run)
            ).rowcount
            if not updated:
                conn.execute(cursors.insert().values(integration=integration, position=position, updated_at=utcnow(), last_run=run))
            conn.execute(events.insert().values(integration=integration, at=utcnow(), event="cursor", detail=position.isoformat(), run=run))

    # -- documents --------------------------------------------------------------
    def rows(self, integration: str, doc_ids: list[str] | None = None, statuses: tuple[str, ...] | None = None) -> list[dict]:
        query = sa.select(documents).where(documents.c.integration == integration)
        if doc_ids is not None:
            query = query.where(documents.c.doc_id.in_(doc_ids))
        if statuses is not None:
            query = query.where(documents.c.status.in_(statuses))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query.order_by(documents.c.id))]

    def row(self, integration: str, doc_id: str, version: str) -> dict | None:
        with self.engine.connect() as conn:
            r = conn.execute(
                sa.select(documents).where(
                    documents.c.integration == integration, documents.c.doc_id == doc_id, documents.c.version == version
                )
            ).first()
        return dict(r._mapping) if r else None

    def _upsert(self, conn, integration: str, doc_id: str, version: str, values: dict, run: str | None) -> None:
        now = utcnow()
        updated = conn.execute(
            documents.update()
            .where(documents.c.integration == integration, documents.c.doc_id == doc_id, documents.c.version == version)
            .values(**values, updated_at=now, last_run=run)
        ).rowcount
        if not updated:
            base = {"status": PENDING, "attempts": 0, **values}
            conn.execute(
                documents.insert().values(
                    integration=integration, doc_id=doc_id, version=version, first_seen=now, updated_at=now, last_run=run, **base
                )
            )

    def event(self, conn, integration: str, doc_id: str | None, version: str | None, event: str, detail: str | None, run: str | None) -> None:
        conn.execute(
            events.insert().values(integration=integration, doc_id=doc_id, version=version, at=utcnow(), event=event, detail=detail, run=run)
        )

    def start_attempt(self, integration: str, doc, info: dict, run: str | None) -> None:
        """Recorded before sending: a crash after this leaves a pending row to retry (with a lookup)."""
        with self.engine.begin() as conn:
            self._upsert(conn, integration, doc.id, doc.version, {"sending_since": utcnow(), **info}, run)
            # An older version of the document or an unreadable record is superseded by this one.
            conn.execute(
                documents.update()
                .where(
                    documents.c.integration == integration,
                    documents.c.doc_id == doc.id,
                    documents.c.version != doc.version,
                    documents.c.status.in_(OPEN_STATUSES + (NEEDS_ATTENTION,)),
                )
                .values(status=SUPERSEDED, updated_at=utcnow(), last_run=run)
            )
            self.event(conn, integration, doc.id, doc.version, "attempt", None, run)

    def mark_delivered(self, integration: str, doc_id: str, version: str, remote_ref: str, *, already_present: bool, run: str | None) -> None:
        with self.engine.begin() as conn:
            self._upsert(
                conn,
                integration,
                doc_id,
                version,
                {"status": DELIVERED, "remote_ref": remote_ref, "delivered_at": utcnow(), "sending_since": None, "last_error": None},
                run,
            )
            self.event(conn, integration, doc_id, version, "already-present" if already_present else "delivered", remote_ref, run)

    def mark_failed(self, integration: str, doc_id: str, version: str, error: str, *, permanent: bool, max_attempts: int, info: dict | None = None, run: str | None = None) -> str:
        """Record a failed attempt; a permanent error is parked as needs-attention after max_attempts runs."""
        with self.engine.begin() as conn:
            current = conn.execute(
                sa.select(documents.c.attempts).where(
                    documents.c.integration == integration, documents.c.doc_id == doc_id, documents.c.version == version
                )
            ).scalar() or 0
            attempts = current + 1
            status = NEEDS_ATTENTION if permanent and attempts >= max_attempts else FAILED
            self._upsert(
                conn,
                integration,
                doc_id,
                version,
                {"status": status, "attempts": attempts, "last_error": error[:2000], "sending_since": None, **(info or {})},
                run,
            )
            self.event(conn, integration, doc_id, version, status, error[:2000], run)
        return status

    def note_waiting(self, integration: str, doc_id: str, version: str, message: str, run: str | None) -> None:
        """A document that could not be read yet (still being written): kept pending, no attempt counted."""
        with self.engine.begin() as conn:
            self._upsert(conn, integration, doc_id, version, {"last_error": message[:2000]}, run)
            self.event(conn, integration, doc_id, version, "waiting", message[:2000], run)

    def supersede(self, integration: str, doc_id: str, version: str, why: str, run: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                documents.update()
                .where(documents.c.integration == integration, documents.c.doc_id == doc_id, documents.c.version == version)
                .values(status=SUPERSEDED, updated_at=utcnow(), last_run=run)
            )
            self.event(conn, integration, doc_id, version, SUPERSEDED, why, run)

    def events_of(self, integration: str, doc_id: str | None = None) -> list[dict]:
        query = sa.select(events).where(events.c.integration == integration)
        if doc_id is not None:
            query = query.where(events.c.doc_id == doc_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query.order_by(events.c.id))]

    def counts(self, integration: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(documents.c.status, sa.func.count())
                .where(documents.c.integration == integration)
                .group_by(documents.c.status)
            )
            return {status: n for status, n in rows}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
