"""The API sources through the flows, on a real Prefect server, against their local fakes: GetMyInvoices,
Exact Online and Docbits. Operations (sync, archive or tag after transfer, late approvals, backfill,
re-run of a failed run, parked documents, status, reconcile, connection check) work on them
unchanged, and after every fault (an expired key, a 429 storm, a locked document, corrupt base64,
a document deleted between list and fetch, a page that changes while it is read, a refresh token
reused, the daily budget used up) nothing is lost, nothing is delivered twice, and the error names
the document or the connection."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests
from pydantic import SecretStr

from blocks.docbits import DocbitsSource
from blocks.exact_online import ExactOnlineSource
from blocks.getmyinvoices import GetMyInvoicesSource
from deployments.config import ConfigError, load_config
from flows.backfill import backfill
from flows.checks import check_connections, check_one
from flows.parked import parked_documents
from flows.reconcile import reconcile
from flows.status import collect_status
from flows.sync import sync
from tasks.ledger import DELIVERED, NEEDS_ATTENTION
from tasks.sources.base import Window
from tasks.sources.seed import pdf_bytes
from tests.conftest import confirmations, utc
from tests.fakes.docbits_api import DocbitsAPI
from tests.fakes.exact_api import ExactAPI
from tests.fakes.getmyinvoices_api import GetMyInvoicesAPI, ubl

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def run(key: str, **kw):
    """A sync run's final state."""
    return sync(integration=key, return_state=True, **kw)


def delivered(ws, *parts: str) -> list[str]:
    folder = ws.out.joinpath("acme", *parts)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def statuses(ws, key: str) -> dict[str, str]:
    return {r.doc_id: r.status for r in ws.ledger().rows(key)}


# -- GetMyInvoices ----------------------------------------------------------------------------------------
@pytest.fixture
def gmi():
    api = GetMyInvoicesAPI().start()
    yield api
    api.stop()


def gmi_source(ws, api: GetMyInvoicesAPI, name: str = "gmi", **fields) -> str:
    block = GetMyInvoicesSource(**{"api_key": api.api_key, "base_url": api.base_url, "ca_bundle": api.ca_bundle, "client": "acme",
                                   "calls_per_minute": None, "request_timeout": 10, **fields})
    block.save(f"{name}-{ws.tag}", overwrite=True)
    return f"getmyinvoices-source/{name}-{ws.tag}"


def gmi_doc(api: GetMyInvoicesAPI, number: str, *, day: str = "2026-11-20", kind: str = "INCOMING_INVOICE", approved=True,
            size: int = 20_000, **kw):
    pdf = pdf_bytes(f"{kind} {number}", size)
    fields = {"documentNumber": number, "companyName": "Globex Industrial BV", "documentDate": day, "grossAmount": "121.00",
              "currency": "EUR"}
    return api.add(document_type=kind, data=pdf, filename=f"{number}.pdf", fields=fields, approved=approved,
                   completed_at=NOW - timedelta(hours=1) if approved else None, **kw)


