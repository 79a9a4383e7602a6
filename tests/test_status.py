"""The status flow on a real Prefect server: numbers from a known ledger, paused/active from real
deployments, the keyed table artifact with history, CSV and Excel through pandas, and the CLI."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.states import Completed, Running

from deployments.config import load_config
from deployments.deploy import FLOW_NAME, apply_deployments
from flows.cli import main as cli
from flows.status import artifact_key, integration_status
from tasks import ledger as L
from tasks.ledger import Result
from tests.conftest import utc

AS_OF = utc(2026, 10, 14, 12, 0)  # a Wednesday: the week started on Monday 2026-10-12


def known_ledger(ws, key: str) -> None:
    """Deliveries at controlled times, one pending, one failed, one parked (the newest error), a cursor."""
    led = ws.ledger()
    delivered = {
        "D-TODAY-1": utc(2026, 10, 14, 9, 0),
        "D-TODAY-2": utc(2026, 10, 14, 11, 59),
        "D-MONDAY": utc(2026, 10, 12, 8, 0),
        "D-LATE-TUE": utc(2026, 10, 13, 23, 30),  # Tuesday in UTC, already Wednesday in Brussels (UTC+2)
        "D-LAST-WEEK": utc(2026, 10, 11, 23, 0),  # Sunday: last week
    }
    led.record(key, [Result(d, "v1", remote_ref=f"out/{d}.pdf") for d in delivered], max_attempts=3, run="r1")
    with led.engine.begin() as conn:
        for doc_id, at in delivered.items():
            conn.execute(L.documents.update().where(L.documents.c.integration == key, L.documents.c.doc_id == doc_id).values(delivered_at=at))
    led.begin_attempts(key, [("P-1", "v1", {})], "r2")  # attempt recorded, no result yet: pending
    led.record(key, [Result("F-1", "v1", error="document F-1: connection reset", permanent=False)], max_attempts=3, run="r2")
    led.record(key, [Result("NA-1", "v1", error="document NA-1: key 'S-9' not found in lookup table 'vendors'", permanent=True)], max_attempts=1, run="r3")
    led.set_cursor(key, utc(2026, 10, 14, 11, 0).isoformat(), utc(2026, 10, 14, 11, 0), "r3")
    led.dispose()


async def _complete_a_run_of(deployment: str):
    """What a worker does with a run of the deployment: Running, then Completed."""
    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment)
        run = await client.create_flow_run_from_deployment(dep.id)
        await client.set_flow_run_state(run.id, Running(), force=True)
        await client.set_flow_run_state(run.id, Completed(), force=True)
        return (await client.read_flow_run(run.id)).end_time


async def _pause(deployment: str):
    async with get_client() as client:
        await client.pause_deployment((await client.read_deployment_by_name(deployment)).id)


async def _artifacts(key: str, run_ids: list):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)),
        )


def _setup(ws):
    client = f"s{ws.tag}"
    inv = ws.integration("invoices", client=client, schedule={"interval": "5m"}, filters={"document_types": ["invoice"]})
    orders = ws.integration("orders", client=client, schedule={"interval": "1h"}, filters={"document_types": ["order_confirmation"]})
    alt = ws.integration("alternate", client=client, enabled=False, filters={"document_types": ["credit_note"]})
    apply_deployments(load_config())
    late = ws.integration("late", client=client, filters={"document_types": ["receipt"]})  # in the file, never deployed
    known_ledger(ws, inv)
    ws.ledger().set_cursor(orders, None, utc(2026, 10, 13, 6, 0), "r9")
    asyncio.run(_pause(f"{FLOW_NAME}/{client}-orders"))
    ended = asyncio.run(_complete_a_run_of(f"{FLOW_NAME}/{client}-invoices"))
    return client, inv, orders, alt, late, ended


def test_status_numbers_states_artifact_history_and_files(workspace, tmp_path):
    client, inv, orders, alt, late, ended = _setup(workspace)
    csv_path, xlsx_path = tmp_path / "status.csv", tmp_path / "status.xlsx"
    first = integration_status(as_of=AS_OF, csv=str(csv_path), return_state=True)
    rows = {r["integration"]: r for r in first.result()}
    assert list(rows) == [alt, inv, late, orders]  # sorted by client and name

    r = rows[inv]
    assert r["state"] == "active" and r["schedule"] == "every 5m"
    assert (r["delivered today"], r["delivered this week"]) == (2, 4)
    assert (r["pending"], r["failed"], r["needs attention"], r["discarded"]) == (1, 1, 1, 0)
    assert r["last error"] == "document NA-1: key 'S-9' not found in lookup table 'vendors'"
    assert r["cursor"] == utc(2026, 10, 14, 11, 0)
    assert r["last successful sync"] == ended  # the deployment's Completed run
    assert r["last run"].startswith("Completed ")
    assert r["last delivery"] == utc(2026, 10, 14, 11, 59)

    assert rows[orders]["state"] == "paused" and rows[orders]["schedule"] == "every 1h"
    assert rows[orders]["last successful sync"] is not None  # no completed run: the ledger's last cursor move
    assert rows[orders]["cursor"] == utc(2026, 10, 13, 6, 0)
    assert rows[alt]["state"] == "on demand" and rows[alt]["schedule"] == ""
    assert rows[late]["state"] == "not deployed"
    assert rows[late]["last successful sync"] is None and rows[late]["delivered this week"] == 0

    # "today" and "this week" are calendar ones in the report's timezone: in Brussels (UTC+2) Tuesday 23:30 UTC
    # is already Wednesday, and Sunday 23:00 UTC already Monday
    brussels = {r["integration"]: r for r in integration_status(as_of=AS_OF, tz="Europe/Brussels")}
    assert (brussels[inv]["delivered today"], brussels[inv]["delivered this week"]) == (3, 5)

    # the table artifact under its fixed key, once per run: history on the Artifacts page
    second = integration_status(as_of=AS_OF, excel=str(xlsx_path), return_state=True)
    run_ids = [first.state_details.flow_run_id, second.state_details.flow_run_id]
    arts = asyncio.run(_artifacts("integration-status", run_ids))
    assert sorted(a.flow_run_id for a in arts) == sorted(run_ids)
    table = json.loads(arts[0].data) if isinstance(arts[0].data, str) else arts[0].data
    shown = {t["integration"]: t for t in table}
    assert shown[inv]["needs attention"] == 1 and shown[inv]["state"] == "active" and shown[orders]["state"] == "paused"
    assert shown[inv]["cursor"] == "2026-10-14 11:00:00 UTC"
    assert "failed or needing attention: " + inv in arts[0].description

    # CSV and Excel round-trip through pandas
    for frame in (pd.read_csv(csv_path), pd.read_excel(xlsx_path)):
        assert list(frame["integration"]) == [alt, inv, late, orders]
        back = frame.set_index("integration")
        assert back.loc[inv, "delivered today"] == 2 and back.loc[inv, "delivered this week"] == 4
        assert back.loc[inv, "needs attention"] == 1 and back.loc[inv, "failed"] == 1 and back.loc[inv, "pending"] == 1
        assert back.loc[orders, "state"] == "paused"
        assert pd.Timestamp(back.loc[inv, "cursor"]) == pd.Timestamp("2026-10-14 11:00")
        assert back.loc[inv, "last error"].startswith("document NA-1: key 'S-9'")


def test_one_clients_status_has_its_own_artifact_key(workspace):
    client = f"k{workspace.tag}"
    key = workspace.integration("invoices", client=client)
    workspace.integration("invoices", client=f"o{workspace.tag}")
    state = integration_status(client=client, return_state=True)
    assert [r["integration"] for r in state.result()] == [key]
    arts = asyncio.run(_artifacts(artifact_key(client), [state.state_details.flow_run_id]))
    assert len(arts) == 1 and artifact_key(client) == f"integration-status-{client}"


def test_cli_status_prints_the_table_and_writes_excel(workspace, tmp_path, capsys):
    client, inv, orders, *_ = _setup(workspace)
    path = tmp_path / "out.xlsx"
    assert cli(["status", "--client", client, "--excel", str(path)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(inv))
    assert "active" in line and "every 5m" in line
    assert next(x for x in out.splitlines() if x.startswith(orders)).split()[1] == "paused"
    assert f"{inv}: 1 need attention, 1 failed; last error: document NA-1" in out
    assert pd.read_excel(path).set_index("integration").loc[inv, "needs attention"] == 1


def test_status_summary_query_counts_per_integration(tmp_path):
    """The ledger's grouped query, on its own: integrations do not leak into each other; unknown ones are zero."""
    led = L.Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    led.record("a/x", [Result("1", "v", remote_ref="r"), Result("2", "v", error="e", permanent=True)], max_attempts=1, run=None)
    led.record("b/y", [Result("1", "v", remote_ref="r")], max_attempts=1, run=None)
    with led.engine.begin() as conn:
        conn.execute(sa.update(L.documents).where(L.documents.c.status == L.DELIVERED).values(delivered_at=utc(2026, 10, 14, 10)))
    got = led.status_summary(["a/x", "b/y", "c/z"], utc(2026, 10, 14), utc(2026, 10, 12))
    assert got["a/x"]["counts"] == {L.DELIVERED: 1, L.NEEDS_ATTENTION: 1} and got["a/x"]["delivered_today"] == 1
    assert got["b/y"]["last_error"] is None and got["b/y"]["delivered_week"] == 1
    assert got["c/z"]["counts"] == {} and got["c/z"]["cursor"] is None
    led.dispose()
