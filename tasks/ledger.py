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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PENDING, DELIVERED, FAILED, NEEDS_ATTENTION, SUPERSEDED = "pending", "delivered", "failed", "needs-attention", "superseded"
DISCARDED = "discarded"  # a parked document an operator decided not to deliver (row and events kept)
OPEN_STATUSES = (PENDING, FAILED)
UNREADABLE = "unreadable"  # version of a document whose metadata could not be read



class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware datetime stored as UTC. SQLite keeps no offset: without this, 12:00+02:00
    would be stored as 12:00 and read back as 12:00 UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


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
    sa.Column("delivered_at", UTCDateTime()),
    sa.Column("sending_since", UTCDateTime()),
    sa.Column("approved_at", UTCDateTime()),
    sa.Column("fingerprint", sa.Text),
    sa.Column("doc_type", sa.String(100)),
    sa.Column("number", sa.String(200)),
    sa.Column("supplier", sa.String(300)),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("last_run", sa.String(64)),
    sa.UniqueConstraint("integration", "doc_id", "version", name="uq_documents_key"),
    sa.Index("ix_documents_status", "integration", "status"),
)
cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("integration", sa.String(200), primary_key=True),
    sa.Column("position", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("last_run", sa.String(64)),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("integration", sa.String(200), nullable=False),
    sa.Column("doc_id", sa.String(300)),
    sa.Column("version", sa.String(100)),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("run", sa.String(64)),
    sa.Index("ix_events_doc", "integration", "doc_id"),
)
# Backfills: one row per (integration, range, types, chunk size, force), and the chunks it finished,
# so a backfill run again after a crash, a cancel or failed chunks resumes where it stopped.
backfills = sa.Table(
    "backfills",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("integration", sa.String(200), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON: since, until, document_types, chunk, force
    sa.Column("status", sa.String(20), nullable=False),  # running | completed
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("last_run", sa.String(64)),
)
backfill_chunks = sa.Table(
    "backfill_chunks",
    metadata,
    sa.Column("backfill", sa.String(64), nullable=False),
    sa.Column("chunk_start", UTCDateTime(), nullable=False),
    sa.Column("chunk_end", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # done | failed
    sa.Column("summary", sa.Text),
    sa.Column("run", sa.String(64)),  # the sync run that did the chunk
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("backfill", "chunk_start"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class LockTimeout(RuntimeError):
    pass


@dataclass
class Result:
    """The outcome of sending one document: a confirmed delivery (error None) or a failed attempt."""

    doc_id: str
    version: str
    remote_ref: str | None = None
    already_present: bool = False
    error: str | None = None
    permanent: bool = False
    info: dict | None = None


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
        # Runs starting together on a new ledger would race to create the tables ("table documents
        # already exists"): one at a time, under the same kind of lock a run takes.
        with self.lock("docroute-ledger-schema", timeout=120):
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
                # A session lock outlives the transaction: commit, so the session is not left "idle in
                # transaction" for the whole run (idle_in_transaction_session_timeout would end it, lock and all).
                while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                    conn.commit()
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"integration {integration}: another run still holds the lock after {timeout:.0f}s")
                    time.sleep(0.2)
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
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
        with self.engine.connect() as conn:  # UTCDateTime gives it back timezone-aware
            return conn.execute(sa.select(cursors.c.position).where(cursors.c.integration == integration)).scalar()

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

    # -- backfills ------------------------------------------------------------
    def open_backfill(self, backfill_id: str, integration: str, spec: str, chunks: int, run: str | None) -> dict[datetime, dict]:
        """Start or resume a backfill; returns its chunks already done (chunk start -> row).

        An unfinished backfill (crashed, cancelled, chunks failed) resumes: its done chunks are skipped.
        A completed one run again starts a new pass over every chunk (the ledger still delivers nothing twice)."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(backfills).where(backfills.c.id == backfill_id)).first()
            if row is None:
                conn.execute(
                    backfills.insert().values(
                        id=backfill_id, integration=integration, spec=spec, status="running", chunks=chunks,
                        started_at=now, updated_at=now, last_run=run,
                    )
                )
                return {}
            if row.status == "completed":
                conn.execute(backfill_chunks.delete().where(backfill_chunks.c.backfill == backfill_id))
                conn.execute(
                    backfills.update().where(backfills.c.id == backfill_id).values(status="running", started_at=now, updated_at=now, last_run=run)
                )
                return {}
            conn.execute(backfills.update().where(backfills.c.id == backfill_id).values(updated_at=now, last_run=run))
            done = conn.execute(
                sa.select(backfill_chunks).where(backfill_chunks.c.backfill == backfill_id, backfill_chunks.c.status == "done")
            )
            return {r.chunk_start: dict(r._mapping) for r in done}

    def record_backfill_chunk(self, backfill_id: str, start: datetime, end: datetime, status: str, summary: str, run: str | None) -> None:
        """Record one chunk of a backfill as done or failed (a failed chunk is done again on resume)."""
        now = utcnow()
        with self.engine.begin() as conn:
            updated = conn.execute(
                backfill_chunks.update()
                .where(backfill_chunks.c.backfill == backfill_id, backfill_chunks.c.chunk_start == start)
                .values(chunk_end=end, status=status, summary=summary[:2000], run=run, updated_at=now)
            ).rowcount
            if not updated:
                conn.execute(
                    backfill_chunks.insert().values(
                        backfill=backfill_id, chunk_start=start, chunk_end=end, status=status, summary=summary[:2000], run=run, updated_at=now
                    )
                )
            conn.execute(backfills.update().where(backfills.c.id == backfill_id).values(updated_at=now))

    def finish_backfill(self, backfill_id: str, run: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(backfills.update().where(backfills.c.id == backfill_id).values(status="completed", updated_at=utcnow(), last_run=run))

    def backfill_state(self, backfill_id: str) -> tuple[dict | None, list[dict]]:
        """A backfill's row and its chunks (oldest first)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(backfills).where(backfills.c.id == backfill_id)).first()
            chunks = conn.execute(
                sa.select(backfill_chunks).where(backfill_chunks.c.backfill == backfill_id).order_by(backfill_chunks.c.chunk_start)
            )
            return (dict(row._mapping) if row else None), [dict(c._mapping) for c in chunks]

    def failed_in_run(self, integration: str, run: str) -> list[str]:
        """Documents whose last outcome in this flow run (all its attempts share the run id) was a failure."""
        outcome = (DELIVERED, "already-present", FAILED, NEEDS_ATTENTION, SUPERSEDED)
        last: dict[str, str] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.doc_id, events.c.event)
                .where(events.c.integration == integration, events.c.run == run, events.c.event.in_(outcome))
                .order_by(events.c.id)
            )
            for doc_id, event in rows:
                if doc_id is not None:
                    last[doc_id] = event
        return [d for d, e in last.items() if e in (FAILED, NEEDS_ATTENTION)]

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

    def _existing(self, conn, integration: str, doc_ids: list[str]) -> dict[tuple[str, str], Any]:
        found: dict[tuple[str, str], Any] = {}
        unique = list(dict.fromkeys(doc_ids))
        for i in range(0, len(unique), 500):
            rows = conn.execute(
                sa.select(documents.c.doc_id, documents.c.version, documents.c.attempts, documents.c.status).where(
                    documents.c.integration == integration, documents.c.doc_id.in_(unique[i : i + 500])
                )
            )
            found.update({(r.doc_id, r.version): r for r in rows})
        return found

    def _write(self, conn, integration: str, changes: list[tuple[str, str, dict]], run: str | None) -> None:
        """Insert or update many rows in one statement each per set of keys (an executemany takes the
        first dict's keys and would silently drop the others' extra values)."""
        if not changes:
            return
        groups: dict[tuple[str, ...], list[tuple[str, str, dict]]] = {}
        for change in changes:
            groups.setdefault(tuple(sorted(change[2])), []).append(change)
        if len(groups) > 1:
            for group in groups.values():
                self._write(conn, integration, group, run)
            return
        now = utcnow()
        existing = self._existing(conn, integration, [c[0] for c in changes])
        inserts, updates = [], []
        for doc_id, version, values in changes:
            if (doc_id, version) in existing:
                updates.append({"b_doc": doc_id, "b_ver": version, **values, "updated_at": now, "last_run": run})
            else:
                inserts.append(
                    {
                        "integration": integration, "doc_id": doc_id, "version": version, "status": PENDING, "attempts": 0,
                        "first_seen": now, "updated_at": now, "last_run": run, **values,
                    }
                )
        if inserts:
            conn.execute(documents.insert(), inserts)
        if updates:
            conn.execute(
                documents.update().where(
                    documents.c.integration == integration,
                    documents.c.doc_id == sa.bindparam("b_doc"),
                    documents.c.version == sa.bindparam("b_ver"),
                ),
                updates,
            )

    def _events(self, conn, integration: str, rows: list[tuple[str | None, str | None, str, str | None]], run: str | None) -> None:
        if rows:
            now = utcnow()
            conn.execute(
                events.insert(),
                [{"integration": integration, "doc_id": d, "version": v, "at": now, "event": e, "detail": x, "run": run} for d, v, e, x in rows],
            )

    def event(self, conn, integration: str, doc_id: str | None, version: str | None, event: str, detail: str | None, run: str | None) -> None:
        self._events(conn, integration, [(doc_id, version, event, detail)], run)

    def begin_attempts(self, integration: str, entries: list[tuple[str, str, dict]], run: str | None) -> None:
        """Recorded before sending (doc_id, version, info): a crash after this leaves a row to retry with a lookup.

        An older version of the document, or an unreadable record of it, is superseded."""
        if not entries:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            self._write(conn, integration, [(d, v, {"sending_since": now, **info}) for d, v, info in entries], run)
            conn.execute(
                documents.update().where(
                    documents.c.integration == integration,
                    documents.c.doc_id == sa.bindparam("b_doc"),
                    documents.c.version != sa.bindparam("b_ver"),
                    # no IN: expanding parameters cannot be used with executemany
                    sa.or_(*(documents.c.status == s for s in OPEN_STATUSES + (NEEDS_ATTENTION,))),
                ),
                [{"b_doc": d, "b_ver": v, "status": SUPERSEDED, "updated_at": now, "last_run": run} for d, v, _ in entries],
            )
            self._events(conn, integration, [(d, v, "attempt", None) for d, v, _ in entries], run)

    def start_attempt(self, integration: str, doc, info: dict, run: str | None) -> None:
        self.begin_attempts(integration, [(doc.id, doc.version, info)], run)

    def record(self, integration: str, results: list[Result], *, max_attempts: int, run: str | None) -> dict[str, str]:
        """Record confirmed deliveries and failed attempts in one transaction; returns doc_id -> status.

        A permanent error is parked as needs-attention once a document has failed max_attempts runs."""
        statuses: dict[str, str] = {}
        if not results:
            return statuses
        now = utcnow()
        with self.engine.begin() as conn:
            existing = self._existing(conn, integration, [r.doc_id for r in results])
            delivered, failed, evts = [], {}, []
            for r in results:
                if r.error is None:
                    values = {"status": DELIVERED, "remote_ref": r.remote_ref, "delivered_at": now, "sending_since": None, "last_error": None}
                    delivered.append((r.doc_id, r.version, values))
                    statuses[r.doc_id] = DELIVERED
                    evts.append((r.doc_id, r.version, "already-present" if r.already_present else "delivered", r.remote_ref))
                else:
                    row = existing.get((r.doc_id, r.version))
                    attempts = (row.attempts if row is not None else 0) + 1
                    status = NEEDS_ATTENTION if r.permanent and attempts >= max_attempts else FAILED
                    values = {"status": status, "attempts": attempts, "last_error": r.error[:2000], "sending_since": None, **(r.info or {})}
                    failed.setdefault(tuple(sorted(values)), []).append((r.doc_id, r.version, values))
                    statuses[r.doc_id] = status
                    evts.append((r.doc_id, r.version, status, r.error[:2000]))
            self._write(conn, integration, delivered, run)
            for group in failed.values():
                self._write(conn, integration, group, run)
            self._events(conn, integration, evts, run)
        return statuses

    def mark_delivered(self, integration: str, doc_id: str, version: str, remote_ref: str, *, already_present: bool, run: str | None) -> None:
        self.record(integration, [Result(doc_id, version, remote_ref=remote_ref, already_present=already_present)], max_attempts=1, run=run)

    def mark_failed(self, integration: str, doc_id: str, version: str, error: str, *, permanent: bool, max_attempts: int, info: dict | None = None, run: str | None = None) -> str:
        """Record a failed attempt; a permanent error is parked as needs-attention after max_attempts runs."""
        result = Result(doc_id, version, error=error, permanent=permanent, info=info)
        return self.record(integration, [result], max_attempts=max_attempts, run=run)[doc_id]

    def note_waiting(self, integration: str, doc_id: str, version: str, message: str, run: str | None) -> None:
        """A document that could not be read yet (still being written): kept pending, no attempt counted."""
        with self.engine.begin() as conn:
            self._write(conn, integration, [(doc_id, version, {"last_error": message[:2000]})], run)
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

    def add_events(self, integration: str, rows: list[tuple[str | None, str | None, str, str | None]], run: str | None) -> None:
        """Append audit events (doc_id, version, event, detail) in one transaction."""
        with self.engine.begin() as conn:
            self._events(conn, integration, rows, run)

    def discard(self, integration: str, doc_ids: list[str], detail: str, run: str | None) -> list[dict]:
        """Mark these documents' parked (needs-attention) rows discarded, with a `discarded` event each.

        Rows are never deleted. Returns the rows that were discarded (as they were before)."""
        now = utcnow()
        parked = (documents.c.integration == integration, documents.c.status == NEEDS_ATTENTION)
        done: list[dict] = []
        with self.engine.begin() as conn:
            for i in range(0, len(doc_ids), 500):
                chunk = doc_ids[i : i + 500]
                rows = [dict(r._mapping) for r in conn.execute(sa.select(documents).where(*parked, documents.c.doc_id.in_(chunk)))]
                conn.execute(
                    documents.update().where(*parked, documents.c.doc_id.in_(chunk)).values(status=DISCARDED, updated_at=now, last_run=run)
                )
                self._events(conn, integration, [(r["doc_id"], r["version"], DISCARDED, detail) for r in rows], run)
                done.extend(rows)
        return done

    def status_summary(self, integrations: list[str], day_start: datetime, week_start: datetime) -> dict[str, dict[str, Any]]:
        """Per integration, in three grouped queries: documents per status, delivered since day_start and
        since week_start, last delivery, last error of a failed or parked document, cursor."""
        out: dict[str, dict[str, Any]] = {
            key: {"counts": {}, "delivered_today": 0, "delivered_week": 0, "last_delivered": None, "last_error": None,
                  "last_error_doc": None, "last_error_at": None, "cursor": None, "cursor_updated": None}
            for key in integrations
        }
        today = sa.func.sum(sa.case((documents.c.delivered_at >= day_start, 1), else_=0))
        week = sa.func.sum(sa.case((documents.c.delivered_at >= week_start, 1), else_=0))
        # the newest failed or parked row of each integration (window functions: SQLite >= 3.25 and PostgreSQL)
        newest = sa.func.row_number().over(
            partition_by=documents.c.integration, order_by=(documents.c.updated_at.desc(), documents.c.id.desc())
        )
        with self.engine.connect() as conn:
            for i in range(0, len(integrations), 500):
                chunk = integrations[i : i + 500]
                rows = conn.execute(
                    sa.select(documents.c.integration, documents.c.status, sa.func.count(), today, week, sa.func.max(documents.c.delivered_at))
                    .where(documents.c.integration.in_(chunk))
                    .group_by(documents.c.integration, documents.c.status)
                )
                for integ, status, n, n_today, n_week, last in rows:
                    entry = out[integ]
                    entry["counts"][status] = n
                    entry["delivered_today"] += n_today or 0
                    entry["delivered_week"] += n_week or 0
                    if last is not None:  # max() keeps the column's type: an aware datetime
                        entry["last_delivered"] = max(filter(None, (entry["last_delivered"], last)))
                ranked = (
                    sa.select(documents.c.integration, documents.c.doc_id, documents.c.last_error, documents.c.updated_at, newest.label("n"))
                    .where(documents.c.integration.in_(chunk), documents.c.status.in_((FAILED, NEEDS_ATTENTION)))
                    .subquery()
                )
                for r in conn.execute(sa.select(ranked).where(ranked.c.n == 1)):
                    out[r.integration].update(last_error=r.last_error, last_error_doc=r.doc_id, last_error_at=r.updated_at)
                for r in conn.execute(sa.select(cursors).where(cursors.c.integration.in_(chunk))):
                    out[r.integration].update(cursor=r.position, cursor_updated=r.updated_at)
        return out

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
