"""Ledger: the durable record of every (integration, document, version), each integration's cursor,
and an audit trail of events. SQLAlchemy; a SQLite file by default, PostgreSQL at scale.

A delivery is recorded only after the connector confirmed it. The statuses come from the document
state machine (tasks/engine/states.py): the ledger stores what it decides and never decides
itself. One run per integration at a time holds the integration's lock (`Ledger.lock`,
tasks/locks.py), which dies with the process that held it. The schema is versioned with Alembic
(tasks/ledger_migrations/): a ledger written by an older docroute is migrated in place, rows kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tasks import locks
from tasks.engine import states
from tasks.engine.states import (  # noqa: F401 - the status names, for the ledger's readers
    DELIVERED,
    DISCARDED,
    FAILED,
    NEEDS_ATTENTION,
    PENDING,
    SUBMITTED,
    SUPERSEDED,
)
from tasks.settings import get_settings

OPEN_STATUSES = states.OPEN
_SHARED: dict[str, Ledger] = {}  # URL -> the ledger a warm process shares between runs
_SHARED_LOCK = threading.Lock()
UNREADABLE = "unreadable"  # version of a document whose metadata could not be read
LockTimeout = locks.LockTimeout
MIGRATIONS = Path(__file__).resolve().parent / "ledger_migrations"
SCHEMA_VERSION = "0003"  # the newest revision in tasks/ledger_migrations/versions


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
    sa.Column("detail", sa.Text),  # JSON: what the connector said of the delivery (status() reads it back)
    sa.Column("submitted_at", UTCDateTime()),  # when the destination took it, to decide later
    sa.Column("remote_path", sa.Text),  # the mapped path of its main file: no other document may be written there
    sa.UniqueConstraint("integration", "doc_id", "version", name="uq_documents_key"),
    sa.Index("ix_documents_status", "integration", "status"),
    sa.Index("ix_documents_remote_path", "integration", "remote_path"),
)
cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("integration", sa.String(200), primary_key=True),
    sa.Column("position", sa.Text),  # the source's own cursor, opaque (a time, a deltaLink, a page token)
    sa.Column("checked_until", UTCDateTime()),  # the last scheduled run's window end: the next window starts here minus the lookback
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


@dataclass
class Result:
    """The outcome of sending one document: a confirmed delivery (error None) or a failed attempt.

    `accepted` False: the destination took it and decides later (recorded submitted); `detail` is
    what the connector said of the delivery (stored as JSON)."""

    doc_id: str
    version: str
    remote_ref: str | None = None
    already_present: bool = False
    error: str | None = None
    permanent: bool = False
    info: dict | None = None
    accepted: bool = True
    detail: dict | None = None
    waiting: bool = False  # not sent, through no fault of the document (a daily budget used up): no attempt counted


@dataclass(frozen=True)
class DocumentRow(Mapping):
    """One ledger row: a document version's status and history. Read by attribute or by column name."""

    id: int
    integration: str
    doc_id: str
    version: str
    status: str
    attempts: int
    last_error: str | None
    remote_ref: str | None
    delivered_at: datetime | None
    sending_since: datetime | None
    approved_at: datetime | None
    fingerprint: str | None
    doc_type: str | None
    number: str | None
    supplier: str | None
    first_seen: datetime
    updated_at: datetime
    last_run: str | None
    detail: str | None
    submitted_at: datetime | None
    remote_path: str | None

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(_ROW_FIELDS)

    def __len__(self) -> int:
        return len(_ROW_FIELDS)

    @property
    def details(self) -> dict:
        """`detail` parsed (the connector's own data about the delivery)."""
        return json.loads(self.detail) if self.detail else {}


_ROW_FIELDS = tuple(f.name for f in fields(DocumentRow))


def _row(r: Any) -> DocumentRow:
    return DocumentRow(**{k: r._mapping[k] for k in _ROW_FIELDS})


@dataclass(frozen=True)
class Cursor:
    """An integration's cursor: the source's opaque position and the time the last scheduled run checked up to."""

    position: str | None
    checked_until: datetime | None
    updated_at: datetime
    last_run: str | None


