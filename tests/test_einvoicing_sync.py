"""The accounting and e-invoicing destinations through the sync flow, on the session's real Prefect server:
the local access point (submitted, then accepted or rejected with its reason, Restart instead of a second
file, buyer responses, the three send modes), Exact Online (paced by its rate-limit headers, the daily
budget ending the run Completed) and Debitoor, with UBL generated, validated and shown by preview."""

from __future__ import annotations

import base64
import os
import time
from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from deployments.config import ConfigError, load_config
from flows import cli
from flows.confirm import confirm_deliveries
from flows.checks import check_one
from flows.status import collect_status
from flows.sync import SyncFailed, sync
from tasks.sources.seed import write_document
from tasks.ubl.validate import validate
from tests.einvoicing_helpers import (
    access_point_integration,
    client_with_identifiers,
    invoice_meta,
    save_access_point,
    save_debitoor,
    save_exact,
    seed_invoices,
)
from tests.fakes.access_point import AccessPointAPI
from tests.fakes.debitoor_api import DebitoorAPI
from tests.fakes.exact_upload_api import ExactAPI

CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
HOUR_AGO = lambda: datetime.now(timezone.utc) - timedelta(hours=1)  # noqa: E731


@pytest.fixture
def ap():
    fake = AccessPointAPI(processing_seconds=0.8).start()
    yield fake
    fake.stop()


def statuses(ws, key) -> dict[str, str]:
    return {r["doc_id"]: r["status"] for r in ws.ledger().rows(key)}


def row_of(key: str) -> dict:
    return next(r for r in collect_status(client="acme") if r["integration"] == key)


def wait_processed(fake: AccessPointAPI) -> None:
    time.sleep(fake.processing_seconds + 0.3)


def test_access_point_submits_then_confirms_and_status_says_what_waits_and_since_when(workspace, ap):
    key, _ = access_point_integration(workspace, ap)
    ids = seed_invoices(workspace, 3)
    result = sync(integration=key)
    assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "submitted") == ids
    assert statuses(workspace, key) == {i: "submitted" for i in ids}
    assert ap.refused_parts == []  # every upload's parts were what the FileAPI takes
    for doc_id in ids:
        [up] = ap.by_number(doc_id)  # one file per document, its File ID recorded
        assert (up.send_mode, up.document_type, up.payload_name) == ("Production", "Invoice", f"{doc_id}.xml")
        assert [f for f in validate(up.payload) if f.fatal] == []
        embedded = etree.fromstring(up.payload).find(f".//{{{CBC}}}EmbeddedDocumentBinaryObject")
        assert base64.b64decode(embedded.text) == (workspace.inbox / f"{doc_id}.pdf").read_bytes()
        assert next(r for r in workspace.ledger().rows(key) if r["doc_id"] == doc_id)["remote_ref"] == up.id
    row = row_of(key)
    assert row["waiting for confirmation"] == 3 and row["oldest waiting since"] is not None
    assert row["waiting for"] == "3 processing"
    wait_processed(ap)
    confirmed = confirm_deliveries(integration=key)
    assert sorted(r["document"] for r in confirmed if r["status"] == "accepted") == ids
    assert statuses(workspace, key) == {i: "delivered" for i in ids}
    for r in workspace.ledger().rows(key):
        assert r.details["document_id"].startswith("DOC-") and r.details["state"] == "Delivered"
    row = row_of(key)
    assert row["waiting for confirmation"] == 0 and row["waiting for"] == "" and row["delivered today"] == 3


def test_a_rejection_shows_its_reason_and_a_resend_restarts_the_filepart(workspace, ap):
    key, _ = access_point_integration(workspace, ap)
    [bad, good] = seed_invoices(workspace, 2, prefix="R")
    ap.outcomes[bad] = ["error: receiver GLN 5400000000001 is not registered", "accept"]
    sync(integration=key)
    wait_processed(ap)
    with pytest.raises(SyncFailed) as info:  # the next run asks the access point, which rejected one
        sync(integration=key)
    assert bad in str(info.value) and "receiver GLN 5400000000001 is not registered" in str(info.value)
    rows = {r["doc_id"]: r for r in workspace.ledger().rows(key)}
    assert rows[bad]["status"] == "failed" and "receiver GLN 5400000000001 is not registered" in rows[bad]["last_error"]
    assert rows[good]["status"] == "delivered"
    row = row_of(key)
    assert row["failed"] == 1 and "receiver GLN 5400000000001 is not registered" in row["last error"]
    # sent again (the next run retries the failed document): the same file's part is restarted, no second upload
    [part] = ap.by_number(bad)[0].parts
    result = sync(integration=key)
    assert [o["status"] for o in result["outcomes"] if o["doc_id"] == bad] == ["submitted"]
    assert ap.restarts == [part.id] and len(ap.by_number(bad)) == 1
    wait_processed(ap)
    confirm_deliveries(integration=key)
    assert statuses(workspace, key) == {bad: "delivered", good: "delivered"}
    assert len(ap.uploads()) == 2  # one file per document, ever