def test_getmyinvoices_sync_archive_late_approval_parked_status_reconcile_backfill_and_check(workspace, gmi):
    g1 = gmi_doc(gmi, "RE-1", attachments=[("RE-1.xml", ubl("RE-1"))])
    g2 = gmi_doc(gmi, "RE-2", kind="CREDIT_NOTE", day="2026-11-25")
    g3 = gmi_doc(gmi, "RE-3", approved=False)
    g4 = gmi.add(data=b"", filename=None, fields={"documentNumber": "RE-4"}, approved=True)  # no file: a problem
    source = gmi_source(workspace, gmi)
    key = workspace.integration(source=source, archive_after_transfer=True, max_attempts=1,
                                mapping={"folder": "{client}/{doc_type}", "filename": "{number}.{ext}", "sidecar": True})

    state = run(key)
    assert state.is_failed() and f"{g4.uid}: document {g4.uid}: GetMyInvoices holds no file" in state.message
    assert delivered(workspace, "invoice") == ["RE-1.json", "RE-1.pdf", "RE-1.xml"]
    assert (workspace.out / "acme" / "invoice" / "RE-1.pdf").read_bytes() == g1.data
    assert (workspace.out / "acme" / "invoice" / "RE-1.xml").read_bytes() == ubl("RE-1")  # the UBL attachment, an extra file
    sidecar = json.loads((workspace.out / "acme" / "invoice" / "RE-1.json").read_text())
    assert sidecar["fields"]["number"] == "RE-1" and sidecar["fields"]["total"] == "121.00" and sidecar["fields"]["issue_date"] == "2026-11-20"
    assert delivered(workspace, "credit_note") == ["RE-2.json", "RE-2.pdf"]
    assert gmi.doc(g1.uid).archived and gmi.doc(g2.uid).archived and not gmi.doc(g3.uid).archived  # after the recorded delivery
    assert statuses(workspace, key) == {str(g1.uid): DELIVERED, str(g2.uid): DELIVERED, str(g4.uid): NEEDS_ATTENTION}
    cursor = json.loads(workspace.ledger().cursor(key).position)
    assert str(g3.uid) in cursor["pending"]  # asked again next time: its approval is not an update at GetMyInvoices

    gmi.complete(g3.uid)  # approved late; updatedOrNewSinceFilter does not show it
    assert run(key).is_completed()  # the parked one does not fail every run
    assert "RE-3.pdf" in delivered(workspace, "invoice") and gmi.doc(g3.uid).archived

    row = {r["integration"]: r for r in collect_status("acme")}[key]
    assert row["needs attention"] == 1 and row["cursor"] is not None
    assert reconcile(integration=key, return_state=True).is_completed()

    # the file arrives in GetMyInvoices: a parked retry delivers it
    fixed = gmi.add(uid=g4.uid, data=pdf_bytes("RE-4", 5000), filename="RE-4.pdf", fields={"documentNumber": "RE-4"}, approved=True)
    report = parked_documents(integration=key, action="retry", document_ids=[str(g4.uid)], reason="file uploaded", by="ops")
    assert [(r["document"], r["after"]) for r in report] == [(str(g4.uid), DELIVERED)]
    assert (workspace.out / "acme" / "invoice" / "RE-4.pdf").read_bytes() == fixed.data

    # a backfill selects by document date (GetMyInvoices' period): two new documents approved now, dated apart
    early = gmi_doc(gmi, "RE-10", day="2026-10-02")
    gmi_doc(gmi, "RE-11", day="2026-10-20")
    on_demand = workspace.integration("archive", source=source, enabled=False,
                                      mapping={"folder": "backfill/{doc_type}", "filename": "{number}.{ext}"})
    result = backfill(integration=on_demand, since=utc(2026, 10, 1), until=utc(2026, 10, 7), chunk="7d")
    assert [c["status"] for c in result["chunks"]] == ["done"]
    assert sorted(p.name for p in (workspace.out / "backfill" / "invoice").iterdir()) == ["RE-10.pdf"]
    assert statuses(workspace, on_demand) == {str(early.uid): DELIVERED}
    backfill(integration=on_demand, since=utc(2026, 10, 1), until=utc(2026, 10, 7), chunk="7d")  # again: nothing new
    assert confirmations(workspace, on_demand) == {str(early.uid): 1}
    assert confirmations(workspace, key) == {str(g1.uid): 1, str(g2.uid): 1, str(g3.uid): 1, str(g4.uid): 1}

    rows = check_connections(connections=[source])
    assert rows[0]["ok"] and "account Acme Testkonto (G-20707-0)" in rows[0]["message"], rows


def test_getmyinvoices_approval_not_required_and_tag_after_transfer(workspace, gmi):
    """filters.approved_only false (GetMyInvoices' approval flag off): every document on arrival, no call per
    document for its workflow; source_options pick the tag instead of archiving, and a type map."""
    a = gmi_doc(gmi, "NA-1", approved=None)  # no workflow at all
    b = gmi_doc(gmi, "NA-2", kind="REMINDER", approved=False)
    key = workspace.integration(source=gmi_source(workspace, gmi), archive_after_transfer=True,
                                filters={"approved_only": False},
                                source_options={"mark_exported": "tag", "export_tag": "sent-to-erp", "type_map": {"REMINDER": "invoice"}},
                                mapping={"folder": "{client}/{doc_type}", "filename": "{number}.{ext}"})
    assert run(key).is_completed()
    assert delivered(workspace, "invoice") == ["NA-1.pdf", "NA-2.pdf"]
    assert gmi.calls("GET", r"/documents/\d+$") and not [r for r in gmi.calls("GET", r"/documents/\d+$")
                                                          if r.arg("includeDocument") == "false"]
    for doc in (a, b):
        assert gmi.doc(doc.uid).tags == ["sent-to-erp"] and not gmi.doc(doc.uid).archived  # the full list sent
    assert run(key).is_completed() and confirmations(workspace, key) == {str(a.uid): 1, str(b.uid): 1}

    # a misspelt source option fails before any document is touched, naming the field
    workspace.integration(source=gmi_source(workspace, gmi), source_options={"mark_exportd": "tag"})
    with pytest.raises(ConfigError, match=r"source_options: mark_exportd: unknown field"):
        load_config(only=key)


