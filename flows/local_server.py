"""A local Prefect server: `prefect server start`, with the garbage collector moved off its event loop.

    python -m flows.local_server --host 127.0.0.1 --port 4200      # any `prefect server start` options

The demo, the tests and the benchmarks start their Prefect server on SQLite this way. Why: on SQLite,
Prefect's server (3.8) froze for a minute now and then (the demo stalled in about one run in four).
Measured inside the server: a statement waiting for the database lock (Prefect sets PRAGMA
busy_timeout = 60000) holds its connection's mutex in that connection's aiosqlite thread; when the
cyclic garbage collector then runs on the event loop's thread and frees a cursor of the same
connection, the cursor's sqlite3_reset waits for that mutex. The event loop stops, so the
transaction holding the lock (a coroutine on that loop) cannot commit, and everything waits the full
60 s. With automatic collection switched off and a thread of its own collecting instead, only that
thread waits, and only until the lock holder commits: measured with the demo, a freeze in 8 of 32 runs
before, in none of 18 after. A server on PostgreSQL has no such wait; the thread does no harm there.

On SQLite it also begins every write transaction IMMEDIATE (Prefect 3.8 begins most of them DEFERRED).
A DEFERRED transaction takes the write lock only at its first write; in WAL mode, when another
connection committed since this one first read, SQLite refuses the upgrade at once with "database is
locked" (SQLITE_BUSY_SNAPSHOT; the busy timeout does not apply), and the API answers 503. Deploying
1,000 integrations while the scheduler filled their runs gave thousands of those (docs/benchmarks.md).
An IMMEDIATE transaction takes the lock when it begins, so writers queue behind one another under the
busy timeout instead. Prefect's own comment in AioSqliteConfiguration.setup_sqlite names this cure;
the server's documented hook for it is prefect.server.database.dependencies.set_database_config.
"""

from __future__ import annotations

import gc
import itertools
import sys
import threading
import time
from contextlib import AbstractAsyncContextManager

from prefect.server.database.configurations import AioSqliteConfiguration
from prefect.server.database.dependencies import set_database_config
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction

COLLECT_EVERY = 0.1  # seconds between collections of the youngest generation


def server_command(host: str, port: int) -> list[str]:
    """The command that starts a local Prefect server on `host`:`port` (SQLite unless the environment says otherwise)."""
    return [sys.executable, "-m", "flows.local_server", "--host", host, "--port", str(port)]


def collect_in_background(every: float = COLLECT_EVERY) -> threading.Thread:
    """Switch off automatic garbage collection and collect in a daemon thread instead: the youngest
    generation every `every` seconds, the middle one every tenth time, all of them every hundredth
    (about what the interpreter's own thresholds do under a server's load)."""
    gc.disable()

    def collect() -> None:
        for n in itertools.count(1):
            time.sleep(every)
            gc.collect(2 if n % 100 == 0 else 1 if n % 10 == 0 else 0)

    thread = threading.Thread(target=collect, name="docroute-gc", daemon=True)
    thread.start()
    return thread


class ImmediateSqliteConfiguration(AioSqliteConfiguration):
    """Prefect's SQLite configuration with every transaction begun IMMEDIATE: it waits for the write
    lock (up to the busy timeout) when it begins instead of failing when it first writes."""

    def begin_transaction(
        self, session: AsyncSession, with_for_update: bool = False
    ) -> AbstractAsyncContextManager[AsyncSessionTransaction]:
        # Prefect's own begins IMMEDIATE exactly when asked for update: ask for it every time
        return super().begin_transaction(session, with_for_update=True)


def begin_sqlite_transactions_immediate() -> bool:
    """Make this process's Prefect server begin its transactions IMMEDIATE if its database is SQLite;
    True if it did (on PostgreSQL nothing changes)."""
    url = PREFECT_API_DATABASE_CONNECTION_URL.value()
    if not url.startswith("sqlite"):
        return False
    set_database_config(ImmediateSqliteConfiguration(connection_url=url))
    return True


def main(argv: list[str] | None = None) -> None:
    """`prefect server start` with the given options, after collect_in_background() and
    begin_sqlite_transactions_immediate()."""
    # imported here, not at the top: server_command's callers need not import Prefect's CLI
    from prefect.cli import app

    collect_in_background()
    begin_sqlite_transactions_immediate()
    sys.argv = ["prefect", "server", "start", *(sys.argv[1:] if argv is None else argv)]
    app()


if __name__ == "__main__":
    main()
