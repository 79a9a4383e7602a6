"""The engine without a Prefect server: an in-memory source and connectors, a real SQLite ledger.

The flows' own tests (tests/test_sync_flow.py and the rest) run the same engine inside Prefect
against real servers; these pin down the engine's decisions one by one, fast."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tasks.engine import states
from tasks.engine.model import RunFailed, RunOptions
from tasks.engine.run import SyncRun
from tasks.errors import (
    BudgetExhaustedError,
    CredentialsRefusedError,
    PermanentError,
    TransientError,
)
from tasks.ledger import Ledger
from tests.engine.memory import (
    LaterConnector,
    MemoryConnector,
    MemorySource,
    integration,
)

APPROVED = datetime.now(timezone.utc) - timedelta(hours=2)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.dispose()


def run(ledger, source, connector, options=None, run_id="r1", **integ_kw):
    integ, config = integration(**integ_kw)
    connects = []

    def connect():
        connects.append(1)
        return connector

    result = SyncRun(integ, config, ledger, source, connect, options, run_id).execute()
    result.connects = len(connects)
    return result


def statuses(ledger, key="acme/invoices"):
    return {r.doc_id: r.status for r in ledger.rows(key) if r.status != states.SUPERSEDED}


def test_delivers_new_documents_records_them_and_a_second_run_is_idle(ledger):
    src, out = MemorySource(), MemoryConnector()
    for i in range(3):
        src.put(f"D-{i}", approved_at=APPROVED, fields={"number": f"N-{i}"})
    src.put("PENDING", status="pending")
    src.put("OTHER", client="globex", approved_at=APPROVED)
    first = run(ledger, src, out)
    assert sorted(o.doc_id for o in first.outcomes) == ["D-0", "D-1", "D-2"]
    assert {o.status for o in first.outcomes} == {"delivered"} and first.failed == []
    assert statuses(ledger) == {"D-0": "delivered", "D-1": "delivered", "D-2": "delivered"}
    assert ledger.cursor("acme/invoices").position == "scan-1"  # the source's own cursor, saved once recorded
    fetches = src.fetches
    second = run(ledger, src, out, run_id="r2")
    assert second.outcomes == [] and second.connects == 0  # idle: no connection opened, nothing read
    assert src.fetches == fetches and out.sent == ["D-0", "D-1", "D-2"]


def test_one_bad_document_does_not_block_the_others_permanent_ones_park_after_max_attempts(ledger):
    src, out = MemorySource(), MemoryConnector()
    src.put("GOOD", approved_at=APPROVED)
    src.put("BAD", approved_at=APPROVED)
    src.put("SLOW", approved_at=APPROVED)
    out.fail["BAD"] = [PermanentError(f"document BAD: refused (400) by {out.label}") for _ in range(3)]
    out.fail["SLOW"] = [TransientError("document SLOW: 503") for _ in range(4)]  # more than the retries of one run
    result = run(ledger, src, out, max_attempts=2, retries=3)
    assert {o.doc_id: o.status for o in result.outcomes} == {"GOOD": "delivered", "BAD": "failed", "SLOW": "failed"}
    assert [o.doc_id for o in result.failed] == ["BAD", "SLOW"]
    assert "2 of 3 documents failed" in result.failure_message() and "BAD: document BAD: refused" in result.failure_message()
    second = run(ledger, src, out, run_id="r2", max_attempts=2, retries=3)
    assert {o.doc_id: o.status for o in second.outcomes} == {"BAD": "needs-attention", "SLOW": "delivered"}
    assert statuses(ledger) == {"GOOD": "delivered", "BAD": "needs-attention", "SLOW": "delivered"}
    assert run(ledger, src, out, run_id="r3", max_attempts=2).outcomes == []  # parked: left alone


def test_a_crash_between_send_and_record_is_settled_by_lookup_never_sent_twice(ledger):
    src, out = MemorySource(), MemoryConnector()
    for i in range(5):
        src.put(f"K-{i}", approved_at=APPROVED)
    out.crash_after = 2
    with pytest.raises(SystemExit):
        run(ledger, src, out)
    assert out.sent == ["K-0", "K-1"]
    sending = [r for r in ledger.rows("acme/invoices") if r.sending_since is not None]
    assert {r.doc_id for r in sending} == {f"K-{i}" for i in range(5)}  # the chunk's attempts were recorded first
    out.crash_after = None
    result = run(ledger, src, out, run_id="r2")
    assert {o.doc_id: o.status for o in result.outcomes} == {
        "K-0": "already-present", "K-1": "already-present", "K-2": "delivered", "K-3": "delivered", "K-4": "delivered"}
    assert out.sent == ["K-0", "K-1", "K-2", "K-3", "K-4"]  # each once


def test_refused_credentials_stop_the_run_naming_the_connection_and_park_nothing(ledger):
    src, out = MemorySource(), MemoryConnector()
    for i in range(3):
        src.put(f"A-{i}", approved_at=APPROVED)
    out.fail["A-0"] = [CredentialsRefusedError(f"{out.label}: login refused")]
    with pytest.raises(RunFailed, match="connection memory/out refused the credentials"):
        run(ledger, src, out, max_attempts=1)
    assert set(statuses(ledger).values()) == {"failed"} and out.sent == []
    assert ledger.cursor("acme/invoices") is None  # not moved: the next run sends them all


def test_a_used_up_call_budget_ends_the_run_completed_with_documents_waiting(ledger):
    src, out = MemorySource(), MemoryConnector()
    for i in range(4):
        src.put(f"B-{i}", approved_at=APPROVED)
    resumes = datetime.now(timezone.utc) + timedelta(hours=5)
    out.fail["B-1"] = [BudgetExhaustedError(f"{out.label}: daily limit reached, resumes at {resumes:%H:%M} UTC", resumes_at=resumes)]
    result = run(ledger, src, out, max_attempts=1)
    assert result.failed == [] and "daily limit reached" in result.stopped and "daily limit reached" in result.summary
    assert {o.doc_id: o.status for o in result.outcomes} == {"B-0": "delivered", "B-1": "waiting", "B-2": "waiting", "B-3": "waiting"}
    rows = {r.doc_id: r for r in ledger.rows("acme/invoices")}
    assert all(rows[f"B-{i}"].attempts == 0 and rows[f"B-{i}"].status == "pending" for i in (1, 2, 3))  # no attempt counted
    assert all(rows[f"B-{i}"].sending_since is None for i in (1, 2, 3))  # not sent: no lookup needed next time
    assert ledger.cursor("acme/invoices") is None
    later = run(ledger, src, out, run_id="r2", max_attempts=1)
    assert {o.doc_id for o in later.outcomes} == {"B-1", "B-2", "B-3"} and statuses(ledger) == {f"B-{i}": "delivered" for i in range(4)}


def test_later_confirmation_submitted_then_accepted_or_rejected_with_its_reason(ledger):
    src, ap = MemorySource(), LaterConnector()
    for d in ("OK", "NO", "WAIT"):
        src.put(d, approved_at=APPROVED)
    ap.verdicts = {"OK": ["pending", "accepted"], "NO": ["pending", "rejected: BR-CO-10 sum of lines does not match"], "WAIT": ["pending"]}
    first = run(ledger, src, ap, max_attempts=1)
    assert {o.doc_id: o.status for o in first.outcomes} == {"OK": "submitted", "NO": "submitted", "WAIT": "submitted"}
    assert first.failed == [] and statuses(ledger) == {"OK": "submitted", "NO": "submitted", "WAIT": "submitted"}
    row = ledger.row("acme/invoices", "OK", ledger.rows("acme/invoices", doc_ids=["OK"])[0].version)
    assert row.remote_ref.startswith("file-OK") and row.details["file_id"] == "file-OK" and row.submitted_at is not None
    second = run(ledger, src, ap, run_id="r2", max_attempts=1)  # nothing new to send: the run only confirms
    assert {o.doc_id: o.status for o in second.outcomes} == {"OK": "accepted", "NO": "rejected"}
    no = next(o for o in second.outcomes if o.doc_id == "NO")
    assert no.failed and "BR-CO-10 sum of lines does not match" in no.error
    assert statuses(ledger) == {"OK": "delivered", "NO": "needs-attention", "WAIT": "submitted"}
    assert "rejected by the destination: BR-CO-10" in ledger.rows("acme/invoices", doc_ids=["NO"])[0].last_error
    assert ap.sent.count("OK") == 1 and ap.sent.count("NO") == 1  # confirming never sends again
    summary = ledger.status_summary(["acme/invoices"], APPROVED, APPROVED)["acme/invoices"]
    assert summary["counts"]["submitted"] == 1 and summary["oldest_submitted"] is not None


def test_a_crash_between_submit_and_record_is_settled_by_lookup_as_submitted(ledger):
    src, ap = MemorySource(), LaterConnector()
    src.put("S-1", approved_at=APPROVED)
    ap.crash_after = 1
    with pytest.raises(SystemExit):
        run(ledger, src, ap)
    ap.crash_after = None
    ap.verdicts = {"S-1": ["accepted"]}
    result = run(ledger, src, ap, run_id="r2")
    assert [(o.doc_id, o.status) for o in result.outcomes] == [("S-1", "submitted"), ("S-1", "accepted")]
    assert ap.sent == ["S-1"] and statuses(ledger) == {"S-1": "delivered"}


def test_a_dry_run_maps_and_reports_but_records_and_sends_nothing(ledger):
    src, out = MemorySource(), MemoryConnector()
    src.put("DRY", approved_at=APPROVED)
    result = run(ledger, src, out, RunOptions(dry_run=True))
    assert [(o.doc_id, o.status, o.remote) for o in result.outcomes] == [("DRY", "would-deliver", "acme/DRY.pdf")]
    assert result.connects == 0 and ledger.rows("acme/invoices") == [] and ledger.cursor("acme/invoices") is None


def test_unreadable_documents_wait_or_fail_and_are_never_dropped(ledger):
    src, out = MemorySource(), MemoryConnector()
    src.put("WIP", approved_at=APPROVED, problem="~WIP.pdf is still being written")
    src.put("BROKEN", approved_at=APPROVED, problem="BROKEN.pdf is missing")
    result = run(ledger, src, out, max_attempts=3)
    assert {o.doc_id: o.status for o in result.outcomes} == {"WIP": "waiting", "BROKEN": "failed"}
    assert [o.doc_id for o in result.failed] == ["BROKEN"]
    again = run(ledger, src, out, run_id="r2", max_attempts=3)
    assert {o.doc_id: o.status for o in again.outcomes} == {"WIP": "waiting", "BROKEN": "failed"}  # looked at again


def test_a_second_document_mapped_to_a_path_another_holds_fails_naming_both(ledger):
    src, out = MemorySource(), MemoryConnector()
    src.put("A-1", approved_at=APPROVED, fields={"supplier": "Globex/BV"})
    src.put("A-2", approved_at=APPROVED, fields={"supplier": "Globex BV"})  # sanitises to the same name? no: another
    src.put("A-3", approved_at=APPROVED, fields={"supplier": "Globex_BV"})  # "Globex/BV" sanitises to this one
    mapping = {"folder": "{client}", "filename": "{supplier}.{ext}"}
    first = run(ledger, src, out, mapping=mapping, max_attempts=1)
    outcomes = {o.doc_id: o for o in first.outcomes}
    assert outcomes["A-1"].status == "delivered" and outcomes["A-2"].status == "delivered"
    assert outcomes["A-3"].status == "needs-attention"
    assert "document A-3: maps to acme/Globex_BV.pdf, which document A-1 already holds" in outcomes["A-3"].error
    assert out.sent == ["A-1", "A-2"]  # never written over A-1
    # in a later run, against what the ledger says was delivered earlier
    src.put("A-4", approved_at=APPROVED, fields={"supplier": "GLOBEX_bv"})  # the same file on a case-insensitive share
    later = run(ledger, src, out, run_id="r2", mapping=mapping, max_attempts=1)
    assert [(o.doc_id, o.status) for o in later.outcomes] == [("A-4", "needs-attention")]
    assert "which document A-1 already holds" in later.outcomes[0].error and "acme/GLOBEX_bv.pdf" in later.outcomes[0].error
    # a new version of the holder itself takes its path again
    src.put("A-1", approved_at=APPROVED, fields={"supplier": "Globex/BV"}, pdf=b"%PDF-1.7\ncorrected\n")
    again = run(ledger, src, out, run_id="r3", mapping=mapping, max_attempts=1)
    assert [(o.doc_id, o.status) for o in again.outcomes] == [("A-1", "delivered")]


def test_a_document_approved_before_the_window_that_was_never_delivered_is_delivered(ledger):
    src, out = MemorySource(), MemoryConnector()
    src.put("NOW-1", approved_at=APPROVED)
    run(ledger, src, out)  # the cursor now sits at this run's start: the next window starts a day before it
    old = datetime.now(timezone.utc) - timedelta(days=40)  # approved long ago (after activation), arriving only now
    src.put("LATE-1", approved_at=old)
    src.put("BEFORE-ACTIVATION", approved_at=datetime(2025, 12, 1, tzinfo=timezone.utc))
    result = run(ledger, src, out, run_id="r2")
    assert [(o.doc_id, o.status) for o in result.outcomes] == [("LATE-1", "delivered")]
    assert result.window[0] > old  # it was outside the window, and still delivered: the source lists everything


def test_a_source_that_goes_back_to_an_earlier_version_is_delivered_again(ledger):
    src, out = MemorySource(), MemoryConnector()
    v1, v2 = b"%PDF-1.7\nversion one\n", b"%PDF-1.7\nversion two\n"
    src.put("V-1", approved_at=APPROVED, pdf=v1)
    run(ledger, src, out)
    src.put("V-1", approved_at=APPROVED, pdf=v2)
    run(ledger, src, out, run_id="r2")
    src.put("V-1", approved_at=APPROVED, pdf=v1)  # the capture system reverts the correction
    result = run(ledger, src, out, run_id="r3")
    assert [(o.doc_id, o.status) for o in result.outcomes] == [("V-1", "delivered")]
    assert out.holds["V-1"] == v1
    assert out.sent == ["V-1", "V-1", "V-1"]
    assert run(ledger, src, out, run_id="r4").outcomes == []  # and then it is settled again


def test_documents_of_another_integration_s_type_leave_a_poll_idle(ledger):
    """A client's inbox split by type over several integrations: the invoices integration's poll is idle
    (settled without the engine, by the docroute worker) although the inbox holds order confirmations."""
    src, out = MemorySource(), MemoryConnector()
    src.put("INV-1", approved_at=APPROVED)
    src.put("ORD-1", type="order_confirmation", approved_at=APPROVED)
    integ, config = integration(filters={"document_types": ["invoice"]})

    def sync_run(run_id):
        return SyncRun(integ, config, ledger, src, lambda: out, RunOptions(), run_id)

    assert not sync_run("r1").settle_idle()  # INV-1 is new: the engine must run
    sync_run("r1").execute()
    assert out.sent == ["INV-1"]
    idle = sync_run("r2")
    assert idle.settle_idle() and idle.work == []  # ORD-1 is not this integration's work
    assert ledger.cursor(integ.key).last_run == "r2"
    src.put("INV-2", approved_at=APPROVED)
    assert not sync_run("r3").settle_idle()