def test_getmyinvoices_faults_lose_nothing_and_deliver_nothing_twice(workspace, gmi):
    docs = [gmi_doc(gmi, f"F-{i}") for i in range(4)]
    source = gmi_source(workspace, gmi, page_size=2)
    key = workspace.integration(source=source, archive_after_transfer=True, retry_delay=0.05,
                                mapping={"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}"})
    expected: set[str] = set()

    # an expired key: the run fails naming the source, nothing is parked, the cursor stays
    gmi.expire_key()
    state = run(key)
    assert state.is_failed() and f"cannot read source {source}" in state.message and "refused the API key" in state.message
    assert "API Key does not exist" in state.message and gmi.api_key not in state.message
    assert statuses(workspace, key) == {} and workspace.ledger().cursor(key) is None
    gmi.keys[gmi.api_key] = "ok"

    # a 429 storm (Retry-After honoured), a page that changes while it is read (three documents arrive after
    # page 1: the listing is read again), a locked document, one deleted between its listing and its download
    gmi.storm(times=2, retry_after=1)
    gmi.add_while_listing(3, data=pdf_bytes("late", 3000), fields={"documentNumber": "NEW"}, approved=True)
    gmi.lock_document(docs[1].uid)
    gmi.after("GET", rf"/documents/{docs[2].uid}$", lambda req: gmi.delete(docs[2].uid) if req.arg("includeDocument") == "false" else None)
    state = run(key)
    assert state.is_completed(), state.message
    outcomes = {o["doc_id"]: o for o in state.result()["outcomes"]}
    new = [d for d in gmi.docs.values() if d.fields.get("documentNumber") == "NEW"]
    assert len(new) == 3  # arrived (and approved) while the run listed: this run's or the next one's
    assert run(key).is_completed()
    assert outcomes[str(docs[1].uid)]["status"] == DELIVERED and "is locked (code 147" in outcomes[str(docs[1].uid)]["error"]
    assert not gmi.doc(docs[1].uid).archived and gmi.doc(docs[0].uid).archived
    assert outcomes[str(docs[2].uid)]["status"] == "waiting" and "no longer in" in outcomes[str(docs[2].uid)]["error"]
    expected |= {str(d.uid) for d in (docs[0], docs[1], docs[3], *new)}
    assert set(confirmations(workspace, key)) == expected and set(confirmations(workspace, key).values()) == {1}

    # corrupt base64: that document fails, named; the locked one is not sent again; the deleted one is superseded
    bad = gmi_doc(gmi, "F-BAD")
    gmi.corrupt(bad.uid)
    state = run(key)
    assert state.is_failed() and f"{bad.uid}: document {bad.uid}: its file from" in state.message and "not valid base64" in state.message
    assert statuses(workspace, key)[str(docs[2].uid)] == "superseded"
    gmi.docs[str(bad.uid)].corrupt = False
    assert run(key).is_completed()
    expected.add(str(bad.uid))
    assert confirmations(workspace, key) == dict.fromkeys(expected, 1)  # each exactly once


def test_getmyinvoices_daily_limit_ends_the_run_completed_and_the_next_day_finishes(workspace, gmi):
    docs = [gmi_doc(gmi, f"D-{i}") for i in range(6)]
    key = workspace.integration(source=gmi_source(workspace, gmi), mapping={"folder": "{client}/{doc_type}", "filename": "{number}.{ext}"})
    gmi.daily = 9  # /account, the listing, then six approvals and one download fit
    state = run(key)
    assert state.is_completed(), state.message
    summary = state.result()["summary"]
    assert "daily limit reached, resumes at" in summary and "UTC" in summary
    done = set(confirmations(workspace, key))
    assert len(done) == 1 and workspace.ledger().cursor(key) is None  # the cursor stays: the rest is not lost
    gmi.daily, gmi.daily_used = None, 0  # the next day
    assert run(key).is_completed()
    assert confirmations(workspace, key) == {str(d.uid): 1 for d in docs}

    # the budget used up before the run could list: completed too, with nothing done and the cursor kept
    gmi.daily, gmi.daily_used = 5, 5
    state = run(key)
    assert state.is_completed() and "daily limit reached, resumes at" in state.result()["summary"]


