"""Retry and discard parked (needs-attention) documents on a real Prefect server, with the ledger's audit trail."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from prefect.client.orchestration import get_client

from flows.cli import main as cli
from flows.parked import parked_documents
from flows.status import integration_status
from flows.sync import SyncFailed, sync
from tasks.ledger import DELIVERED, DISCARDED, NEEDS_ATTENTION
from tasks.sources.seed import write_document

HOUR_AGO = datetime.now(timezone.utc) - timedelta(hours=1)


def vendor_integration(ws, **kw) -> str:
    """Documents whose supplier is missing from the vendors lookup fail mapping permanently: parked after one run."""
    (ws.config_dir / "lookups" / "vendors.csv").write_text("supplier_number,vendor_code\nS-1,V-ONE\n")
    return ws.integration(
        max_attempts=1,
        mapping={
            "fields": {"vendor": {"lookup": "vendors", "key": "{supplier_number}", "column": "vendor_code"}},
            "lookups": {"vendors": {"file": "vendors.csv", "key": "supplier_number"}},
            "folder": "{client}/{doc_type}",
            "filename": "{vendor}_{doc_id}.{ext}",
        },
        **kw,
    )


def add_document(ws, doc_id: str, supplier: str) -> None:
    write_document(ws.inbox, doc_id, client="acme", approved_at=HOUR_AGO, metadata={"number": doc_id, "supplier": "X", "supplier_number": supplier})


def add_vendor(ws, supplier: str, code: str) -> None:
    with (ws.config_dir / "lookups" / "vendors.csv").open("a") as fh:
        fh.write(f"{supplier},{code}\n")


def statuses(ws, key) -> dict[str, str]:
    return {r["doc_id"]: r["status"] for r in ws.ledger().rows(key)}


def events(ws, key, doc_id) -> list[tuple[str, str | None]]:
    return [(e["event"], e["detail"]) for e in ws.ledger().events_of(key, doc_id)]


async def _artifact(flow_run_id, key):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    assert len(arts) == 1
    return json.loads(arts[0].data) if isinstance(arts[0].data, str) else arts[0].data


def test_retry_delivers_fixed_parked_documents_by_id_and_all_with_events(workspace):
    key = vendor_integration(workspace)
    add_document(workspace, "OK-1", "S-1")
    add_document(workspace, "BAD-1", "S-7")
    add_document(workspace, "BAD-2", "S-8")
    with pytest.raises(SyncFailed, match="BAD-1"):
        sync(integration=key)
    assert statuses(workspace, key) == {"OK-1": DELIVERED, "BAD-1": NEEDS_ATTENTION, "BAD-2": NEEDS_ATTENTION}
    add_vendor(workspace, "S-7", "V-SEVEN")
    # fixing the lookup does not change the documents: scheduled runs leave parked ones alone
    assert sync(integration=key)["outcomes"] == []

    # by id: only the named one is delivered
    state = parked_documents(integration=key, action="retry", document_ids=["BAD-1"], reason="vendor S-7 added", by="alice", return_state=True)
    assert state.is_completed(), state.message
    assert (workspace.out / "acme/invoice/V-SEVEN_BAD-1.pdf").read_bytes() == (workspace.inbox / "BAD-1.pdf").read_bytes()
    assert statuses(workspace, key)["BAD-1"] == DELIVERED and statuses(workspace, key)["BAD-2"] == NEEDS_ATTENTION
    trail = events(workspace, key, "BAD-1")
    assert [e for e, _ in trail[-3:]] == ["retry-requested", "attempt", "delivered"]
    assert trail[-3][1] == "by alice: vendor S-7 added" and trail[-1][1].endswith("acme/invoice/V-SEVEN_BAD-1.pdf")
    table = asyncio.run(_artifact(state.state_details.flow_run_id, "parked-acme-invoices"))
    assert table == [{"document": "BAD-1", "version": table[0]["version"], "number": "BAD-1", "action": "retry",
                      "before": NEEDS_ATTENTION, "after": DELIVERED, "error": ""}]

    # all: still broken -> parked again, and the run fails naming it
    state = parked_documents(integration=key, action="retry", all_parked=True, by="alice", return_state=True)
    assert state.is_failed() and "BAD-2" in state.message and "not found in lookup table" in state.message
    assert statuses(workspace, key)["BAD-2"] == NEEDS_ATTENTION
    assert [e for e, _ in events(workspace, key, "BAD-2")][-2:] == ["retry-requested", NEEDS_ATTENTION]  # mapped before any attempt
    add_vendor(workspace, "S-8", "V-EIGHT")
    assert parked_documents(integration=key, action="retry", all_parked=True)[0]["after"] == DELIVERED
    assert statuses(workspace, key) == {"OK-1": DELIVERED, "BAD-1": DELIVERED, "BAD-2": DELIVERED}
    assert ("retry-requested", "by unknown") in events(workspace, key, "BAD-2")
    assert sorted(p.name for p in (workspace.out / "acme/invoice").iterdir()) == ["V-EIGHT_BAD-2.pdf", "V-ONE_OK-1.pdf", "V-SEVEN_BAD-1.pdf"]


def test_discard_keeps_the_row_with_an_audit_event_and_later_syncs_leave_it(workspace):
    key = vendor_integration(workspace, lookback="1d")
    add_document(workspace, "OK-1", "S-1")
    add_document(workspace, "BAD-MAP", "S-9")
    write_document(workspace.inbox, "NO-PDF", client="acme", approved_at=HOUR_AGO)
    (workspace.inbox / "NO-PDF.pdf").unlink()  # metadata without its PDF
    with pytest.raises(SyncFailed):
        sync(integration=key)
    assert statuses(workspace, key) == {"OK-1": DELIVERED, "BAD-MAP": NEEDS_ATTENTION, "NO-PDF": NEEDS_ATTENTION}
    rows_before = len(workspace.ledger().rows(key))

    # a document that is not parked cannot be discarded: nothing changes, the run names it
    state = parked_documents(integration=key, action="discard", document_ids=["OK-1", "NO-PDF", "NOPE"], return_state=True)
    assert state.is_failed() and "OK-1 (delivered)" in state.message and "NOPE (not in the ledger)" in state.message
    assert statuses(workspace, key)["NO-PDF"] == NEEDS_ATTENTION

    state = parked_documents(integration=key, action="discard", document_ids=["NO-PDF"], reason="duplicate scan", by="bob", return_state=True)
    assert state.is_completed()
    assert statuses(workspace, key) == {"OK-1": DELIVERED, "BAD-MAP": NEEDS_ATTENTION, "NO-PDF": DISCARDED}
    assert events(workspace, key, "NO-PDF")[-1] == (DISCARDED, "by bob: duplicate scan")
    table = asyncio.run(_artifact(state.state_details.flow_run_id, "parked-acme-invoices"))
    assert [(t["document"], t["before"], t["after"]) for t in table] == [("NO-PDF", NEEDS_ATTENTION, DISCARDED)]
    assert "is missing" in table[0]["error"] or "PDF" in table[0]["error"]

    # all: the remaining parked one
    assert [r["document"] for r in parked_documents(integration=key, action="discard", all_parked=True, reason="test upload")] == ["BAD-MAP"]
    assert len(workspace.ledger().rows(key)) == rows_before  # never deleted
    trail_before = {d: events(workspace, key, d) for d in ("NO-PDF", "BAD-MAP")}

    # later runs, scheduled or a backfill over their approval time, do not touch them
    assert sync(integration=key)["outcomes"] == []
    assert sync(integration=key, since=HOUR_AGO - timedelta(hours=1))["outcomes"] == []
    assert {d: events(workspace, key, d) for d in ("NO-PDF", "BAD-MAP")} == trail_before
    assert statuses(workspace, key) == {"OK-1": DELIVERED, "BAD-MAP": DISCARDED, "NO-PDF": DISCARDED}
    assert sorted(p.name for p in (workspace.out / "acme/invoice").iterdir()) == ["V-ONE_OK-1.pdf"]

    # status reports them separately from the ones needing attention
    row = integration_status(client="acme")[0]
    assert (row["discarded"], row["needs attention"], row["failed"]) == (2, 0, 0)

    # a retry naming a discarded document brings it back
    add_vendor(workspace, "S-9", "V-NINE")
    assert parked_documents(integration=key, action="retry", document_ids=["BAD-MAP"], by="carol")[0]["after"] == DELIVERED
    assert (workspace.out / "acme/invoice/V-NINE_BAD-MAP.pdf").exists()


def test_cli_parked_list_retry_discard(workspace, capsys):
    key = vendor_integration(workspace)
    add_document(workspace, "BAD-1", "S-7")
    add_document(workspace, "BAD-2", "S-8")
    with pytest.raises(SyncFailed):
        sync(integration=key)
    capsys.readouterr()
    assert cli(["parked", "list", key]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["BAD-1", NEEDS_ATTENTION], ["BAD-2", NEEDS_ATTENTION]]
    assert "key 'S-7' not found" in out[0]

    assert cli(["parked", "retry", key]) == 2  # neither --document nor --all
    assert cli(["parked", "list", "acme/invoicez"]) == 2
    assert "no integration 'acme/invoicez'" in capsys.readouterr().err
    assert cli(["parked", "discard", key, "--document", "BAD-2", "--reason", "not ours", "--by", "dave"]) == 0
    assert "BAD-2" in capsys.readouterr().out
    assert events(workspace, key, "BAD-2")[-1] == (DISCARDED, "by dave: not ours")
    add_vendor(workspace, "S-7", "V-SEVEN")
    assert cli(["parked", "retry", key, "--all"]) == 0
    assert "BAD-1                          needs-attention -> delivered" in capsys.readouterr().out
    assert statuses(workspace, key) == {"BAD-1": DELIVERED, "BAD-2": DISCARDED}
    assert cli(["parked", "list", key]) == 0
    assert capsys.readouterr().out.split()[:2] == ["BAD-2", DISCARDED]
    assert cli(["parked", "retry", key, "--document", "BAD-1"]) == 1  # delivered: not parked
