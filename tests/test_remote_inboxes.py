"""The flows on capture inboxes that are not a local folder: an SFTP folder (the real sshd) and an S3
prefix (moto's server). Sync, archive after transfer, backfill, reconcile, status, parked and check
work on them unchanged, through the same Source interface."""

from __future__ import annotations

import json

import pytest

from flows.backfill import backfill
from flows.checks import check_connections
from flows.parked import parked_documents
from flows.reconcile import reconcile
from flows.status import collect_status
from flows.sync import SyncFailed, sync
from tasks.ledger import DELIVERED, NEEDS_ATTENTION
from tests.conftest import utc
from tests.sources.harness_s3_inbox import S3InboxHarness
from tests.sources.harness_sftp_inbox import SftpInboxHarness


@pytest.fixture(params=["sftp", "s3"])
def remote(request, workspace, sftp_server, moto_s3_server):
    """(source block reference, harness) of a remote inbox saved for this test."""
    if request.param == "sftp":
        harness = SftpInboxHarness(sftp_server, sftp_server.mkdir(f"inbox-{workspace.tag}"))
    else:
        harness = S3InboxHarness(moto_s3_server, f"inbox-{workspace.tag}")
        harness.client.create_bucket(Bucket=harness.bucket)
    block = harness.block()
    block.save(f"inbox-{workspace.tag}", overwrite=True)
    return f"{block.get_block_type_slug()}/inbox-{workspace.tag}", harness


def test_the_flows_work_on_a_remote_inbox(workspace, remote):
    source, inbox = remote
    key = workspace.integration(source=source, archive_after_transfer=True, max_attempts=1,
                                mapping={"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}", "sidecar": True})
    contents = {}
    for day in (2, 3, 4):
        contents[f"R-{day}"] = inbox.put(f"R-{day}", approved_at=utc(2026, 3, day, 9), fields={"number": f"N-{day}"})
    inbox.put_unreadable("R-BAD", approved_at=utc(2026, 3, 5, 9))

    with pytest.raises(SyncFailed, match="R-BAD"):
        sync(integration=key)
    for doc_id, files in contents.items():
        assert (workspace.out / "acme" / "invoice" / f"{doc_id}.pdf").read_bytes() == files[f"{doc_id}.pdf"]
        sidecar = json.loads((workspace.out / "acme" / "invoice" / f"{doc_id}.json").read_text())
        assert sidecar["fields"] == {"number": doc_id.replace("R-", "N-")}
        assert inbox.exported(doc_id)  # archived at the source, after the delivery was recorded
    rows = {r.doc_id: r.status for r in workspace.ledger().rows(key)}
    assert rows == {"R-2": DELIVERED, "R-3": DELIVERED, "R-4": DELIVERED, "R-BAD": NEEDS_ATTENTION}

    # status and reconcile read the same ledger and destination
    status = {r["integration"]: r for r in collect_status("acme")}[key]
    assert status["needs attention"] == 1 and status["delivered this week"] >= 0 and status["cursor"] is not None
    state = reconcile(integration=key, return_state=True)
    assert state.is_completed(), state.message

    # the capture system sends the missing PDF: a parked retry delivers it from the remote inbox
    contents["R-BAD"] = inbox.put("R-BAD", approved_at=utc(2026, 3, 5, 9))
    report = parked_documents(integration=key, action="retry", document_ids=["R-BAD"], reason="PDF arrived", by="ops")
    assert [(r["document"], r["after"]) for r in report] == [("R-BAD", DELIVERED)]
    assert (workspace.out / "acme" / "invoice" / "R-BAD.pdf").read_bytes() == contents["R-BAD"]["R-BAD.pdf"]

    # a backfill of a range scans the remote inbox again and delivers nothing twice
    inbox.put("R-6", approved_at=utc(2026, 3, 6, 9))
    result = backfill(integration=key, since=utc(2026, 3, 1), until=utc(2026, 3, 7), chunk="2d")
    assert [c["status"] for c in result["chunks"]] == ["done"] * 4
    assert (workspace.out / "acme" / "invoice" / "R-6.pdf").exists() and inbox.exported("R-6")
    confirmed = [e for e in workspace.ledger().events_of(key) if e["event"] == DELIVERED]
    assert sorted(e["doc_id"] for e in confirmed) == ["R-2", "R-3", "R-4", "R-6", "R-BAD"]  # each once

    # docroute check reaches the inbox through its block
    rows = check_connections(connections=[source])
    assert rows[0]["ok"] and rows[0]["mode"] == "source", rows