# -- Exact Online -----------------------------------------------------------------------------------------
@pytest.fixture
def exact():
    api = ExactAPI(minutely=10_000, minute_seconds=4).start()
    yield api
    api.stop()


def exact_source(ws, api: ExactAPI, name: str = "exact", **fields) -> str:
    tokens = api.issue()
    block = ExactOnlineSource(**{
        "client_id": api.client_id, "client_secret": api.client_secret, "base_url": api.base_url, "ca_bundle": api.ca_bundle,
        "access_token": SecretStr(tokens["access_token"]), "refresh_token": SecretStr(tokens["refresh_token"]),
        "expires_at": datetime.now(timezone.utc) + timedelta(seconds=600), "request_timeout": 10, **fields})
    block.save(f"{name}-{ws.tag}", overwrite=True)
    return f"exact-online-source/{name}-{ws.tag}"


def exact_doc(api: ExactAPI, number: str, division: int = 1001, *, status: int = 50, modified: datetime | None = None,
              xml: bool = False, files: list | None = None) -> str:
    pdf = pdf_bytes(f"purchase invoice {number}", 20_000)
    attachments = files if files is not None else [(f"{number}.pdf", pdf)] + ([(f"{number}.xml", ubl(number))] if xml else [])
    return api.put_document(division, subject=number, account_name="Globex Industrial BV", account_code="1001", amount=121.0,
                            currency="EUR", status=status, modified=modified or NOW - timedelta(hours=1), attachments=attachments)


def exact_integration(ws, source: str, name: str = "invoices", **kw) -> str:
    spec = {"identifiers": {"exact_division": "1001"}, "retry_delay": 0.05,
            "mapping": {"folder": "{client}/{doc_type}", "filename": "{number}.{ext}"}, **kw}
    return ws.integration(name, source=source, **spec)


def test_exact_sync_late_approval_new_attachment_parked_status_backfill_and_check(workspace, exact):
    e1 = exact_doc(exact, "INK-1", xml=True)
    e2 = exact_doc(exact, "INK-2", status=20)  # open: not approved yet
    e3 = exact_doc(exact, "INK-3", files=[])  # processed, no attachment: a problem
    exact_doc(exact, "OTHER-1", division=1002)  # another client's division
    source = exact_source(workspace, exact)
    key = exact_integration(workspace, source, max_attempts=1)

    state = run(key)
    assert state.is_failed() and f"{e3}: document {e3}: it has no attachment" in state.message
    assert delivered(workspace, "invoice") == ["INK-1.pdf", "INK-1.xml"]
    assert statuses(workspace, key) == {e1: DELIVERED, e3: NEEDS_ATTENTION}
    position = json.loads(workspace.ledger().cursor(key).position)
    assert position["division"] == 1001 and position["documents"] > 1 and position["retry"] == [e3]
    syncs = exact.calls("GET", r"/sync/")
    assert all(r.arg("$select") and r.arg("$filter", "").startswith("Timestamp gt ") and r.arg("$filter").endswith("L") for r in syncs)
    assert all(r.headers["accept"] == "application/json" for r in exact.calls("GET", "/api/v1/"))

    exact.set_status(1001, e2, 50)  # approved late: its Timestamp moves
    exact.add_attachment(1001, e1, "INK-1.txt", b"a note added later")  # a changed attachment: a new version of INK-1
    assert run(key).is_completed()
    assert delivered(workspace, "invoice") == ["INK-1.pdf", "INK-1.txt", "INK-1.xml", "INK-2.pdf"]
    assert confirmations(workspace, key) == {e1: 2, e2: 1}  # INK-1 twice: two versions

    row = {r["integration"]: r for r in collect_status("acme")}[key]
    assert row["needs attention"] == 1 and row["cursor"] is not None
    assert reconcile(integration=key, return_state=True).is_completed()

    exact.add_attachment(1001, e3, "INK-3.pdf", pdf_bytes("INK-3", 4000))
    report = parked_documents(integration=key, action="retry", document_ids=[e3], reason="PDF attached", by="ops")
    assert [(r["document"], r["after"]) for r in report] == [(e3, DELIVERED)]

    # a backfill by Modified range (Exact's timestamps of change): only what changed inside it
    old = exact_doc(exact, "INK-OLD", modified=utc(2026, 10, 3, 9))
    exact_doc(exact, "INK-LATER", modified=utc(2026, 10, 20, 9))
    on_demand = exact_integration(workspace, source, "archive", enabled=False,
                                  mapping={"folder": "backfill/{doc_type}", "filename": "{number}.{ext}"})
    result = backfill(integration=on_demand, since=utc(2026, 10, 1), until=utc(2026, 10, 7), chunk="7d")
    assert [c["status"] for c in result["chunks"]] == ["done"]
    assert statuses(workspace, on_demand) == {old: DELIVERED}
    assert all("Modified ge datetime'" in r.arg("$filter", "") for r in exact.calls("GET", "/bulk/Documents/Documents")
               if "Modified" in r.arg("$filter", ""))

    rows = check_connections(connections=[source])
    assert rows[0]["ok"] and "signed in as Anna Boekhouder, current division 1001" in rows[0]["message"], rows
    assert exact.refused == 0  # paced: never a 429


