"""Named locks that die with the process holding them, across processes and machines.

One kind of lock serves every place docroute needs one: a sync run of an integration, the ledger's
schema migration, an OAuth2 connection's token refresh. On PostgreSQL it is a session advisory lock
(held by a connection: a killed process's lock goes with its connection, on every machine that uses
the database); on SQLite, a file lock beside the database file (one machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from tasks.settings import get_settings


class LockTimeout(RuntimeError):
    """Another process still holds the lock after the timeout."""


def lock_key(name: str) -> int:
    """A signed 64-bit key for pg_advisory_lock, stable for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def hold(engine: sa.Engine, name: str, timeout: float = 600.0, what: str | None = None, holder: str = "process") -> Iterator[None]:
    """Hold the lock `name` (waiting up to `timeout` seconds) on the database behind `engine`."""
    what = what or name
    deadline = time.monotonic() + timeout
    if engine.url.get_backend_name() == "postgresql":
        key = lock_key(name)
        with engine.connect() as conn:
            # A session lock outlives the transaction: commit, so the session is not left "idle in
            # transaction" while the lock is held (idle_in_transaction_session_timeout would end it, lock and all).
            while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.commit()
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{what}: another {holder} still holds the lock after {timeout:.0f}s")
                time.sleep(0.2)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    folder = Path(engine.url.database or "ledger").with_suffix(".locks")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(name.encode()).hexdigest()[:16] + ".lock")
    # flock is per open file: threads of one process each open their own, so they exclude each other too
    with path.open("a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{what}: another {holder} still holds the lock after {timeout:.0f}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def named_lock(name: str, timeout: float = 600.0, url: str | None = None, what: str | None = None, holder: str = "process"):
    """The lock `name` on the ledger's database (DOCROUTE_LEDGER_URL / _BLOCK, default SQLite file),
    for code that has no Ledger at hand (an OAuth2 token refresh inside a connector)."""
    if url is None:
        url = get_settings().resolved_ledger_url()
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = sa.create_engine(url, pool_pre_ping=True, poolclass=sa.pool.NullPool)
    return hold(engine, name, timeout, what, holder)
