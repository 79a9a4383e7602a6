"""Webhook connector against a real receiver on 127.0.0.1 (see harness_webhook.py)."""

from __future__ import annotations

import base64
import json
import time
from email.utils import formatdate

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from blocks.webhook import WebhookConnection
from tasks.connectors.base import Mode, PermanentDeliveryError, TransientDeliveryError
from tasks.connectors.webhook import parse_retry_after
from tests.connectors.conformance import make_package
from tests.connectors.harness_webhook import (
    Receiver,
    Scripted,
    new_secret,
    server_tls_context,
    verify_signature,
)
from tests.fakes.base import self_signed_cert


@pytest.fixture
def receiver(webhook_harness):
    return webhook_harness.receiver


def deliver(block, package, mode=Mode.PRODUCTION):
    with block.connector(mode) as conn:
        return conn.deliver(package)


def test_json_body_is_signed_per_standard_webhooks_and_carries_every_file(webhook_harness, receiver, tmp_path):
    package = make_package(tmp_path, "INV-100")
    delivery = deliver(webhook_harness.connection(), package)

    (attempt,) = receiver.attempts
    assert attempt.headers["webhook-id"] == package.idempotency_key
    assert abs(int(attempt.headers["webhook-timestamp"]) - time.time()) < 10
    assert attempt.headers["content-type"] == "application/json"
    # The independent library accepts it as sent, and refuses it under another secret.
    message = Webhook(webhook_harness.secret).verify(attempt.body, attempt.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(attempt.body, attempt.headers)
    with pytest.raises(WebhookVerificationError):  # the signature covers the body
        Webhook(webhook_harness.secret).verify(attempt.body.replace(b"INV-100", b"INV-101"), attempt.headers)

    assert message["type"] == "document.exported"
    doc = message["document"]
    assert (doc["id"], doc["version"], doc["client"], doc["integration"], doc["document_type"]) == (
        "INV-100", "v1", "acme", "acme/invoices", "invoice")
    assert doc["fields"] == package.fields
    assert [f["name"] for f in doc["files"]] == [f.name for f in package.files]
    for sent, f in zip(doc["files"], package.files):
        assert (sent["role"], sent["media_type"], sent["size"], sent["sha256"]) == (f.role, f.media_type, f.size, f.sha256)
        assert base64.b64decode(sent["content_base64"]) == f.open().read()
    assert receiver.deliveries[package.idempotency_key].payload == "json"
    assert delivery.remote_ref == f"rcv-{package.idempotency_key}"  # the receiver's id from its JSON answer


def test_rotation_signs_with_every_secret(webhook_harness, receiver, tmp_path):
    old, new = new_secret(), new_secret()
    receiver.secrets = [new]  # the receiver has moved to the new secret only
    package = make_package(tmp_path, "INV-110")
    deliver(webhook_harness.connection(signing_secrets=[old, new]), package)
    signatures = receiver.attempts[0].headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert webhook_harness.received(package, package.main) == package.main.open().read()

    with pytest.raises(PermanentDeliveryError) as info:  # only the old secret: refused
        deliver(webhook_harness.connection(signing_secrets=[old]), make_package(tmp_path, "INV-111"))
    assert "401" in str(info.value) and "invalid signature" in str(info.value)


def test_webhook_id_is_the_same_on_every_retry_and_the_receiver_dedups(webhook_harness, receiver, tmp_path):
    package = make_package(tmp_path, "INV-120")
    receiver.script(Scripted(500, body=b"database down"))
    block = webhook_harness.connection()
    with block.connector() as conn:
        with pytest.raises(TransientDeliveryError) as info:
            conn.deliver(package)
        assert "500" in str(info.value) and "database down" in str(info.value) and "INV-120" in str(info.value)
        conn.deliver(package)
        conn.deliver(package)  # a resend after a crash between send and record
    ids = [a.headers["webhook-id"] for a in receiver.attempts]
    assert ids == [package.idempotency_key] * 3
    assert receiver.repeats[package.idempotency_key] == 1
    assert webhook_harness.copies(package) == 1
    assert len({a.client for a in receiver.attempts}) == 1  # one connection, reused


def test_a_package_above_inline_max_bytes_goes_multipart_byte_for_byte(webhook_harness, receiver, tmp_path):
    package = make_package(tmp_path, "INV-130", pdf_size=300_000)
    delivery = deliver(webhook_harness.connection(inline_max_bytes=100_000), package)
    assert delivery.detail["payload"] == "multipart"
    (attempt,) = receiver.attempts
    assert attempt.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(attempt.headers["content-length"]) == len(attempt.body) > 300_000
    verify_signature(webhook_harness.secret, attempt.body, attempt.headers)  # over the raw bytes sent
    with pytest.raises(WebhookVerificationError):
        verify_signature(new_secret(), attempt.body, attempt.headers)
    got = receiver.deliveries[package.idempotency_key]
    assert got.payload == "multipart"
    assert [f["name"] for f in got.document["files"]] == [f.name for f in package.files]
    assert "content_base64" not in got.document["files"][0]
    for f in package.files:
        assert webhook_harness.received(package, f) == f.open().read()

    small = make_package(tmp_path, "INV-131", pdf_size=1000)
    deliver(webhook_harness.connection(inline_max_bytes=100_000), small)
    assert receiver.deliveries[small.idempotency_key].payload == "json"


def test_json_only_refuses_a_package_above_the_inline_limit_before_sending(webhook_harness, receiver, tmp_path):
    with pytest.raises(PermanentDeliveryError) as info:
        deliver(webhook_harness.connection(payload="json", inline_max_bytes=10_000), make_package(tmp_path, "INV-140"))
    assert "INV-140" in str(info.value) and "inline_max_bytes" in str(info.value)
    assert receiver.attempts == []


def test_multipart_mode_always_sends_multipart(webhook_harness, receiver, tmp_path):
    package = make_package(tmp_path, "INV-141", pdf_size=500)
    deliver(webhook_harness.connection(payload="multipart"), package)
    assert receiver.deliveries[package.idempotency_key].payload == "multipart"
    assert webhook_harness.received(package, package.main) == package.main.open().read()


def test_410_is_permanent_endpoint_gone(webhook_harness, receiver, tmp_path):
    receiver.script(Scripted(410, body=b"this hook was deleted"))
    with pytest.raises(PermanentDeliveryError) as info:
        deliver(webhook_harness.connection(), make_package(tmp_path, "INV-150"))
    text = str(info.value)
    assert "410" in text and "gone" in text and "INV-150" in text and receiver.url.split("//")[1] in text


@pytest.mark.parametrize("status", [429, 503, 408])
def test_throttling_and_server_errors_are_transient_with_retry_after(webhook_harness, receiver, tmp_path, status):
    receiver.script(Scripted(status, headers={"Retry-After": "7"}))
    with pytest.raises(TransientDeliveryError) as info:
        deliver(webhook_harness.connection(), make_package(tmp_path, "INV-160"))
    assert info.value.retry_after == 7
    assert str(status) in str(info.value)


def test_retry_after_as_http_date(webhook_harness, receiver, tmp_path):
    receiver.script(Scripted(429, headers={"Retry-After": formatdate(time.time() + 120, usegmt=True)}))
    with pytest.raises(TransientDeliveryError) as info:
        deliver(webhook_harness.connection(), make_package(tmp_path, "INV-161"))
    assert 100 < info.value.retry_after <= 121
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_500_without_retry_after_is_transient(webhook_harness, receiver, tmp_path):
    receiver.script(Scripted(500))
    with pytest.raises(TransientDeliveryError) as info:
        deliver(webhook_harness.connection(), make_package(tmp_path, "INV-162"))
    assert info.value.retry_after is None


def test_a_redirect_is_permanent_and_not_followed(webhook_harness, receiver, tmp_path):
    receiver.script(Scripted(302, headers={"Location": f"{receiver.base_url}/elsewhere?token=s3cr3t"}))
    with pytest.raises(PermanentDeliveryError) as info:
        deliver(webhook_harness.connection(), make_package(tmp_path, "INV-170"))
    text = str(info.value)
    assert "302" in text and "/elsewhere" in text and "not followed" in text
    assert "s3cr3t" not in text
    assert [a.path for a in receiver.attempts] == ["/hooks/docroute"]


def test_404_is_permanent_with_the_answer_trimmed(webhook_harness, receiver, tmp_path):
    receiver.script(Scripted(404, body=b"no such hook " + b"x" * 2000))
    with pytest.raises(PermanentDeliveryError) as info:
        deliver(webhook_harness.connection(), make_package(tmp_path, "INV-180"))
    text = str(info.value)
    assert "404" in text and "INV-180" in text and "no such hook" in text
    assert "x" * 250 in text and "x" * 300 not in text and len(text) < 500


def test_a_server_slower_than_the_timeout_is_transient(webhook_harness, receiver, tmp_path):
    receiver.script(Scripted(None, delay=1.5))
    started = time.monotonic()
    with pytest.raises(TransientDeliveryError) as info:
        deliver(webhook_harness.connection(timeout=0.4), make_package(tmp_path, "INV-190"))
    assert time.monotonic() - started < 1.4
    assert "did not answer within 0.4 s" in str(info.value) and "INV-190" in str(info.value)


def test_a_closed_port_is_transient(webhook_harness, tmp_path):
    dead = Receiver([webhook_harness.secret])
    dead.stop()
    with pytest.raises(TransientDeliveryError) as info:
        deliver(webhook_harness.connection(url=dead.url), make_package(tmp_path, "INV-191"))
    assert "cannot reach" in str(info.value) and dead.url.split("//")[1] in str(info.value)


def test_bearer_token_arrives_and_never_shows_in_errors(webhook_harness, receiver, tmp_path):
    token = webhook_harness.token
    deliver(webhook_harness.connection(), make_package(tmp_path, "INV-200"))
    assert receiver.attempts[0].headers["authorization"] == f"Bearer {token}"
    # A receiver that echoes the request back in its error answer.
    receiver.script(Scripted(400, body=f"bad request; you sent Authorization: Bearer {token}".encode()))
    with pytest.raises(PermanentDeliveryError) as info:
        deliver(webhook_harness.connection(), make_package(tmp_path, "INV-201"))
    assert "400" in str(info.value) and token not in str(info.value) and "***" in str(info.value)


def test_basic_auth_arrives_and_a_wrong_password_is_permanent_without_it(webhook_harness, tmp_path):
    basic = Receiver([webhook_harness.secret], basic=("erp", "pa55-word"))
    try:
        block = webhook_harness.connection(url=basic.url, auth="basic", username="erp", password="pa55-word")
        package = make_package(tmp_path, "INV-210")
        deliver(block, package)
        assert basic.attempts[0].headers["authorization"] == "Basic " + base64.b64encode(b"erp:pa55-word").decode()
        assert package.idempotency_key in basic.deliveries

        wrong = webhook_harness.connection(url=basic.url, auth="basic", username="erp", password="not-it-9")
        with pytest.raises(PermanentDeliveryError) as info:
            deliver(wrong, make_package(tmp_path, "INV-211"))
        assert "401" in str(info.value) and "not-it-9" not in str(info.value)
        with wrong.connector() as conn:
            result = conn.check()
        assert not result.ok and "401" in result.message and "not-it-9" not in result.message
    finally:
        basic.stop()


@pytest.fixture
def tls_receiver(webhook_harness, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    rcv = Receiver([webhook_harness.secret], bearer=webhook_harness.token, tls=server_tls_context(cert, key))
    yield rcv, cert
    rcv.stop()


def test_a_self_signed_certificate_is_refused_by_default(webhook_harness, tls_receiver, tmp_path):
    rcv, _ = tls_receiver
    block = webhook_harness.connection(url=rcv.url)
    conn = block.connector()
    with pytest.raises(PermanentDeliveryError, match="TLS certificate .* not accepted: self-signed"):
        conn.open()  # the sync flow opens the connection first: nothing is sent, no document touched
    result = conn.check()
    with pytest.raises(PermanentDeliveryError) as info:
        conn.deliver(make_package(tmp_path, "INV-220"))
    conn.close()
    assert not result.ok and "certificate" in result.message
    text = str(info.value)
    assert "TLS certificate" in text and "self-signed" in text and "INV-220" in text and conn.label in text
    assert rcv.deliveries == {}


def test_a_private_ca_bundle_is_trusted(webhook_harness, tls_receiver, tmp_path):
    rcv, cert = tls_receiver
    block = webhook_harness.connection(url=rcv.url, ca_bundle=str(cert))
    package = make_package(tmp_path, "INV-221")
    with block.connector() as conn:
        assert conn.check().ok
        conn.deliver(package)
    assert rcv.deliveries[package.idempotency_key].files[package.main.name] == package.main.open().read()


def test_test_mode_posts_to_test_url(webhook_harness, receiver, tmp_path):
    block = webhook_harness.connection(test_url=f"{receiver.base_url}/hooks/test")
    with block.connector(Mode.TEST) as conn:
        assert conn.label.endswith("/hooks/test")
        conn.deliver(make_package(tmp_path, "INV-230"))
    assert [a.path for a in receiver.attempts] == ["/hooks/test"]
    with pytest.raises(PermanentDeliveryError, match="test_url"):
        deliver(webhook_harness.connection(), make_package(tmp_path, "INV-231"), Mode.TEST)


def test_check_posts_a_signed_ping(webhook_harness, receiver):
    with webhook_harness.connection().connector() as conn:
        result = conn.check()
    assert result.ok and "200" in result.message
    assert [p["type"] for p in receiver.pings] == ["docroute.check"]
    Webhook(webhook_harness.secret).verify(receiver.attempts[0].body, receiver.attempts[0].headers)
    assert receiver.deliveries == {}


def test_block_validation_and_label_never_show_secrets():
    bad = "whsec_" + "not base64!!"
    with pytest.raises(ValidationError) as info:
        WebhookConnection(url="https://hooks.example.com/x", signing_secrets=[bad])
    assert "base64" in str(info.value) and "not base64!!" not in str(info.value)
    short = "whsec_" + base64.b64encode(b"k" * 10).decode()
    with pytest.raises(ValidationError, match="at least 24"):
        WebhookConnection(url="https://hooks.example.com/x", signing_secrets=[short])
    with pytest.raises(ValidationError, match="bearer_token"):
        WebhookConnection(url="https://hooks.example.com/x", auth="bearer")
    with pytest.raises(ValidationError, match="set by the connector"):
        WebhookConnection(url="https://hooks.example.com/x", headers={"Authorization": "x"})
    block = WebhookConnection(url="https://user:pw@hooks.example.com:8443/in?token=abc#f")
    assert block.label() == "webhook https://hooks.example.com:8443/in"


def test_json_payload_is_valid_json_with_unicode_fields(webhook_harness, receiver, tmp_path):
    package = make_package(tmp_path, "INV-240")
    package.fields["supplier"] = 'Müller & "Söhne" GmbH\n'
    deliver(webhook_harness.connection(), package)
    body = json.loads(receiver.attempts[0].body)
    assert body["document"]["fields"]["supplier"] == 'Müller & "Söhne" GmbH\n'