def test_exact_configuration_needs_a_division_and_refuses_archive_after_transfer(workspace, exact):
    source = exact_source(workspace, exact)
    key = workspace.integration(source=source, archive_after_transfer=True)
    with pytest.raises(ConfigError) as info:
        load_config(only=key)
    text = str(info.value)
    assert "identifiers.exact_division: the client's Exact Online division is missing" in text
    assert "archive_after_transfer: " + source + " cannot mark a document exported" in text


def test_exact_tokens_rotate_and_a_reused_refresh_token_fails_naming_the_connection(workspace, exact):
    e1 = exact_doc(exact, "TOK-1")
    source = exact_source(workspace, exact)
    key = exact_integration(workspace, source)
    block = ExactOnlineSource.load(source.split("/")[1])
    first_refresh = block.refresh_token.get_secret_value()
    exact.invalidate_access_tokens()  # the access token stops working: a 401, one refresh, the new tokens saved
    assert run(key).is_completed() and confirmations(workspace, key) == {e1: 1}
    rotated = ExactOnlineSource.load(source.split("/")[1]).refresh_token.get_secret_value()
    assert rotated != first_refresh and exact.grants["refresh_token"] == 1

    # another program spends our refresh token first: reusing it is refused and revokes the authorisation
    e2 = exact_doc(exact, "TOK-2")
    answer = requests.post(f"{exact.url}/api/oauth2/token", verify=exact.ca_bundle, data={
        "grant_type": "refresh_token", "refresh_token": rotated, "client_id": exact.client_id, "client_secret": exact.client_secret})
    assert answer.ok
    exact.invalidate_access_tokens()
    state = run(key)
    assert state.is_failed() and f"cannot read source {source}" in state.message
    assert "invalid_grant" in state.message and f"docroute connect {source}" in state.message
    assert rotated not in state.message and exact.client_secret not in state.message
    assert e2 not in statuses(workspace, key)  # nothing parked, nothing lost: it waits for the re-authorisation


def test_exact_is_paced_by_its_headers_and_a_used_up_day_completes_the_run(workspace, exact):
    ids = [exact_doc(exact, f"P-{i}") for i in range(6)]
    source = exact_source(workspace, exact)
    key = exact_integration(workspace, source)
    exact.minutely = 5  # per 4-second "minute": the run waits for each reset instead of collecting 429s
    assert run(key).is_completed()
    assert exact.refused == 0 and confirmations(workspace, key) == dict.fromkeys(ids, 1)

    # a 429 storm (Exact's minutely headers say when it resets): waited out, nothing lost
    more = [exact_doc(exact, f"S-{i}") for i in range(2)]
    exact.minutely = 10_000
    exact.storm(times=2)
    assert run(key).is_completed() and set(confirmations(workspace, key)) == set(ids + more)

    # the day's budget runs out during the run: Completed, "daily limit reached, resumes at", the rest waits
    late = [exact_doc(exact, f"B-{i}") for i in range(4)]
    exact.refused = 0
    exact.use_up_daily(1001, left=7)  # the three feeds, the attachment listing, three downloads
    state = run(key)
    assert state.is_completed(), state.message
    summary = state.result()["summary"]
    assert "daily limit reached, resumes at" in summary and exact.refused == 0  # stopped before a 429
    assert sum(1 for d in late if d in confirmations(workspace, key)) == 3
    assert workspace.ledger().cursor(key).position is not None  # the earlier cursor, not this run's
    exact.used_daily.clear()  # the next day
    assert run(key).is_completed()
    assert confirmations(workspace, key) == dict.fromkeys(ids + more + late, 1)


