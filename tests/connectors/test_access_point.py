"""The access point connector against the local access point (tests/fakes/access_point.py): the FileAPI
upload part by part, the fileparts status over time (Processing, AwaitingInteraction, Error, accepted),
the DocumentAPI document id, buyer responses, Restart, and the allow-list of hosts."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from blocks.access_point import AccessPointConnection
from tasks.connectors.base import Ability, Confirmation, Mode, PermanentDeliveryError
from tasks.errors import PermanentError
from tasks.http import HttpClient
from tests.connectors.harness_access_point import invoice_values, ubl_for, ubl_package
from tests.fakes.access_point import AccessPointAPI, block_fields
from tests.fakes.base import FakeAPI, Response


@pytest.fixture
def ap():
    fake = AccessPointAPI(processing_seconds=0.3).start()
    yield fake
    fake.stop()


def connector(fake, mode=Mode.PRODUCTION, **fields):
    return AccessPointConnection(**{**block_fields(fake), **fields}).connector(mode)


def poll(conn, delivery, until=lambda c: c.state != Confirmation.PENDING, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        answer = conn.status(delivery)
        if until(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_abilities_are_those_of_an_access_point():
    from tasks.connectors.access_point import AccessPointConnector

    assert {Ability.ASYNC_STATUS, Ability.IDEMPOTENCY_LOOKUP, Ability.CERTIFICATION} <= AccessPointConnector.abilities


def test_the_upload_carries_exactly_the_five_parts_and_the_file_id_is_recorded(ap, tmp_path):
    package = ubl_package(tmp_path, "P-1")
    with connector(ap, Mode.TEST) as conn:
        delivery = conn.deliver(package)
    [up] = ap.uploads()
    assert ap.refused_parts == []
    assert (up.payload_name, up.document_type, up.send_mode, up.company, up.sender_reference) == (
        "P-1.xml", "Invoice", "Test", block_fields(ap)["company_id"], package.idempotency_key)
    assert up.payload == package.files[1].open().read()
    assert not delivery.accepted and delivery.remote_ref == up.id
    assert delivery.detail["file_id"] == up.id and delivery.detail["number"] == "P-1"


def test_status_moves_from_processing_to_accepted_with_the_document_id(ap, tmp_path):
    with connector(ap) as conn:
        delivery = conn.deliver(ubl_package(tmp_path, "P-2"))
        first = conn.status(delivery)
        assert first.state == Confirmation.PENDING and first.detail["state"] == "Processing"
        done = poll(conn, delivery)
    assert done.state == Confirmation.ACCEPTED
    assert done.detail["document_id"] == ap.by_number("P-2")[0].document_id and done.detail["state"] == "Delivered"


def test_awaiting_interaction_keeps_waiting_and_says_so(ap, tmp_path):
    ap.outcomes["P-3"] = ["interaction"]
    with connector(ap) as conn:
        delivery = conn.deliver(ubl_package(tmp_path, "P-3"))
        answer = poll(conn, delivery, until=lambda c: c.detail.get("state") == "AwaitingInteraction")
    assert answer.state == Confirmation.PENDING and "awaiting interaction" in answer.reason


def test_an_error_filepart_is_a_rejection_with_its_description_and_a_resend_restarts_it(ap, tmp_path):
    ap.outcomes["P-4"] = ["error: [PEPPOL-EN16931-R010] Buyer electronic address MUST be provided", "accept"]
    package = ubl_package(tmp_path, "P-4")
    with connector(ap) as conn:
        delivery = conn.deliver(package)
        rejected = poll(conn, delivery)
        assert rejected.state == Confirmation.REJECTED
        assert "Buyer electronic address MUST be provided" in rejected.reason and conn.label in rejected.reason
    with connector(ap) as again:  # the next run, a new connector: the same file is restarted, not posted again
        resent = again.deliver(package)
        assert resent.remote_ref == delivery.remote_ref and resent.detail["restarted"] == [ap.uploads()[0].parts[0].id]
        assert poll(again, resent).state == Confirmation.ACCEPTED
    assert len(ap.uploads()) == 1 and len(ap.restarts) == 1


def test_buyer_responses_are_read_and_marked_fetched(ap, tmp_path):
    ap.buyer["P-5"] = ("RecipientReject", "unknown order")
    ap.buyer["P-6"] = ("RecipientAccept", "")
    with connector(ap) as conn:
        rejected = poll(conn, conn.deliver(ubl_package(tmp_path, "P-5")))
        accepted = poll(conn, conn.deliver(ubl_package(tmp_path, "P-6")))
    assert rejected.state == Confirmation.REJECTED and "RecipientReject" in rejected.reason and "unknown order" in rejected.reason
    assert accepted.state == Confirmation.ACCEPTED and accepted.detail["buyer_response"] == "RecipientAccept"
    assert all(r["fetched"] for r in ap.responses)


def test_an_invalid_ubl_or_none_is_refused_before_anything_is_sent(ap, tmp_path):
    package = ubl_package(tmp_path, "P-7")
    xml = package.files[1]
    bad = ubl_for({**invoice_values("P-7"), "po_number": ""}, None)  # no buyer or order reference
    (tmp_path / "bad.xml").write_bytes(bad)
    import dataclasses
    import hashlib

    package.files[1] = dataclasses.replace(xml, size=len(bad), sha256=hashlib.sha256(bad).hexdigest(),
                                           opener=lambda: (tmp_path / "bad.xml").open("rb"))
    with connector(ap) as conn:
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(package)
        assert "document P-7, file P-7.xml" in str(info.value) and "[PEPPOL-EN16931-R003]" in str(info.value)
        package.files = package.files[:1]
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(package)
        assert "no UBL invoice" in str(info.value)
    assert ap.uploads() == []


def test_the_token_goes_only_to_the_hosts_of_the_allow_list(ap):
    with pytest.raises(ValidationError) as info:  # a URL on another host is refused when the block is made
        AccessPointConnection(**{**block_fields(ap), "api_hosts": [], "document_api_url": "https://evil.example/document/v1"})
    assert "evil.example" in str(info.value) and "allow-list" in str(info.value)
    default = AccessPointConnection(client_id="x", company_id="C")
    assert set(default.token_hosts()) == {"sso.pageroonline.com", "api.pageroonline.com"}
    other = FakeAPI(name="other").start()
    other.route("GET", "/steal")(lambda req: Response.json({}))
    try:
        with connector(ap) as conn:
            # a client that would reach another host, with the connector's own auth: the auth refuses to send the token
            probe = HttpClient("probe", hosts=["localhost"], auth=conn.http.auth, retries=0)
            with pytest.raises(PermanentError) as info:
                probe.get(f"http://localhost:{other.port}/steal")
            assert "refused to send its access token" in str(info.value)
    finally:
        other.stop()
    assert other.requests == []


def test_check_names_the_company_the_send_mode_and_where_the_token_goes(ap):
    with connector(ap, Mode.CERTIFICATION) as conn:
        result = conn.check()
    assert result.ok and "sendMode=Certification" in result.message and "127.0.0.1" in result.message
