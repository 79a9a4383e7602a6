"""The Debitoor connector and the Debitoor expenses source against the local Debitoor (tests/fakes/debitoor_api.py):
an expense with its file, the x-token header, what happens without the (unpublished) file upload endpoint,
and expenses read back as documents with their files."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from blocks.debitoor import DebitoorConnection, DebitoorExpenses
from tasks.connectors.base import PermanentDeliveryError
from tasks.documents import Candidate, Document, SourceProblem
from tasks.sources.base import Window
from tests.connectors.conformance import make_package
from tests.fakes.debitoor_api import DebitoorAPI, debitoor_fields


@pytest.fixture
def fake():
    api = DebitoorAPI().start()
    yield api
    api.stop()


def test_an_expense_is_made_with_its_file_and_the_token_in_x_token(fake, tmp_path):
    p = make_package(tmp_path, "DB-1", with_xml=True, with_sidecar=False)
    p.values.update(supplier="Globex BV", supplier_vat="NL812345678B01", net="100.00", tax="21.00", issue_date="2026-03-02")
    with DebitoorConnection(**debitoor_fields(fake)).connector() as conn:
        delivery = conn.deliver(p)
    [e] = fake.expenses.values()
    assert fake.files[e["fileId"]] == ("DB-1.pdf", "application/pdf", p.main.open().read())
    assert e["lines"] == [{"description": f"Globex BV DB-1 [docroute {p.idempotency_key}]", "netAmount": 100.0,
                           "taxRate": 21.0, "priceDisplayType": "net"}]
    assert (e["supplierCountry"], e["date"], e["totalGrossAmount"]) == ("NL", "2026-03-02", 121.0)
    assert delivery.detail["not_attached"] == ["DB-1.xml"]  # an expense holds one file
    api_calls = [r for r in fake.requests if r.path.startswith("/api/")]
    assert api_calls and all(r.headers.get("x-token") and "authorization" not in r.headers for r in api_calls)


def test_without_the_upload_endpoint_the_check_fails_and_nothing_is_half_sent(fake, tmp_path):
    block = DebitoorConnection(**{**debitoor_fields(fake), "files_url": None})
    with block.connector() as conn:
        result = conn.check()
        assert not result.ok and "files_url" in result.message and "does not publish" in result.message
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(make_package(tmp_path, "DB-2", with_xml=False, with_sidecar=False))
        assert "DB-2" in str(info.value) and "files_url" in str(info.value)
    assert fake.expenses == {}
    without = DebitoorConnection(**{**debitoor_fields(fake), "files_url": None, "attach_file": False, "default_tax_rate": 21})
    with without.connector() as conn:
        assert conn.check().ok
        conn.deliver(make_package(tmp_path, "DB-3", with_xml=False, with_sidecar=False))
    [e] = fake.expenses.values()
    assert e.get("fileId") is None and e["lines"][0]["grossAmount"] == 121.0


def source(fake, client="acme", **over):
    return DebitoorExpenses(connection=DebitoorConnection(**debitoor_fields(fake)), client=client, **over).source()


def window():
    now = datetime.now(timezone.utc)
    return Window(now - timedelta(days=30), now)


def test_expenses_are_listed_as_the_client_s_documents_pending_until_booked(fake):
    booked = fake.add_expense(number=7, file=("receipt-7.pdf", b"%PDF-1.7\nseven\n"))
    draft = fake.add_expense(file=("draft.pdf", b"%PDF-1.7\ndraft\n"))
    bare = fake.add_expense(number=8)
    gone = fake.add_expense(number=9, file=("x.pdf", b"%PDF"))
    fake.delete(gone)
    with source(fake) as src:
        scan = src.scan("acme", None, window())
        assert src.check().ok
    found = {c.doc_id: c for c in scan.candidates}
    assert set(found) == {booked, draft}
    assert found[booked].approved and found[booked].fields == {
        "number": "7", "supplier": "Globex BV", "supplier_vat": "NL812345678B01", "issue_date": "2026-03-02",
        "currency": "EUR", "net": "100.0", "tax": "21.0", "total": "121.0"}
    assert found[draft].status == "pending" and not found[draft].approved
    assert [p.doc_id for p in scan.problems] == [bare] and "no file attached" in scan.problems[0].message
    with source(fake) as src:
        assert src.scan("globex", None, window()).candidates == []  # another client's account


def test_an_expense_s_file_is_fetched_whole_and_a_new_file_is_a_new_version(fake):
    eid = fake.add_expense(number=3, file=("receipt.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 50))
    with source(fake) as src:
        cand = src.find(eid, "acme")
        assert isinstance(cand, Candidate)
        doc = src.fetch(cand)
        assert isinstance(doc, Document) and doc.files[0].name == "receipt.pdf"
        assert doc.files[0].open().read() == b"%PDF-1.7\n" + bytes(range(256)) * 50
        fake.replace_file(eid, "receipt-v2.pdf", b"%PDF-1.7\ncorrected\n")
        again = src.find(eid, "acme")
        assert again.fingerprint != cand.fingerprint
        assert src.fetch(again).version != doc.version
        fake.delete(eid)
        assert src.find(eid, "acme") is None
        assert isinstance(src.fetch(cand), SourceProblem)
