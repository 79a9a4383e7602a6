"""The sync flow on a real Prefect server: the five guarantees, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from prefect.client.orchestration import get_client

from flows.sync import SEND_CHUNK, SyncFailed, sync
from tasks.ledger import DELIVERED, FAILED, NEEDS_ATTENTION
from tasks.sources.seed import invoice_metadata, write_document
from tests.conftest import confirmations, utc

NOW = lambda: datetime.now(timezone.utc)  # noqa: E731


def seed(ws, n, client="acme", prefix="INV", approved=None, **kw):
    import random

    rng = random.Random(n)
    ids = []
    for i in range(n):
        doc_id = f"{prefix}-{i:04d}"
        when = approved or NOW() - timedelta(hours=1)
        write_document(ws.inbox, doc_id, client=client, approved_at=when, metadata=invoice_metadata(rng, doc_id, when), **kw)
        ids.append(doc_id)
    return ids


def delivered_files(ws, client="acme", doc_type="invoice"):
    folder = ws.out / client / doc_type
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_delivers_new_approved_documents_and_records_them(workspace):
    key = workspace.integration()
    ids = seed(workspace, 5)
    result = sync(integration=key)
    assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered") == ids
    assert delivered_files(workspace) == [f"{i}.pdf" for i in ids]
    for i in ids:
        assert (workspace.out / "acme/invoice" / f"{i}.pdf").read_bytes() == (workspace.inbox / f"{i}.pdf").read_bytes()
    rows = workspace.ledger().rows(key)
    assert {r["doc_id"]: r["status"] for r in rows} == {i: DELIVERED for i in ids}
    assert all(r["remote_ref"].endswith(f"{r['doc_id']}.pdf") for r in rows)
    # a second run finds nothing new and delivers nothing again
    again = sync(integration=key)
    assert again["outcomes"] == []


RUNNER = """
import json, sys, time
from flows.sync import sync, SyncFailed
start = time.time()
try:
    result = sync(integration=sys.argv[1])
    print("RESULT " + json.dumps([o["status"] for o in result["outcomes"]]))
except SyncFailed as exc:
    print("FAILED " + str(exc))