def test_buyer_responses_are_recorded_shown_and_a_reject_is_a_rejection(workspace, ap):
    ref = save_access_point(workspace, ap, buyer_response_days=1)
    key, _ = access_point_integration(workspace, ap, block=ref)
    [accepted, rejected, silent] = seed_invoices(workspace, 3, prefix="B")
    ap.buyer[accepted] = ("RecipientAccept", "")
    ap.buyer[rejected] = ("RecipientReject", "order PO-77 was cancelled")
    sync(integration=key)
    wait_processed(ap)
    with pytest.raises(SyncFailed) as info:
        confirm_deliveries(integration=key)
    assert rejected in str(info.value) and "RecipientReject" in str(info.value) and "order PO-77 was cancelled" in str(info.value)
    rows = {r["doc_id"]: r for r in workspace.ledger().rows(key)}
    assert rows[accepted]["status"] == "delivered" and rows[accepted].details["buyer_response"] == "RecipientAccept"
    assert rows[rejected]["status"] == "failed" and "order PO-77 was cancelled" in rows[rejected]["last_error"]
    assert rows[silent]["status"] == "submitted"  # still within buyer_response_days
    assert "waiting for the buyer" in rows[silent]["last_error"]
    assert all(r["fetched"] for r in ap.responses)  # read responses are marked fetched at the access point
    row = row_of(key)
    assert row["buyer responses"] == "1 accepted, 1 rejected"
    assert row["waiting for"] == "1 buyer response" and row["waiting for confirmation"] == 1
    events = [e["detail"] for e in workspace.ledger().events_of(key, accepted) if e["event"] == "accepted"]
    assert events and "buyer accepted it (RecipientAccept)" in events[-1]


def test_the_three_send_modes_reach_the_access_point_as_its_own_modes(workspace, ap):
    ref = save_access_point(workspace, ap)
    keys = {}
    for mode in ("production", "test", "certification"):
        keys[mode], _ = access_point_integration(workspace, ap, name=f"ap-{mode}", block=ref, mode=mode,
                                                 filters={"document_types": [], "sub_organisations": [], "tags": [mode]})
        write_document(workspace.inbox, f"M-{mode}", client="acme", tags=[mode], metadata=invoice_meta(f"M-{mode}"),
                       approved_at=HOUR_AGO())
    load_config(only=keys["certification"])  # validate: the access point knows certification mode
    for mode, key in keys.items():
        sync(integration=key)
    assert {u.number: u.send_mode for u in ap.uploads()} == {
        "M-production": "Production", "M-test": "Test", "M-certification": "Certification"}
    wait_processed(ap)
    confirm_deliveries()
    for mode, key in keys.items():
        assert statuses(workspace, key) == {f"M-{mode}": "delivered"}
    # a connector without a certification mode is refused at validation, naming the integration and the field
    exact = ExactAPI().start()
    try:
        bad = workspace.integration(name="exact-cert", connection=save_exact(workspace, exact), mode="certification")
        with pytest.raises(ConfigError) as info:
            load_config(only=bad)
        assert "exact-cert" in str(info.value) and "mode" in str(info.value)
    finally:
        exact.stop()


def test_ubl_problems_fail_the_document_named_before_anything_is_sent_and_preview_shows_them(workspace, ap, capsys):
    key, _ = access_point_integration(workspace, ap)
    when = HOUR_AGO()
    write_document(workspace.inbox, "U-TOTAL", client="acme", approved_at=when, metadata=invoice_meta("U-TOTAL", total="999.99"))
    write_document(workspace.inbox, "U-REF", client="acme", approved_at=when,
                   metadata={k: v for k, v in invoice_meta("U-REF").items() if k != "po_number"})
    write_document(workspace.inbox, "U-XML", client="acme", approved_at=when, metadata=invoice_meta("U-XML"), xml=True)
    with pytest.raises(SyncFailed):
        sync(integration=key)
    rows = {r["doc_id"]: r for r in workspace.ledger().rows(key)}
    assert "document U-TOTAL" in rows["U-TOTAL"]["last_error"] and "mapping.ubl.total" in rows["U-TOTAL"]["last_error"]
    assert "[PEPPOL-EN16931-R003]" in rows["U-REF"]["last_error"]
    # the source's own XML is UBL (by its namespace) but not valid: every broken rule is named
    assert "U-XML.xml" in rows["U-XML"]["last_error"] and "[BR-" in rows["U-XML"]["last_error"]
    assert ap.uploads() == []  # nothing reached the access point
    assert cli.main(["preview", key, "U-REF"]) == 1
    err = capsys.readouterr().err
    assert "document U-REF" in err and "PEPPOL-EN16931-R003" in err