def test_exact_document_gone_between_list_and_download_and_a_page_changing_while_read(workspace, exact):
    exact.page_size = 2
    ids = [exact_doc(exact, f"G-{i}") for i in range(5)]
    key = exact_integration(workspace, exact_source(workspace, exact))
    gone = max(ids)  # read last (documents are read in ID order): deleted when the first one is downloaded
    # after the first page of changes, another document changes (its Timestamp moves behind the pages not yet read)
    exact.after("GET", "/sync/Documents/Documents", lambda req: exact.set_status(1001, min(ids), 50))
    exact.after("GET", "/docs/SysAttachment.aspx", lambda req: exact.delete_document(1001, gone))
    state = run(key)
    assert state.is_completed(), state.message
    outcomes = {o["doc_id"]: o for o in state.result()["outcomes"]}
    assert outcomes[gone]["status"] == "waiting" and f"document {gone}: no longer in" in outcomes[gone]["error"]
    assert run(key).is_completed()
    assert statuses(workspace, key)[gone] == "superseded"
    assert confirmations(workspace, key) == dict.fromkeys([d for d in ids if d != gone], 1)

    # an app without the right to read deletions: one 403, then sync/Deleted is not asked again (refused calls
    # count towards the ten errors an hour that block a key); the rest goes on
    exact.deleted_allowed = False
    later = exact_doc(exact, "G-9")
    assert run(key).is_completed() and run(key).is_completed()
    assert len([r for r in exact.calls("GET", "/sync/Deleted")]) == 3  # two runs before, one refused, none after
    assert confirmations(workspace, key)[later] == 1


# -- Docbits ----------------------------------------------------------------------------------------------
@pytest.fixture
def docbits():
    api = DocbitsAPI().start()
    yield api
    api.stop()


def docbits_source(ws, api: DocbitsAPI, **fields) -> str:
    block = DocbitsSource(**{"api_key": api.api_key, "base_url": api.url, "ca_bundle": api.ca_bundle, "client": "acme",
                             "request_timeout": 10, **fields})
    block.save(f"docbits-{ws.tag}", overwrite=True)
    return f"docbits-source/docbits-{ws.tag}"


def test_docbits_queue_acknowledged_after_delivery_faults_parked_and_check(workspace, docbits):
    for n in range(3):
        docbits.add(f"DB-{n}", fields={"invoice_number": f"DB-{n}", "supplier_name": "Initech", "total_amount": "50.00"},
                    files=[(f"DB-{n}.pdf", pdf_bytes(f"DB-{n}", 8000))] + ([("DB-0.xml", ubl("DB-0"))] if n == 0 else []),
                    approved_at=NOW - timedelta(hours=2), sub_org_id="BE-01")
    docbits.add("DB-WAIT", pending=False)  # still in approval: not exported
    docbits.add("DB-NOFILE", files=[], approved_at=NOW - timedelta(hours=2))
    source = docbits_source(workspace, docbits)
    key = workspace.integration(source=source, archive_after_transfer=True, max_attempts=1, retry_delay=0.05,
                                mapping={"folder": "{client}/{sub_org}", "filename": "{number}.{ext}"})
    docbits.storm(times=2)
    state = run(key)
    assert state.is_failed() and "DB-NOFILE: document DB-NOFILE:" in state.message and "holds no file" in state.message
    assert delivered(workspace, "BE-01") == ["DB-0.pdf", "DB-0.xml", "DB-1.pdf", "DB-2.pdf"]
    assert [d for d, doc in docbits.docs.items() if doc.status == "Exported"] == ["DB-0", "DB-1", "DB-2"]  # acknowledged
    assert len(docbits.calls("GET", "/export/update_pending_watch_export_status")) == 3

    # corrupt base64, a document deleted between the queue and its payload, an expired key
    docbits.add("DB-BAD", files=[("DB-BAD.pdf", pdf_bytes("bad", 4000))], approved_at=NOW, sub_org_id="BE-01",
                fields={"invoice_number": "DB-BAD"})
    docbits.corrupt("DB-BAD")
    docbits.add("DB-GONE", files=[("DB-GONE.pdf", pdf_bytes("gone", 4000))], approved_at=NOW, sub_org_id="BE-01",
                fields={"invoice_number": "DB-GONE"})
    docbits.after("GET", "/document/DB-GONE$", lambda req: docbits.delete("DB-GONE"))
    state = run(key)
    assert state.is_failed() and "DB-BAD: document DB-BAD: its file from" in state.message and "not valid base64" in state.message
    assert statuses(workspace, key)["DB-BAD"] == NEEDS_ATTENTION and statuses(workspace, key)["DB-GONE"] != DELIVERED
    docbits.expire_key()
    state = run(key)
    assert state.is_failed() and f"cannot read source {source}" in state.message and "API key refused" in state.message
    assert docbits.api_key not in state.message
    docbits.keys.add(docbits.api_key)

    docbits.docs["DB-BAD"].corrupt = False
    report = parked_documents(integration=key, action="retry", document_ids=["DB-BAD"], reason="re-exported", by="ops")
    assert [(r["document"], r["after"]) for r in report] == [("DB-BAD", DELIVERED)]
    assert run(key).is_completed()  # the parked DB-NOFILE does not fail every run; DB-GONE is gone
    assert statuses(workspace, key)["DB-GONE"] == "superseded"
    assert confirmations(workspace, key) == dict.fromkeys(["DB-0", "DB-1", "DB-2", "DB-BAD"], 1)
    row = {r["integration"]: r for r in collect_status("acme")}[key]
    assert row["needs attention"] == 1
    assert check_one(source)["ok"] and "pending exports: 1 INVOICE, 0 CREDIT_NOTE" in check_one(source)["message"]  # DB-NOFILE, parked


