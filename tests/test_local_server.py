"""flows.local_server: the local Prefect server collects its garbage off the event loop's thread and
begins its SQLite transactions IMMEDIATE."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import sqlalchemy as sa
from prefect.server.database.configurations import AioSqliteConfiguration
from prefect.server.database.dependencies import provide_database_interface, set_database_config
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

from flows.local_server import ImmediateSqliteConfiguration, begin_sqlite_transactions_immediate, server_command

# In a fresh interpreter: cyclic garbage whose finalizer records the thread it ran in.
PROBE = """
import gc, threading, time
from flows.local_server import collect_in_background

collect_in_background(every=0.02)
where = []

class Cycle:
    def __init__(self):
        self.me = self
    def __del__(self):
        where.append(threading.current_thread().name)

for _ in range(50):
    Cycle()
deadline = time.monotonic() + 10
while len(where) < 50 and time.monotonic() < deadline:
    time.sleep(0.05)
print(gc.isenabled(), len(where), sorted(set(where)))
"""


def test_cyclic_garbage_is_collected_in_the_collector_thread_not_the_main_one():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split(None, 2) == ["False", "50", "['docroute-gc']\n"]


def test_the_server_command_runs_prefect_server_start_through_the_launcher():
    command = server_command("127.0.0.1", 4999)
    assert command[1:] == ["-m", "flows.local_server", "--host", "127.0.0.1", "--port", "4999"]
    help_text = subprocess.run([*command[:3], "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "--no-services" in help_text  # the options are `prefect server start`'s own


async def _two_writers(config: AioSqliteConfiguration) -> list[str]:
    """Two transactions that each read, then write, the way Prefect's API handlers do: the first reads,
    the second begins while the first is still open. The rows both wrote, or the first error."""
    engine = await config.engine()
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (name TEXT)")
        first_read, second_done = asyncio.Event(), asyncio.Event()

        async def writer(name: str, before: asyncio.Event | None, after: asyncio.Event | None) -> None:
            if before is not None:
                await before.wait()
            session = await config.session(engine)
            async with session, config.begin_transaction(session):
                await session.execute(sa.text("SELECT count(*) FROM t"))
                if after is first_read:
                    first_read.set()
                    try:  # give the second writer time to run ahead, if it can
                        await asyncio.wait_for(second_done.wait(), 1.0)
                    except TimeoutError:
                        pass
                await session.execute(sa.text("INSERT INTO t VALUES (:name)"), {"name": name})
            if after is second_done:
                second_done.set()

        await asyncio.gather(writer("first", None, first_read), writer("second", first_read, second_done))
        async with engine.connect() as conn:
            return sorted(row[0] for row in await conn.exec_driver_sql("SELECT name FROM t"))
    finally:
        await engine.dispose()


def test_prefects_deferred_transactions_fail_when_another_writer_commits_first(tmp_path):
    # why the launcher changes them: the failure the benchmark's SQLite server logged thousands of
    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{tmp_path / 'deferred.db'}")
    with pytest.raises(sa.exc.OperationalError, match="database is locked"):
        asyncio.run(_two_writers(config))


def test_immediate_transactions_wait_for_each_other_and_both_commit(tmp_path):
    config = ImmediateSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{tmp_path / 'immediate.db'}")
    assert asyncio.run(_two_writers(config)) == ["first", "second"]


def test_the_launcher_installs_the_immediate_configuration_on_sqlite_only(tmp_path):
    try:
        with temporary_settings({PREFECT_API_DATABASE_CONNECTION_URL: "postgresql+asyncpg://u@127.0.0.1/x"}):
            set_database_config(None)
            assert begin_sqlite_transactions_immediate() is False
        with temporary_settings({PREFECT_API_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"}):
            set_database_config(None)
            assert begin_sqlite_transactions_immediate() is True
            config = provide_database_interface().database_config
            assert type(config) is ImmediateSqliteConfiguration
            assert config.connection_url.endswith("p.db")
    finally:
        set_database_config(None)