class Ledger:
    """Access to the ledger database."""

    def __init__(self, url: str, pool_size: int | None = None):
        self.url = sa.engine.make_url(url)
        kwargs: dict[str, Any] = {"future": True}
        if self.url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 60}
        elif pool_size:  # a run holds one connection for its lock while it queries on others
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.url.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrate()

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION: a cheap check, and Alembic only when there is work.

        Runs starting together on a new ledger would race to create the tables ("table documents
        already exists"): one at a time, under the same kind of lock a run takes."""
        if self._schema_version() == SCHEMA_VERSION:
            return
        with self.lock("docroute-ledger-schema", timeout=120):
            current = self._schema_version()
            if current == SCHEMA_VERSION:
                return
            from tasks.ledger_migrations import (
                upgrade,  # Alembic: imported only when a schema changes
            )

            with self.engine.begin() as conn:
                if current is None and not sa.inspect(conn).has_table("documents"):
                    metadata.create_all(conn)  # a new ledger: today's schema at once
                    upgrade(conn, stamp_only=True)
                else:
                    upgrade(conn, legacy=current is None)  # a ledger from before migrations is revision 0001

    def _schema_version(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except sa.exc.DatabaseError:  # no alembic_version table yet
            return None

    def __repr__(self) -> str:  # never show a password
        return f"Ledger({self.url.render_as_string(hide_password=True)})"

    @classmethod
    def from_settings(cls) -> Ledger:
        """The ledger of DOCROUTE_LEDGER_URL / _BLOCK (default: a SQLite file in DOCROUTE_HOME). A warm
        process (the docroute worker) keeps one per URL: its connection pool serves every run."""
        settings = get_settings()
        url = settings.resolved_ledger_url()
        if not settings.warm:
            return cls(url)
        with _SHARED_LOCK:
            if url not in _SHARED:
                _SHARED[url] = cls(url, pool_size=16)
            return _SHARED[url]

    def dispose(self) -> None:
        self.engine.dispose()

    # -- lock -----------------------------------------------------------------
    def lock(self, integration: str, timeout: float = 600.0):
        """Hold the integration's lock for a run; waits up to `timeout` seconds for another run to end."""
        return locks.hold(self.engine, integration, timeout, what=f"integration {integration}", holder="run")

    # -- cursor ---------------------------------------------------------------
    def cursor(self, integration: str) -> Cursor | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(cursors).where(cursors.c.integration == integration)).first()
        return Cursor(r.position, r.checked_until, r.updated_at, r.last_run) if r else None

    def set_cursor(self, integration: str, position: str | None, checked_until: datetime, run: str | None = None) -> None:
        """Save the cursor once the run's documents are recorded: the source's position and the window end."""
        values = {"position": position, "checked_until": checked_until, "updated_at": utcnow(), "last_run": run}
        with self.engine.begin() as conn:
            if not conn.execute(cursors.update().where(cursors.c.integration == integration).values(**values)).rowcount:
                conn.execute(cursors.insert().values(integration=integration, **values))
            detail = json.dumps({"position": position, "checked_until": checked_until.isoformat()})
            conn.execute(events.insert().values(integration=integration, at=utcnow(), event="cursor", detail=detail, run=run))

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
        outcome = (DELIVERED, states.ALREADY_PRESENT, SUBMITTED, states.ACCEPTED, states.REJECTED, FAILED, NEEDS_ATTENTION, SUPERSEDED)
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
        return [d for d, e in last.items() if e in (FAILED, NEEDS_ATTENTION, states.REJECTED)]

    # -- documents --------------------------------------------------------------
    def rows(self, integration: str, doc_ids: list[str] | None = None, statuses: tuple[str, ...] | None = None) -> list[DocumentRow]:
        query = sa.select(documents).where(documents.c.integration == integration)
        if statuses is not None:
            query = query.where(documents.c.status.in_(statuses))
        with self.engine.connect() as conn:
            if doc_ids is None:
                return [_row(r) for r in conn.execute(query.order_by(documents.c.id))]
            found = []
            for i in range(0, len(doc_ids), 500):
                found += conn.execute(query.where(documents.c.doc_id.in_(doc_ids[i : i + 500])))
            return sorted((_row(r) for r in found), key=lambda r: r.id)

    def row(self, integration: str, doc_id: str, version: str) -> DocumentRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(
                sa.select(documents).where(
                    documents.c.integration == integration, documents.c.doc_id == doc_id, documents.c.version == version
                )
            ).first()
        return _row(r) if r else None

    def _existing(self, conn, integration: str, doc_ids: list[str]) -> dict[tuple[str, str], DocumentRow]:
        found: dict[tuple[str, str], DocumentRow] = {}
        unique = list(dict.fromkeys(doc_ids))
        for i in range(0, len(unique), 500):
            rows = conn.execute(
                sa.select(documents).where(documents.c.integration == integration, documents.c.doc_id.in_(unique[i : i + 500]))
            )
            found.update({(r.doc_id, r.version): _row(r) for r in rows})
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
                        "integration": integration, "doc_id": doc_id, "version": version, "status": states.PENDING, "attempts": 0,
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

    def _apply(self, conn, integration: str, decided: list[tuple[str, str, states.Decision, dict]], run: str | None) -> None:
        """Write the state machine's decisions (doc_id, version, decision, extra values) and their events."""
        changes = []
        for doc_id, version, d, extra in decided:
            values = {**extra, **d.values}
            if d.status is not None:
                values["status"] = d.status
            changes.append((doc_id, version, values))
        self._write(conn, integration, changes, run)
        self._events(conn, integration, [(doc_id, version, d.event, d.detail) for doc_id, version, d, _ in decided], run)

    def _events(self, conn, integration: str, rows: list[tuple[str | None, str | None, str, str | None]], run: str | None) -> None:
        if rows:
            now = utcnow()
            conn.execute(
                events.insert(),
                [{"integration": integration, "doc_id": d, "version": v, "at": now, "event": e, "detail": x, "run": run} for d, v, e, x in rows],
            )

    def begin_attempts(self, integration: str, entries: list[tuple[str, str, dict]], run: str | None) -> None:
        """Recorded before sending (doc_id, version, info): a crash after this leaves a row to retry with a lookup.

        Other versions of the document that the new one replaces (states.supersedes) are superseded."""
        if not entries:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            self._write(conn, integration, [(d, v, {"sending_since": now, **info}) for d, v, info in entries], run)
            versions = {d: v for d, v, _ in entries}
            replaced = [
                (r.doc_id, r.version, {"status": SUPERSEDED})
                for r in self._existing(conn, integration, list(versions)).values()
                if r.version != versions[r.doc_id] and states.supersedes(r)
            ]
            self._write(conn, integration, replaced, run)
            self._events(conn, integration, [(d, v, "attempt", None) for d, v, _ in entries], run)

    def start_attempt(self, integration: str, doc, info: dict, run: str | None) -> None:
        self.begin_attempts(integration, [(doc.id, doc.version, info)], run)

    def record(self, integration: str, results: list[Result], *, max_attempts: int, run: str | None) -> dict[str, str]:
        """Record confirmed deliveries and failed attempts in one transaction; returns doc_id -> status.

        What each result leads to is the state machine's: delivered or submitted, failed, or parked
        (needs-attention) once a permanent error has failed max_attempts runs."""
        statuses: dict[str, str] = {}
        if not results:
            return statuses
        now = utcnow()
        with self.engine.begin() as conn:
            existing = self._existing(conn, integration, [r.doc_id for r in results])
            decided = []
            for r in results:
                if r.waiting:
                    d = states.waiting(r.error or "")
                    extra = {"sending_since": None}
                elif r.error is None:
                    detail = json.dumps(r.detail, default=str) if r.detail else None
                    d = states.after_delivery(r.remote_ref, already_present=r.already_present, accepted=r.accepted, detail=detail, at=now)
                    extra = {}
                else:
                    row = existing.get((r.doc_id, r.version))
                    d = states.after_failure(row.attempts if row is not None else 0, r.error, permanent=r.permanent, max_attempts=max_attempts)
                    extra = dict(r.info or {})
                decided.append((r.doc_id, r.version, d, extra))
                statuses[r.doc_id] = d.status or PENDING
            self._apply(conn, integration, decided, run)
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
            self._apply(conn, integration, [(doc_id, version, states.waiting(message), {})], run)

    def supersede(self, integration: str, doc_id: str, version: str, why: str, run: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                documents.update()
                .where(documents.c.integration == integration, documents.c.doc_id == doc_id, documents.c.version == version)
                .values(status=SUPERSEDED, updated_at=utcnow(), last_run=run)
            )
            self._events(conn, integration, [(doc_id, version, SUPERSEDED, why)], run)

    def paths_held(self, integration: str) -> dict[str, str]:
        """Mapped path -> doc_id of every path a document holds at the destination (delivered or submitted)."""
        query = sa.select(documents.c.remote_path, documents.c.doc_id).where(
            documents.c.integration == integration, documents.c.remote_path.is_not(None),
            documents.c.status.in_((DELIVERED, SUBMITTED)),
        )
        with self.engine.connect() as conn:
            return dict(conn.execute(query.order_by(documents.c.id)).all())

    def submitted(self, integration: str, limit: int | None = None) -> list[DocumentRow]:
        """Versions waiting for the destination's verdict (oldest first)."""
        query = (
            sa.select(documents)
            .where(documents.c.integration == integration, documents.c.status == SUBMITTED)
            .order_by(documents.c.submitted_at, documents.c.id)
        )
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query.limit(limit) if limit else query)]

    def confirm(self, integration: str, verdicts: list[tuple[DocumentRow, str, str, dict | None]], *, max_attempts: int, run: str | None) -> dict[str, str]:
        """Record the destination's verdicts on submitted versions (row, state, reason, new detail) in one
        transaction; returns doc_id -> status for those that changed. A version no longer submitted (an
        operator or another run settled it meanwhile) is left alone."""
        out: dict[str, str] = {}
        now = utcnow()
        with self.engine.begin() as conn:
            current = self._existing(conn, integration, [r.doc_id for r, *_ in verdicts])
            decided = []
            for row, state, reason, detail in verdicts:
                now_row = current.get((row.doc_id, row.version))
                if now_row is None or now_row.status != SUBMITTED:
                    continue
                text = json.dumps(detail, default=str) if detail is not None else now_row.detail
                d = states.after_confirmation(now_row, state, reason, max_attempts=max_attempts, detail=text, at=now)
                if d is not None:
                    decided.append((row.doc_id, row.version, d, {}))
                    out[row.doc_id] = d.status or now_row.status
            self._apply(conn, integration, decided, run)
        return out

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

    def discard(self, integration: str, doc_ids: list[str], detail: str, run: str | None) -> list[DocumentRow]:
        """Discard these documents' parked (needs-attention) rows (states.discard), with a `discarded` event each.

        Rows are never deleted. Returns the rows that were discarded (as they were before)."""
        done: list[DocumentRow] = []
        with self.engine.begin() as conn:
            rows = [r for r in self._existing(conn, integration, doc_ids).values() if r.status == NEEDS_ATTENTION]
            self._apply(conn, integration, [(r.doc_id, r.version, states.discard(r, detail), {}) for r in rows], run)
            done.extend(sorted(rows, key=lambda r: r.id))
        return done

    def status_summary(self, integrations: list[str], day_start: datetime, week_start: datetime) -> dict[str, dict[str, Any]]:
        """Per integration, in a few grouped queries: documents per status, delivered since day_start and
        since week_start, last delivery, last error of a failed or parked document, the oldest
        submitted version (waiting for confirmation), cursor."""
        out: dict[str, dict[str, Any]] = {
            key: {"counts": {}, "delivered_today": 0, "delivered_week": 0, "last_delivered": None, "last_error": None,
                  "last_error_doc": None, "last_error_at": None, "oldest_submitted": None, "cursor": None,
                  "checked_until": None, "cursor_updated": None}
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
                    sa.select(documents.c.integration, documents.c.status, sa.func.count(), today, week,
                              sa.func.max(documents.c.delivered_at), sa.func.min(documents.c.submitted_at))
                    .where(documents.c.integration.in_(chunk))
                    .group_by(documents.c.integration, documents.c.status)
                )
                for integ, status, n, n_today, n_week, last, first_submitted in rows:
                    entry = out[integ]
                    entry["counts"][status] = n
                    entry["delivered_today"] += n_today or 0
                    entry["delivered_week"] += n_week or 0
                    if last is not None:  # max() keeps the column's type: an aware datetime
                        entry["last_delivered"] = max(filter(None, (entry["last_delivered"], last)))
                    if status == SUBMITTED and first_submitted is not None:
                        entry["oldest_submitted"] = first_submitted
                ranked = (
                    sa.select(documents.c.integration, documents.c.doc_id, documents.c.last_error, documents.c.updated_at, newest.label("n"))
                    .where(documents.c.integration.in_(chunk), documents.c.status.in_((FAILED, NEEDS_ATTENTION)))
                    .subquery()
                )
                for r in conn.execute(sa.select(ranked).where(ranked.c.n == 1)):
                    out[r.integration].update(last_error=r.last_error, last_error_doc=r.doc_id, last_error_at=r.updated_at)
                for r in conn.execute(sa.select(cursors).where(cursors.c.integration.in_(chunk))):
                    out[r.integration].update(cursor=r.position, checked_until=r.checked_until, cursor_updated=r.updated_at)
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