def test_getmyinvoices_retry_of_a_failed_run_retries_exactly_its_failed_documents(workspace, gmi):
    """The UI's Retry on a failed deployment run, on an API source: its failed documents are read again by id."""
    import asyncio

    from prefect.client.schemas.objects import StateType

    from deployments.deploy import apply_deployments
    from tests.test_rerun import _retry_from_the_ui, _start, served, wait_final

    client = f"r{workspace.tag}"
    good, bad = gmi_doc(gmi, "RR-1"), gmi_doc(gmi, "RR-2")
    gmi.corrupt(bad.uid)
    key = workspace.integration(client=client, source=gmi_source(workspace, gmi, client=client),
                                mapping={"folder": "{client}/{doc_type}", "filename": "{number}.{ext}"})
    apply_deployments(load_config(only=key))
    with served(workspace, key, f"{client}-invoices") as proc:
        run_id = asyncio.run(_start(f"docroute-sync/{client}-invoices"))
        first = wait_final(run_id, proc)
        assert first.state.type == StateType.FAILED and f"{bad.uid}: document {bad.uid}" in first.state.message
        cursor = workspace.ledger().cursor(key)
        gmi.docs[str(bad.uid)].corrupt = False  # fixed at the source; meanwhile a new document arrives
        new = gmi_doc(gmi, "RR-3")
        assert asyncio.run(_retry_from_the_ui(run_id)) == "ACCEPT"
        second = wait_final(run_id, proc, after_run_count=1)
    assert second.state.type == StateType.COMPLETED, second.state.message
    assert confirmations(workspace, key) == {str(good.uid): 1, str(bad.uid): 1}  # exactly the failed one again
    assert str(new.uid) not in statuses(workspace, key) and workspace.ledger().cursor(key) == cursor
    assert [o["doc_id"] for o in sync(integration=key)["outcomes"] if o["status"] == DELIVERED] == [str(new.uid)]


def test_getmyinvoices_listing_reads_every_page(gmi):
    """Seven documents at two a page: four pages asked, every document a candidate once."""
    uids = {str(gmi_doc(gmi, f"P-{i}", size=2_000).uid) for i in range(7)}
    block = GetMyInvoicesSource(api_key=gmi.api_key, base_url=gmi.base_url, ca_bundle=gmi.ca_bundle, client="acme",
                                calls_per_minute=None, page_size=2)
    with block.source() as source:
        scan = source.scan("acme", None, Window(NOW - timedelta(days=30), datetime.now(timezone.utc)))
    assert sorted(c.doc_id for c in scan.candidates) == sorted(uids) and not scan.problems
    pages = [r.query.get("pageNumber") for r in gmi.requests if r.method == "GET" and r.path.endswith("/documents")]
    assert pages == [["1"], ["2"], ["3"], ["4"]]
