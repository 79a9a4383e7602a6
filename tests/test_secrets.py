"""A secret put in a block never appears in logs, artifacts, parameters, exceptions, output or the ledger."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort

from blocks.ledger import LedgerDatabase
from tasks.sources.seed import write_document

PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")


@pytest.fixture
def pg_database():
    name = f"docroute_secret_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(**PG)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    yield name
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


async def _everything_the_server_shows(flow_name: str) -> tuple[str, str]:
    """(all runs, logs, artifacts and states as text, the block documents with secrets revealed)."""
    async with get_client() as client:
        runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=50)
        runs = [r for r in runs if flow_name in (r.name or "")]
        ids = [r.id for r in runs]
        logs, offset = [], 0
        while batch := await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset
        ):
            logs += batch
            offset += len(batch)
        arts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        shown = json.dumps(
            {
                "runs": [r.model_dump(mode="json") for r in runs],
                "logs": [log.message for log in logs],
                "artifacts": [a.model_dump(mode="json") for a in arts],
            }
        )
        blocks = await client.read_block_documents(include_secrets=True)
        revealed = json.dumps([b.model_dump(mode="json") for b in blocks])
        return shown, revealed


def test_block_secrets_never_leak(workspace, pg_database):
    secret = f"S3cret-{uuid.uuid4().hex}"
    url = f"postgresql+psycopg2://postgres:{secret}@127.0.0.1:5432/{pg_database}"
    LedgerDatabase(url=url).save(f"ledger-{workspace.tag}")
    key = workspace.integration(name=f"secret-{workspace.tag}")
    now = datetime.now(timezone.utc)
    for i in range(3):
        write_document(workspace.inbox, f"SEC-{i}", client="acme", approved_at=now - timedelta(hours=1), metadata={"number": f"N{i}"})
    write_document(workspace.inbox, "SEC-BAD", client="acme", approved_at=now - timedelta(hours=1), pdf=b"")

    env = workspace.env()
    env.pop("DOCROUTE_LEDGER_URL")
    env["DOCROUTE_LEDGER_BLOCK"] = f"ledger-{workspace.tag}"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sync", key],
        env=env, capture_output=True, text=True, timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "SEC-BAD" in output  # the run ended Failed and named the bad document

    shown, revealed = asyncio.run(_everything_the_server_shows(f"secret-{workspace.tag}"))
    assert secret in revealed  # the scan below looks at data that really does hold the secret elsewhere
    assert f"secret-{workspace.tag}" in shown and "SEC-BAD" in shown  # runs, logs and artifacts were read
    assert secret not in shown
    assert secret not in output

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        dump = json.dumps(
            [list(map(str, row)) for table in ("documents", "events", "cursors") for row in conn.execute(sa.text(f"SELECT * FROM {table}"))]
        )
    engine.dispose()
    assert "SEC-0" in dump and "delivered" in dump  # the ledger really is in this database
    assert secret not in dump
