"""The Exact Online connector against the local Exact Online (tests/fakes/exact_upload_api.py): the division from
the client's identifiers, the key looked up before a retry sends anything (a lost answer, a crash between the
document and its attachments), pacing from X-RateLimit headers, the daily budget, the rotating refresh token."""

from __future__ import annotations

import pytest

from blocks.exact_online_connection import ExactOnlineConnection
from tasks.connectors.base import PermanentDeliveryError
from tasks.errors import BudgetExhaustedError
from tests.connectors.conformance import make_package
from tests.fakes.base import Fault
from tests.fakes.exact_upload_api import ExactAPI, exact_fields


@pytest.fixture
def exact():
    fake = ExactAPI(divisions=(123456, 777)).start()
    yield fake
    fake.stop()


def connector(fake, options=None, **fields):
    return ExactOnlineConnection(**{**exact_fields(fake), **fields}).connector(options=options)


def package(tmp_path, doc_id="X-1", division="777", **kw):
    p = make_package(tmp_path, doc_id, **kw)
    p.values.update(exact_division=division, supplier="Globex BV", issue_date="2026-03-02")
    return p


def test_a_document_and_every_file_go_to_the_client_s_division(exact, tmp_path):
    p = package(tmp_path)
    with connector(exact) as conn:
        delivery = conn.deliver(p)
    [doc] = exact.documents.values()
    assert (doc.Division, doc.Type, doc.Subject, doc.Body, doc.DocumentDate) == (
        777, 20, "invoice X-1 Globex BV", "docroute " + p.idempotency_key, "2026-03-02")
    assert exact.files_of(doc.ID) == {f.name: [f.open().read()] for f in p.files}
    assert delivery.remote_ref == f"exact:777/{doc.ID}" and not delivery.already_present


def test_no_division_or_type_is_a_permanent_error_naming_the_fix(exact, tmp_path):
    p = make_package(tmp_path, "X-2")
    with connector(exact) as conn:
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(p)
        assert "identifiers.exact_division" in str(info.value)
        p.values["exact_division"] = "777"
        p.document_type = "order_confirmation"
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(p)
        assert "document_types" in str(info.value)
    assert exact.documents == {}


def test_a_lost_answer_then_a_retry_completes_the_same_document(exact, tmp_path):
    p = package(tmp_path, "X-3")
    # the document is made but its answer never arrives; then an attachment's answer is lost too
    exact.fault(Fault(kind="cut-after", match=r"POST /api/v1/777/documents/Documents"),
                Fault(kind="cut-after", match=r"POST /api/v1/777/documents/DocumentAttachments"))
    with connector(exact) as conn:
        for _ in range(3):
            try:
                delivery = conn.deliver(p)
                break
            except Exception:  # noqa: BLE001 - the engine's retry: remove_partial, then deliver again
                conn.remove_partial(p)
    [doc] = exact.documents.values()
    assert exact.files_of(doc.ID) == {f.name: [f.open().read()] for f in p.files}  # each file once
    assert delivery.remote_ref == f"exact:777/{doc.ID}"


def test_after_a_crash_lookup_finds_a_complete_document_and_a_partial_one_is_completed(exact, tmp_path):
    done, partial = package(tmp_path, "X-4"), package(tmp_path, "X-5")
    with connector(exact) as conn:
        conn.deliver(done)
    exact.fault(Fault(status=503, match=r"POST /api/v1/777/documents/DocumentAttachments", times=99))
    with connector(exact) as conn:
        with pytest.raises(Exception):
            conn.deliver(partial)  # the process dies here: a document without its attachments
    exact.clear_faults()
    with connector(exact) as fresh:  # the next run
        found = fresh.lookup(done)
        assert found is not None and found.already_present
        assert fresh.lookup(partial) is None
        fresh.remove_partial(partial)
        fresh.deliver(partial)
    by_body = {d.Body: d for d in exact.documents.values()}
    assert len(exact.documents) == 2
    assert len(exact.files_of(by_body["docroute " + partial.idempotency_key].ID)) == 3


def test_calls_are_paced_by_the_minutely_headers_without_a_429(tmp_path):
    fake = ExactAPI(divisions=(777,), minutely=5, window=1.5).start()
    try:
        with connector(fake) as conn:
            for i in range(4):
                conn.deliver(package(tmp_path, f"X-P{i}", with_sidecar=False))  # 3 calls each: 12 calls, 5 per 1.5 s
        assert fake.refused == 0 and len(fake.documents) == 4
    finally:
        fake.stop()


def test_the_daily_budget_stops_before_a_document_is_started_half(tmp_path):
    fake = ExactAPI(divisions=(777,), daily=5).start()
    try:
        with connector(fake) as conn:
            conn.deliver(package(tmp_path, "X-D1", with_sidecar=False))  # 3 calls; 2 left today
            with pytest.raises(BudgetExhaustedError) as info:
                conn.deliver(package(tmp_path, "X-D2", with_sidecar=False))
        assert "daily limit reached" in str(info.value) and "resumes at" in str(info.value)
        assert len(fake.documents) == 1 and fake.refused == 0
    finally:
        fake.stop()


def test_the_refresh_token_rotates_and_each_new_one_is_kept(exact, tmp_path):
    block = ExactOnlineConnection(**exact_fields(exact))
    first = block.refresh_token.get_secret_value()
    with block.connector() as conn:
        conn.deliver(package(tmp_path, "X-R"))
        exact.invalidate_access_tokens()
        conn.deliver(package(tmp_path, "X-R2"))  # a 401: one refresh with the rotated token, then the call again
    assert exact.grants["refresh_token"] == 2 and exact.errors == []
    assert block.refresh_token.get_secret_value() not in (first,)
    fam = exact.family_of(first)
    assert block.refresh_token.get_secret_value() == fam.refresh and first in fam.spent


def test_check_says_only_the_latest_connection_stays_valid(exact):
    with connector(exact) as conn:
        result = conn.check()
    assert result.ok and "current division 777" in result.message and "only the latest connection" in result.message
    assert "only the latest connection" in ExactOnlineConnection.get_description()