print(f"SPAN {start} {time.time()}")
"""


def start_sync_process(ws, key):
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, key],
        env=ws.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )


def test_nothing_lost_nothing_twice_when_the_sync_process_is_killed_mid_run(workspace):
    key = workspace.integration(throttle_per_second=25)
    ids = seed(workspace, 150)
    proc = start_sync_process(workspace, key)
    folder = workspace.out / "acme" / "invoice"
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.pdf"))) < 30 if folder.exists() else True:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.pdf")}
    assert 30 <= len(before) < len(ids)  # killed mid-run

    result = sync(integration=key)
    assert delivered_files(workspace) == [f"{i}.pdf" for i in ids]
    assert list(folder.glob(".*.partial")) == []  # what the killed write left was removed
    for name, (ino, mtime) in before.items():  # what the killed run delivered was not written again
        st = (folder / name).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), name
    for i in ids:
        assert (folder / f"{i}.pdf").read_bytes() == (workspace.inbox / f"{i}.pdf").read_bytes()
    assert confirmations(workspace, key) == {i: 1 for i in ids}
    assert {r["status"] for r in workspace.ledger().rows(key)} == {DELIVERED}
    rerun = {o["doc_id"]: o["status"] for o in result["outcomes"]}
    delivered_before_kill = {n.removesuffix(".pdf") for n in before}
    assert set(rerun) == set(ids) - delivered_before_kill | {d for d, s in rerun.items() if s == "already-present"}
    # at most the chunk in flight at the kill was sent but not yet recorded: found by lookup, not sent again
    assert len([s for s in rerun.values() if s == "already-present"]) <= SEND_CHUNK


def test_two_concurrent_runs_never_deliver_a_document_twice(workspace):
    key = workspace.integration(throttle_per_second=30)
    ids = seed(workspace, 60)
    procs = [start_sync_process(workspace, key) for _ in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    results = [json.loads(line.split(" ", 1)[1]) for out in outputs for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 2, outputs
    (s1, e1), (s2, e2) = [tuple(map(float, line.split()[1:])) for out in outputs for line in out.splitlines() if line.startswith("SPAN ")]
    assert s1 < e2 and s2 < e1  # the two runs really were alive at the same time
    delivered_per_run = sorted(r.count("delivered") for r in results)
    assert delivered_per_run == [0, len(ids)]  # the second waited for the lock, then found nothing to do
    assert confirmations(workspace, key) == {i: 1 for i in ids}
    assert delivered_files(workspace) == [f"{i}.pdf" for i in ids]


def test_one_bad_document_does_not_block_the_others_and_the_run_names_it(workspace):
    key = workspace.integration(max_attempts=2)
    good = seed(workspace, 4)
    write_document(workspace.inbox, "BAD-EMPTY", client="acme", approved_at=NOW() - timedelta(hours=1), pdf=b"")
    write_document(workspace.inbox, "BAD-NOPDF", client="acme", approved_at=NOW() - timedelta(hours=1))
    (workspace.inbox / "BAD-NOPDF.pdf").unlink()
    state = sync(integration=key, return_state=True)
    assert state.is_failed()
    assert "BAD-EMPTY" in state.message and "BAD-NOPDF" in state.message
    assert "2 of 6 documents failed" in state.message
    assert delivered_files(workspace) == [f"{i}.pdf" for i in good]
    statuses = {r["doc_id"]: r["status"] for r in workspace.ledger().rows(key)}
    assert statuses["BAD-EMPTY"] == FAILED and statuses["BAD-NOPDF"] == FAILED
    assert "is empty" in workspace.ledger().rows(key, doc_ids=["BAD-EMPTY"])[0]["last_error"]

    # the next run tries them again; after max_attempts a permanent problem is parked
    with pytest.raises(SyncFailed):
        sync(integration=key)
    statuses = {r["doc_id"]: r["status"] for r in workspace.ledger().rows(key)}
    assert statuses["BAD-EMPTY"] == NEEDS_ATTENTION and statuses["BAD-NOPDF"] == NEEDS_ATTENTION
    assert sync(integration=key)["outcomes"] == []  # parked ones do not fail every later run

    # the capture system fixes the missing PDF: a parked document comes back once it changes
    (workspace.inbox / "BAD-NOPDF.pdf").write_bytes((workspace.inbox / f"{good[0]}.pdf").read_bytes())
    os.utime(workspace.inbox / "BAD-NOPDF.pdf", (time.time() - 60, time.time() - 60))
    result = sync(integration=key)
    assert [o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered"] == ["BAD-NOPDF"]


def test_malformed_and_half_written_pairs_are_retried_not_dropped(workspace):
    key = workspace.integration(lookback="1h")
    seed(workspace, 2)
    (workspace.inbox / "HALF-1.pdf").write_bytes(b"%PDF-1.4 still being written")  # young: settle time not passed
    write_document(workspace.inbox, "HALF-1", client="acme", approved_at=NOW() - timedelta(hours=30), settled=False)
    (workspace.inbox / "BROKEN-1.json").write_text('{"client": "acme", "type": "inv')
    old = time.time() - 3600
    os.utime(workspace.inbox / "BROKEN-1.json", (old, old))
    state = sync(integration=key, return_state=True)
    assert state.is_failed() and "BROKEN-1" in state.message and "not valid UTF-8 JSON" in state.message
    assert "HALF-1" not in state.message  # still being written is not a failure
    # both are approved long before the cursor: only the ledger brings them back
    time.sleep(1.2)
    write_document(
        workspace.inbox, "BROKEN-1", client="acme", approved_at=NOW() - timedelta(hours=30),
        metadata={"number": "B1", "supplier": "Initech"},
    )
    result = sync(integration=key)
    assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered") == ["BROKEN-1", "HALF-1"]
    assert (workspace.out / "acme/invoice/HALF-1.pdf").exists()


def test_late_approvals_are_delivered_whatever_the_lookback_and_before_activation_never(workspace):
    """The inbox lists every document on each scan: a late approval inside the lookback, and one outside
    it that the ledger never saw (issue 12), are both delivered by scheduled runs; one approved before
    activation never is, not even by a backfill from before it."""
    key = workspace.integration(lookback="6h", activated_at="2026-06-01T00:00:00Z")
    write_document(workspace.inbox, "LATE-1", client="acme", status="pending", approved_at=None)
    write_document(workspace.inbox, "OLD-1", client="acme", approved_at=utc(2026, 5, 31, 23, 59))
    sync(integration=key)
    assert delivered_files(workspace) == []
    cursor = workspace.ledger().cursor(key).checked_until
    # approved later, but with an approval time before the cursor (inside the lookback)
    write_document(workspace.inbox, "LATE-1", client="acme", approved_at=cursor - timedelta(hours=2))
    # outside the lookback: found all the same, since the inbox lists everything
    write_document(workspace.inbox, "LATE-2", client="acme", approved_at=cursor - timedelta(hours=9))
    sync(integration=key)
    assert delivered_files(workspace) == ["LATE-1.pdf", "LATE-2.pdf"]
    backfill = sync(integration=key, since=utc(2026, 1, 1))  # backfill from before activation: activation still holds
    assert backfill["outcomes"] == [] and delivered_files(workspace) == ["LATE-1.pdf", "LATE-2.pdf"]
    assert workspace.ledger().cursor(key).checked_until > cursor
    assert workspace.ledger().rows(key, doc_ids=["OLD-1"]) == []


def test_force_redelivers_and_dry_run_delivers_nothing(workspace):
    key = workspace.integration(mapping={"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}", "sidecar": True})
    ids = seed(workspace, 3)
    dry = sync(integration=key, dry_run=True)
    assert [o["status"] for o in dry["outcomes"]] == ["would-deliver"] * 3
    assert [o["remote"] for o in dry["outcomes"]] == [f"acme/invoice/{i}.pdf" for i in ids]
    assert not any(workspace.out.rglob("*"))
    assert workspace.ledger().rows(key) == [] and workspace.ledger().cursor(key) is None

    sync(integration=key)
    assert delivered_files(workspace) == sorted([f"{i}.pdf" for i in ids] + [f"{i}.json" for i in ids])
    sidecar = json.loads((workspace.out / f"acme/invoice/{ids[0]}.json").read_text())
    assert sidecar["doc_id"] == ids[0] and sidecar["fields"]["number"] == ids[0]
    (workspace.out / f"acme/invoice/{ids[1]}.pdf").unlink()  # someone deleted it at the destination
    assert sync(integration=key)["outcomes"] == []
    assert not (workspace.out / f"acme/invoice/{ids[1]}.pdf").exists()
    forced = sync(integration=key, force=True, since=utc(2026, 1, 1))
    assert sorted(o["doc_id"] for o in forced["outcomes"]) == ids
    assert (workspace.out / f"acme/invoice/{ids[1]}.pdf").read_bytes() == (workspace.inbox / f"{ids[1]}.pdf").read_bytes()


async def _artifacts_and_run(flow_run_id, key):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
        return run, arts


def test_run_is_named_after_the_integration_and_reports_per_document(workspace):
    import asyncio

    key = workspace.integration(name="invoices-report")
    ids = seed(workspace, 3)
    write_document(workspace.inbox, "BAD-Z", client="acme", approved_at=NOW() - timedelta(hours=1), pdf=b"not a pdf")
    state = sync(integration=key, return_state=True)
    run, arts = asyncio.run(_artifacts_and_run(state.state_details.flow_run_id, "sync-acme-invoices-report"))
    assert run.name.startswith("acme/invoices-report ")
    assert run.parameters["integration"] == key and run.parameters["force"] is False
    assert len(arts) == 1 and arts[0].type == "table"
    rows = json.loads(arts[0].data) if isinstance(arts[0].data, str) else arts[0].data
    by_doc = {r["document"]: r for r in rows}
    assert set(by_doc) == set(ids) | {"BAD-Z"}
    assert by_doc["BAD-Z"]["status"] == "failed" and "not a PDF" in by_doc["BAD-Z"]["error"]
    assert by_doc[ids[0]]["remote path"].endswith(f"{ids[0]}.pdf")


def test_bad_configuration_fails_before_any_document_is_touched(workspace):
    from deployments.config import ConfigError

    key = workspace.integration(mapping={"folder": "{client}", "filename": "{suplier}.{ext}"})
    seed(workspace, 2)
    state = sync(integration=key, return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError) as info:
        state.result()
    text = str(info.value)
    assert "acme.yaml" in text and "'invoices'" in text and "mapping.filename" in text and "{suplier}" in text
    assert workspace.ledger().rows(key) == [] and workspace.ledger().cursor(key) is None
    assert not any(workspace.out.rglob("*"))

    key = workspace.integration(connection="local-folder-connection/no-such-block")
    with pytest.raises(ConfigError, match="connection: block 'local-folder-connection/no-such-block' does not exist"):
        sync(integration=key)
    assert not any(workspace.out.rglob("*"))


def test_test_mode_delivers_to_the_connections_test_folder(workspace):
    key = workspace.integration(mode="test")
    ids = seed(workspace, 2)
    sync(integration=key)
    assert not any(workspace.out.rglob("*.pdf"))
    assert sorted(p.name for p in (workspace.root / "out-test").rglob("*.pdf")) == [f"{i}.pdf" for i in ids]


def test_cli_preview_and_validate(workspace):
    key = workspace.integration(mapping={"folder": "{external_id}/{approved_at:%Y/%m}", "filename": "{number}_{supplier}.{ext}"})
    write_document(
        workspace.inbox, "PRE-1", client="acme", approved_at=utc(2026, 3, 4, 10),
        metadata={"number": "INV/77", "supplier": "../../etc Société"},
    )
    cwd = os.path.dirname(os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-m", "flows.cli", "preview", key, "PRE-1"], env=workspace.env(), capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert [f["path"] for f in shown["files"]] == ["EXT1/2026/03/INV_77__._etc Société.pdf"]  # "/" and ".." never survive
    assert not any(workspace.out.rglob("*"))  # previewing delivers nothing

    workspace.integration("other", filters={"document_types": ["invoice"]}, mapping={"folder": "{client}", "filename": "{doc_id}.{ext}", "sidecar": "yes please"})
    bad = subprocess.run([sys.executable, "-m", "flows.cli", "validate"], env=workspace.env(), capture_output=True, text=True, cwd=cwd)
    assert bad.returncode == 2
    assert "acme.yaml: integration 'other': mapping.sidecar" in bad.stderr


def test_archive_after_transfer_moves_only_recorded_deliveries(workspace):
    key = workspace.integration(archive_after_transfer=True)
    ids = seed(workspace, 2)
    write_document(workspace.inbox, "ARC-BAD", client="acme", approved_at=NOW() - timedelta(hours=1), pdf=b"")
    with pytest.raises(SyncFailed, match="ARC-BAD"):
        sync(integration=key)
    archive = workspace.inbox / "archive"
    assert sorted(p.name for p in archive.iterdir()) == sorted([f"{i}.pdf" for i in ids] + [f"{i}.json" for i in ids])
    assert (workspace.inbox / "ARC-BAD.json").exists() and (workspace.inbox / "ARC-BAD.pdf").exists()  # not delivered: stays
    assert {r["doc_id"]: r["status"] for r in workspace.ledger().rows(key)}[ids[0]] == DELIVERED
    with pytest.raises(SyncFailed):  # the archived ones are not "missing": only the bad one is retried
        sync(integration=key)
    assert [e["doc_id"] for e in workspace.ledger().events_of(key) if e["event"] == "superseded"] == []


def test_a_new_version_of_a_delivered_document_is_delivered_again(workspace):
    key = workspace.integration()
    when = NOW() - timedelta(hours=1)
    write_document(workspace.inbox, "VER-1", client="acme", approved_at=when, version="1")
    sync(integration=key)
    write_document(workspace.inbox, "VER-1", client="acme", approved_at=when, version="2")  # corrected metadata
    # the files are identical, so the folder already holds them: recorded for version 2, nothing rewritten
    assert [o["status"] for o in sync(integration=key)["outcomes"]] == ["already-present"]
    write_document(workspace.inbox, "VER-2", client="acme", approved_at=when)
    sync(integration=key)
    write_document(workspace.inbox, "VER-2", client="acme", approved_at=when, pdf_size=9000)  # new content
    assert [o["doc_id"] for o in sync(integration=key)["outcomes"]] == ["VER-2"]
    rows = workspace.ledger().rows(key)
    assert sorted((r["doc_id"], r["status"]) for r in rows) == [("VER-1", DELIVERED)] * 2 + [("VER-2", DELIVERED)] * 2


def test_connector_templates_are_checked_with_the_configuration(workspace):
    from blocks.smtp import SmtpConnection
    from deployments.config import ConfigError, load_config

    SmtpConnection(host="127.0.0.1", port=2525, security="none", from_address="docroute@example.com").save(f"smtp-{workspace.tag}")
    ref = f"smtp-connection/smtp-{workspace.tag}"
    key = workspace.integration(connection=ref, connection_options={"to": ["ap@example.com"], "subject": "Invoice {numbr}"})
    with pytest.raises(ConfigError, match=r"integration 'invoices': connection_options: unknown placeholder \{numbr\}"):
        load_config(only=key)
    key = workspace.integration(connection=ref, connection_options={"to": ["ap@example.com"], "subject": "Invoice {number}"})
    assert load_config(only=key).get(key).connection == ref
    key = workspace.integration(connection=ref, connection_options={"subject": "no recipients"})
    with pytest.raises(ConfigError, match=r"connection_options: to: required field is missing"):
        load_config(only=key)