def test_a_valid_ubl_from_the_source_passes_through_unchanged(workspace, ap, capsys):
    from tests.connectors.harness_access_point import invoice_values, ubl_for

    key, _ = access_point_integration(workspace, ap)
    when = HOUR_AGO()
    write_document(workspace.inbox, "S-1", client="acme", approved_at=when, metadata=invoice_meta("S-1"), xml=True)
    own = ubl_for(invoice_values("S-1"), None)  # the capture system's own UBL (no PDF inside)
    (workspace.inbox / "S-1.xml").write_bytes(own)
    old = time.time() - 3600
    os.utime(workspace.inbox / "S-1.xml", (old, old))  # settled, as the capture system's files are
    assert cli.main(["preview", key, "S-1"]) == 0
    shown = capsys.readouterr().out
    assert "given by the source, unchanged" in shown
    sync(integration=key)
    [up] = ap.by_number("S-1")
    assert up.payload == own


def test_exact_sync_is_paced_so_no_429_is_received(workspace):
    exact = ExactAPI(minutely=6, window=2.0, daily=10_000).start()
    try:
        client_with_identifiers(workspace)
        key = workspace.integration(name="to-exact", connection=save_exact(workspace, exact))
        ids = seed_invoices(workspace, 8, prefix="X")  # 8 documents, 2 calls each (document, PDF): past 6 calls in 2 s
        started = time.monotonic()
        result = sync(integration=key)
        took = time.monotonic() - started
        assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered") == ids
        assert exact.refused == 0, "a 429 was received"
        assert took >= 2.0  # it had to wait for the next minutely window
        for doc_id in ids:
            [doc] = [d for d in exact.documents.values() if d.Subject == f"invoice {doc_id} Globex Industrial BV"]
            assert exact.files_of(doc.ID) == {f"{doc_id}.pdf": [(workspace.inbox / f"{doc_id}.pdf").read_bytes()]}
            assert doc.Type == 20 and doc.Division == 123456 and doc.DocumentDate == "2026-03-02"
        row = check_one(f"exact-online-connection/exact-{workspace.tag}")
        assert row["ok"] and "only the latest connection" in row["message"]
    finally:
        exact.stop()


def test_exact_daily_budget_ends_the_run_completed_with_the_rest_waiting(workspace):
    exact = ExactAPI(minutely=1000, window=60, daily=7).start()
    try:
        client_with_identifiers(workspace)
        key = workspace.integration(name="to-exact", connection=save_exact(workspace, exact))
        ids = seed_invoices(workspace, 6, prefix="D")
        result = sync(integration=key)  # Completed: no exception
        assert "daily limit reached" in result["summary"] and "resumes at" in result["summary"]
        done = [o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered"]
        assert 1 <= len(done) < len(ids)
        assert exact.refused == 0
        rows = {r["doc_id"]: r for r in workspace.ledger().rows(key)}
        assert all(rows[i]["status"] == "delivered" for i in done)
        assert all(rows[i]["status"] == "pending" for i in ids if i not in done and i in rows)
        assert all(len(exact.files_of(d.ID)) == 1 for d in exact.documents.values())  # none left half made
        with exact.lock:  # the next day
            exact.daily, exact.used_today = 1000, type(exact.used_today)()
        sync(integration=key)
        assert statuses(workspace, key) == {i: "delivered" for i in ids}
        subjects = sorted(d.Subject for d in exact.documents.values())
        assert subjects == sorted(f"invoice {i} Globex Industrial BV" for i in ids)  # one Exact document each
    finally:
        exact.stop()


def test_debitoor_expenses_with_their_file_once_each(workspace):
    fake = DebitoorAPI().start()
    try:
        key = workspace.integration(name="to-debitoor", connection=save_debitoor(workspace, fake))
        ids = seed_invoices(workspace, 3, prefix="DB")
        result = sync(integration=key)
        assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered") == ids
        assert sync(integration=key)["outcomes"] == []
        assert len(fake.expenses) == 3
        for e in fake.expenses.values():
            doc_id = e["lines"][0]["description"].split()[-3]
            meta = invoice_meta(doc_id)
            assert fake.files[e["fileId"]][2] == (workspace.inbox / f"{doc_id}.pdf").read_bytes()
            assert (e["supplierName"], e["supplierCiNumber"], e["supplierCountry"]) == ("Globex Industrial BV", "NL812345678B01", "NL")
            assert e["lines"][0]["netAmount"] == float(meta["net"]) and e["lines"][0]["taxRate"] == 21.0
            assert e["date"] == "2026-03-02" and e["number"]
    finally:
        fake.stop()

