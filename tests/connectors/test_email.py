"""E-mail connector against a real aiosmtpd server on 127.0.0.1 (see harness_email.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasks.connectors.base import Mode, PermanentDeliveryError, TransientDeliveryError
from tasks.connectors.email import EmailOptions
from tests.connectors.conformance import make_package
from tests.connectors.harness_email import USER, SmtpServer
from tests.connectors.harness_webhook import server_tls_context
from tests.fakes.base import self_signed_cert

OPTIONS = {
    "to": ["ap@client.example"],
    "cc": ["books@client.example"],
    "subject": "Invoice {number} for {client}",
    "body": "Hello {client},\n\nattached: {doc_type} {doc_id:>10}.\n",
}


@pytest.fixture
def server(email_harness):
    return email_harness.server


def deliver(block, package, options=OPTIONS, mode=Mode.PRODUCTION):
    with block.connector(mode, options) as conn:
        return conn.deliver(package)


def test_message_carries_every_file_byte_for_byte_with_rendered_subject_and_body(email_harness, server, tmp_path):
    package = make_package(tmp_path, "INV-300")
    delivery = deliver(email_harness.block(), package)

    (stored,) = server.messages
    msg = stored.message
    assert stored.mail_from == "docroute@example.test"
    assert stored.rcpt_tos == ["ap@client.example", "books@client.example"]
    assert (msg["To"], msg["Cc"], msg["From"]) == ("ap@client.example", "books@client.example", "docroute@example.test")
    assert msg["Subject"] == "Invoice INV-300 for acme"
    body = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert body == "Hello acme,\n\nattached: invoice    INV-300.\n"
    assert msg["Message-ID"] == f"<{package.idempotency_key}@docroute>" == delivery.remote_ref
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == [f.name for f in package.files]  # sidecar JSON too
    assert [a.get_content_type() for a in attachments] == [f.media_type for f in package.files]
    for a, f in zip(attachments, package.files):
        assert a.get_payload(decode=True) == f.open().read()
    assert server.logins == [USER]


def test_a_resend_has_the_same_message_id(email_harness, server, tmp_path):
    package = make_package(tmp_path, "INV-310")
    with email_harness.block().connector(options=OPTIONS) as conn:
        conn.deliver(package)
        conn.deliver(package)
        conn.deliver(make_package(tmp_path, "INV-311"))
    ids = [s.message["Message-ID"] for s in server.messages]
    assert ids[0] == ids[1] != ids[2]
    assert email_harness.copies(package) == 1
    assert server.logins == [USER]  # one connection, one login, for the whole run


def test_an_unknown_placeholder_is_permanent_and_names_it(email_harness, server, tmp_path):
    options = {**OPTIONS, "subject": "Invoice {number} PO {purchase_order}"}
    with pytest.raises(PermanentDeliveryError) as info:
        deliver(email_harness.block(), make_package(tmp_path, "INV-320"), options)
    assert "INV-320" in str(info.value) and "{purchase_order}" in str(info.value) and "subject" in str(info.value)
    assert server.messages == []


def test_an_oversize_message_is_permanent_and_nothing_is_sent(email_harness, server, tmp_path):
    with pytest.raises(PermanentDeliveryError) as info:
        deliver(email_harness.block(max_message_bytes=50_000), make_package(tmp_path, "INV-330", pdf_size=60_000))
    text = str(info.value)
    assert "INV-330" in text and "max_message_bytes (50000)" in text and "bytes" in text
    assert server.messages == []
    # Just under the limit is sent (the estimate does not refuse what fits).
    deliver(email_harness.block(max_message_bytes=90_000), make_package(tmp_path, "INV-331", pdf_size=60_000))
    assert len(server.messages) == 1 and len(server.messages[0].content) <= 90_000


def test_the_servers_advertised_size_limit_is_honoured(email_harness, tmp_path):
    small = SmtpServer(email_harness.server.password, data_size_limit=40_000)
    try:
        block = email_harness.block(port=small.port)
        with pytest.raises(PermanentDeliveryError) as info:
            deliver(block, make_package(tmp_path, "INV-335", pdf_size=60_000))
        assert "at most 40000 bytes" in str(info.value) and "INV-335" in str(info.value)
        assert small.messages == []
    finally:
        small.stop()


def test_451_is_transient_and_the_connection_stays_usable(email_harness, server, tmp_path):
    server.script(data=["451 4.3.0 Mailbox temporarily unavailable"])
    package = make_package(tmp_path, "INV-340")
    with email_harness.block().connector(options=OPTIONS) as conn:
        with pytest.raises(TransientDeliveryError) as info:
            conn.deliver(package)
        assert "451" in str(info.value) and "INV-340" in str(info.value) and conn.label in str(info.value)
        assert server.messages == []
        conn.deliver(package)  # the retry
    assert email_harness.received(package, package.main) == package.main.open().read()


def test_a_temporarily_refused_recipient_is_transient(email_harness, server, tmp_path):
    server.script(rcpt=["450 4.2.1 try later"])
    with pytest.raises(TransientDeliveryError) as info:
        deliver(email_harness.block(), make_package(tmp_path, "INV-341"), {"to": ["ap@client.example"]})
    assert "450" in str(info.value)


@pytest.mark.parametrize("where", ["rcpt", "data"])
def test_550_is_permanent(email_harness, server, tmp_path, where):
    server.script(**{where: ["550 5.1.1 No such user here"]})
    with pytest.raises(PermanentDeliveryError) as info:
        deliver(email_harness.block(), make_package(tmp_path, "INV-350"), {"to": ["nobody@client.example"]})
    assert "550" in str(info.value) and "No such user" in str(info.value) and "INV-350" in str(info.value)
    assert server.messages == []


def test_one_refused_recipient_of_two_is_reported_not_fatal(email_harness, server, tmp_path):
    server.script(rcpt=["550 5.1.1 No such user here"])
    delivery = deliver(email_harness.block(), make_package(tmp_path, "INV-351"))
    assert server.messages[0].rcpt_tos == ["books@client.example"]
    assert list(delivery.detail["refused"]) == ["ap@client.example"]
    assert delivery.detail["refused"]["ap@client.example"].startswith("550")


def test_wrong_password_is_permanent_and_never_shown(email_harness, server, tmp_path):
    block = email_harness.block(password=email_harness.bad_password)
    connector = block.connector(options=OPTIONS)
    with pytest.raises(PermanentDeliveryError) as info:
        connector.open()
    text = str(info.value)
    assert "535" in text and USER in text and "127.0.0.1" in text
    assert email_harness.bad_password not in text and email_harness.server.password not in text
    result = connector.check()
    assert not result.ok and email_harness.bad_password not in result.message


def test_test_mode_sends_only_to_the_test_recipient(email_harness, server, tmp_path):
    block = email_harness.block(test_recipient="qa@docroute.test")
    deliver(block, make_package(tmp_path, "INV-360"), mode=Mode.TEST)
    (stored,) = server.messages
    assert stored.rcpt_tos == ["qa@docroute.test"]
    assert stored.message["To"] == "qa@docroute.test" and stored.message["Cc"] is None
    with pytest.raises(PermanentDeliveryError, match="test_recipient"):
        deliver(email_harness.block(), make_package(tmp_path, "INV-361"), mode=Mode.TEST)


def test_a_dropped_connection_is_reopened(email_harness, server, tmp_path):
    first, second = make_package(tmp_path, "INV-370"), make_package(tmp_path, "INV-371")
    with email_harness.block().connector(options=OPTIONS) as conn:
        conn.deliver(first)
        server.stop()  # the server goes away (restart, idle timeout) between two documents
        restarted = SmtpServer(server.password, port=server.port)
        try:
            conn.deliver(second)
        finally:
            restarted.stop()
    assert [s.message["X-Docroute-Document"] for s in restarted.messages] == ["INV-371 v1"]


def test_an_unreachable_server_is_transient(email_harness, tmp_path):
    block = email_harness.block(port=1)  # nothing listens on port 1
    with pytest.raises(TransientDeliveryError) as info:
        block.connector(options=OPTIONS).open()
    assert "cannot connect" in str(info.value) and "smtp 127.0.0.1:1" in str(info.value)


def test_starttls_verifies_the_certificate(email_harness, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    tls = SmtpServer(email_harness.server.password, tls_context=server_tls_context(cert, key),
                     require_starttls=True, auth_require_tls=True)
    try:
        refused = email_harness.block(port=tls.port, security="starttls")
        with pytest.raises(PermanentDeliveryError) as info:
            refused.connector(options=OPTIONS).open()
        assert "TLS certificate not accepted" in str(info.value) and "self-signed" in str(info.value)

        trusted = email_harness.block(port=tls.port, security="starttls", ca_bundle=str(cert))
        package = make_package(tmp_path, "INV-380")
        deliver(trusted, package)
        assert tls.messages[0].message["Message-ID"] == f"<{package.idempotency_key}@docroute>"
    finally:
        tls.stop()


def test_options_are_validated():
    with pytest.raises(ValidationError):
        EmailOptions(to=[])
    with pytest.raises(ValidationError, match="e-mail address"):
        EmailOptions(to=["ap@client.example\r\nBcc: evil@example.com"])
    with pytest.raises(ValidationError):
        EmailOptions(to=["ap@client.example"], subject="Invoice {number")
    with pytest.raises(ValidationError):
        EmailOptions(to=["ap@client.example"], bcc=["x@example.com"])  # unknown keys are errors
    opts = EmailOptions(to=["ap@client.example"], body="{client} {total:>8}")
    assert opts.placeholders() == {"doc_type", "number", "client", "total"}
