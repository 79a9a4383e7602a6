"""S3 connector behaviour against a real moto S3 server (HTTP, 127.0.0.1), beyond the conformance suite."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.connectors.base import (
    Ability,
    DeliveryError,
    Mode,
    Package,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from tests.connectors.conformance import FailingStream, file_opener, make_package

MiB = 1024 * 1024


def with_pdf(package: Package, tmp_path: Path, data: bytes, version: str | None = None) -> Package:
    """The package with its PDF replaced by `data` (same name, so the same key)."""
    path = tmp_path / f"pdf-{hashlib.sha256(data).hexdigest()[:12]}"
    path.write_bytes(data)
    pdf = dataclasses.replace(
        package.main, size=len(data), sha256=hashlib.sha256(data).hexdigest(), opener=file_opener(path)
    )
    return dataclasses.replace(package, files=[pdf, *package.files[1:]], version=version or package.version)


def same_size_other_pdf(package: Package) -> bytes:
    """Other bytes of the same size: only the hash tells them apart."""
    return b"%PDF-1.7\n" + os.urandom(package.main.size - 9)


def state(harness, package) -> dict[str, list[tuple]]:
    """Every version (id, etag, last-modified) of every object of the package."""
    out = {}
    for f in package.files:
        key = harness.key(package, f)
        out[key] = [(v["VersionId"], v["ETag"], v["LastModified"]) for v in harness.versions(key)]
    return out


def test_a_second_delivery_writes_nothing_and_reports_already_present(s3_harness, tmp_path):
    package = make_package(tmp_path, "INV-7001")
    with s3_harness.connection().connector() as conn:
        first = conn.deliver(package)
        before = state(s3_harness, package)
        again = conn.deliver(package)  # the retry after a crash between send and record
    assert not first.already_present and again.already_present
    assert again.remote_ref == first.remote_ref == f"s3://{s3_harness.bucket}/exports/acme/2026/11/INV-7001.pdf"
    assert all(len(versions) == 1 for versions in before.values())
    assert state(s3_harness, package) == before  # no object rewritten (bucket versioning would show it)


def test_lookup_needs_every_file_so_a_missing_trigger_is_sent(s3_harness, tmp_path):
    package = make_package(tmp_path, "INV-7002")
    crashed = dataclasses.replace(package, files=package.files[:-1])  # died before the sidecar
    with s3_harness.connection().connector() as conn:
        assert Ability.IDEMPOTENCY_LOOKUP in conn.abilities
        conn.deliver(crashed)
        assert conn.lookup(package) is None
        delivery = conn.deliver(package)
        assert not delivery.already_present
        assert conn.lookup(package).already_present
    assert s3_harness.received(package, package.files[-1]) == package.files[-1].open().read()
    assert s3_harness.copies(package) == 1


@pytest.mark.parametrize("policy", ["skip_identical", "overwrite"])
def test_different_content_under_the_same_key_is_replaced(s3_harness, tmp_path, policy):
    v1 = make_package(tmp_path, "INV-7003")
    v2 = with_pdf(v1, tmp_path, same_size_other_pdf(v1), version="v2")
    with s3_harness.connection(if_exists=policy).connector() as conn:
        conn.deliver(v1)
        delivery = conn.deliver(v2)
    assert not delivery.already_present
    assert s3_harness.received(v2, v2.main) == v2.main.open().read()
    head = s3_harness.head(s3_harness.key(v2, v2.main))
    assert head["Metadata"]["sha256"] == v2.main.sha256 and head["Metadata"]["version"] == "v2"
    assert s3_harness.copies(v2) == 2  # v1, then v2 (replaced with If-Match)


class _RacingProxy(BaseHTTPRequestHandler):
    """Forwards to moto; right after answering the first HEAD of `key`, another writer replaces it."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    key = ""
    race: object = None

    def _forward(self):
        import requests

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "expect")}
        answer = requests.request(self.command, self.upstream + self.path, headers=headers, data=body,
                                  allow_redirects=False)
        race = type(self).race  # read from the class: a function stored there, not a method
        if self.command == "HEAD" and self.path.endswith(self.key) and race:
            type(self).race = None
            race()  # the other writer wins between our look and our If-Match write
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(name, value)
        content = b"" if self.command == "HEAD" else answer.content
        self.send_header("Content-Length", answer.headers.get("Content-Length", "0") if self.command == "HEAD"
                         else str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, *args):
        pass


def test_a_replace_never_overwrites_a_version_it_did_not_see(s3_harness, tmp_path):
    v1 = make_package(tmp_path, "INV-7018")
    v2 = with_pdf(v1, tmp_path, same_size_other_pdf(v1), version="v2")
    v3 = same_size_other_pdf(v1)
    key = s3_harness.key(v1, v1.main)
    with s3_harness.connection().connector() as conn:
        conn.deliver(v1)
    handler = type("Proxy", (_RacingProxy,), {"upstream": s3_harness.server.url, "key": key})
    handler.race = lambda: s3_harness.client.put_object(Bucket=s3_harness.bucket, Key=key, Body=v3)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        block = s3_harness.connection()
        block.credentials.aws_client_parameters.endpoint_url = f"http://127.0.0.1:{proxy.server_address[1]}"
        with block.connector() as conn, pytest.raises(TransientDeliveryError, match="changed while being replaced"):
            conn.deliver(v2)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert handler.race is None  # the race did happen
    assert s3_harness.received(v1, v1.main) == v3  # the other writer's version survives


def test_different_content_with_policy_fail_is_a_permanent_error_and_keeps_the_object(s3_harness, tmp_path):
    v1 = make_package(tmp_path, "INV-7004")
    v2 = with_pdf(v1, tmp_path, same_size_other_pdf(v1), version="v2")
    with s3_harness.connection(if_exists="fail").connector() as conn:
        conn.deliver(v1)
        assert conn.deliver(v1).already_present  # identical is still fine under "fail"
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(v2)
    text = str(info.value)
    assert "INV-7004" in text and s3_harness.bucket in text and "if_exists=fail" in text
    assert s3_harness.received(v1, v1.main) == v1.main.open().read()
    assert s3_harness.copies(v1) == 1


def test_metadata_headers_are_ascii_safe_and_the_sidecar_object_arrives(s3_harness, tmp_path):
    package = make_package(tmp_path, "INV-7005")
    package.fields = {
        "supplier": "Müller & Söhne GmbH",
        "Total Amount (EUR)": "121.00",
        "sha256": "a field that must not clobber the real hash",
        "paid": True,
        "note": "x" * 3000,  # over S3's 2 KB metadata limit: dropped, the sidecar keeps it
    }
    with s3_harness.connection().connector() as conn:
        delivery = conn.deliver(package)
    meta = s3_harness.head(s3_harness.key(package, package.main))["Metadata"]
    assert meta["doc-id"] == "INV-7005" and meta["version"] == "v1"
    assert meta["sha256"] == package.main.sha256
    assert meta["idempotency-key"] == package.idempotency_key
    assert meta["document-type"] == "invoice"
    assert meta["total-amount-eur"] == "121.00"
    assert meta["field-sha256"] == "a field that must not clobber the real hash"
    assert meta["paid"] == "true"
    assert meta["supplier"].startswith("=?UTF-8?B?") and meta["supplier"].isascii()
    assert str(make_header(decode_header(meta["supplier"]))) == "Müller & Söhne GmbH"
    assert "note" not in meta and delivery.detail["metadata_dropped"] == ["note"]
    sidecar = package.files[-1]
    assert s3_harness.received(package, sidecar) == sidecar.open().read()
    assert s3_harness.head(s3_harness.key(package, sidecar))["ContentType"] == "application/json"


def test_metadata_mode_headers_sends_no_sidecar_and_sidecar_mode_no_fields(s3_harness, tmp_path):
    a = make_package(tmp_path, "INV-7006")
    b = make_package(tmp_path, "INV-7007")
    with s3_harness.connection(metadata="headers").connector() as conn:
        conn.deliver(a)
        assert conn.lookup(a).already_present
    assert s3_harness.received(a, a.files[-1]) is None
    assert s3_harness.head(s3_harness.key(a, a.main))["Metadata"]["supplier"] == "Globex BV"
    with s3_harness.connection(metadata="sidecar").connector() as conn:
        conn.deliver(b)
    meta = s3_harness.head(s3_harness.key(b, b.main))["Metadata"]
    assert "supplier" not in meta and meta["sha256"] == b.main.sha256
    assert s3_harness.received(b, b.files[-1]) == b.files[-1].open().read()


def big_package(tmp_path, doc_id: str, size: int = 12 * MiB) -> Package:
    return with_pdf(make_package(tmp_path, doc_id), tmp_path, b"%PDF-1.7\n" + os.urandom(size))


def test_a_large_file_goes_multipart_and_arrives_byte_for_byte(s3_harness, tmp_path):
    package = big_package(tmp_path, "INV-7008")
    conn_block = s3_harness.connection(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    with conn_block.connector() as conn:
        assert not conn.deliver(package).already_present
        assert conn.deliver(package).already_present  # found by its sha256 header: not sent again
    head = s3_harness.head(s3_harness.key(package, package.main))
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB parts
    assert head["Metadata"]["sha256"] == package.main.sha256
    assert s3_harness.received(package, package.main) == package.main.open().read()
    assert s3_harness.copies(package) == 1
    assert s3_harness.leftovers(package) == []


@pytest.mark.parametrize("fault", ["source breaks", "content changed"])
def test_a_bad_source_during_multipart_leaves_no_object_and_no_pending_upload(s3_harness, tmp_path, fault):
    package = big_package(tmp_path, "INV-7009")
    main = package.main
    if fault == "source breaks":
        source = tmp_path / "broken-source"
        source.write_bytes(main.open().read())
        package.files[0] = dataclasses.replace(main, opener=lambda: FailingStream(source, 7 * MiB))
    else:
        package.files[0] = dataclasses.replace(main, sha256="0" * 64)
    with s3_harness.connection(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB).connector() as conn:
        with pytest.raises(TransientDeliveryError) as info:
            conn.deliver(package)
    assert "INV-7009" in str(info.value)
    key = s3_harness.key(package, main)
    assert s3_harness.head(key) is None and s3_harness.versions(key) == []
    assert s3_harness.received(package, package.files[-1]) is None
    assert s3_harness.leftovers(package) == []


def test_remove_partial_aborts_only_the_packages_unfinished_uploads(s3_harness, tmp_path):
    package = make_package(tmp_path, "INV-7010")
    client, bucket = s3_harness.client, s3_harness.bucket
    mine = s3_harness.key(package, package.main)
    other = mine + ".upload"  # another key that merely starts with the package's key
    for key in (mine, other):
        client.create_multipart_upload(Bucket=bucket, Key=key)
    with s3_harness.connection().connector() as conn:
        conn.remove_partial(package)
    assert s3_harness.leftovers(package) == [other]


def test_a_missing_bucket_is_a_permanent_error_naming_bucket_and_document(s3_harness, tmp_path):
    block = s3_harness.connection(bucket_name="docroute-no-such-bucket")
    with block.connector() as conn:
        result = conn.check()
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(make_package(tmp_path, "INV-7011"))
    assert not result.ok and "docroute-no-such-bucket does not exist" in result.message
    assert "INV-7011" in str(info.value) and "docroute-no-such-bucket" in str(info.value)


def test_test_mode_writes_under_test_prefix_only(s3_harness, tmp_path):
    package = make_package(tmp_path, "INV-7012", mode=Mode.TEST)
    with s3_harness.connection(test_prefix="exports-test").connector(Mode.TEST) as conn:
        assert conn.check().ok
        assert "exports-test/" in conn.label
        conn.deliver(package)
    assert s3_harness.received(package, package.main, prefix="exports-test/") == package.main.open().read()
    assert s3_harness.received(package, package.main) is None
    with s3_harness.connection().connector(Mode.TEST) as conn:  # no test_prefix: refuse, never production
        assert not conn.check().ok
        with pytest.raises(PermanentDeliveryError, match="test_prefix"):
            conn.deliver(package)


def test_credentials_checked_for_real_and_the_secret_never_shows(s3_harness, tmp_path):
    with s3_harness.auth_connection().connector() as conn:  # the right secret works on the same server
        assert conn.check().ok, conn.check().message
    bad = s3_harness.bad_credentials()
    texts = []
    with bad.connector() as conn:
        result = conn.check()
        assert not result.ok
        texts.append(result.message)
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(make_package(tmp_path, "INV-7013"))
        texts.append(str(info.value))
    assert "credentials rejected (SignatureDoesNotMatch)" in texts[1] and "INV-7013" in texts[1]
    unknown_key = bad.model_copy(deep=True)
    unknown_key.credentials.aws_access_key_id = "AKIADOCROUTEUNKNOWN1"
    with unknown_key.connector() as conn, pytest.raises(PermanentDeliveryError) as info:
        conn.deliver(make_package(tmp_path, "INV-7014"))
    texts.append(str(info.value))
    assert "InvalidAccessKeyId" in texts[-1]
    texts.append(bad.label())
    for text in texts:
        for secret in s3_harness.secrets:
            assert secret not in text


def test_label_names_bucket_prefix_and_endpoint_but_no_userinfo(s3_harness):
    block = s3_harness.connection()
    block.credentials.aws_client_parameters.endpoint_url = "https://user:hunter2@minio.example:9000/"
    assert block.label() == f"s3://{s3_harness.bucket}/exports/ (https://minio.example:9000)"


# -- a store that answers with errors: a tiny real HTTP server, not a mock ---------------------
class _ErrorStore(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue" at once
    status = 503
    code = "SlowDown"
    message = "from the store"
    headers_out: dict[str, str] = {}

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = f"<Error><Code>{self.code}</Code><Message>{self.code} {self.message}</Message></Error>".encode()
        self.send_response(self.status)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def error_store():
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Store", (_ErrorStore,), {}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _block_for(s3_harness, url: str):
    block = s3_harness.connection()
    block.credentials.aws_client_parameters.endpoint_url = url
    # One attempt, short timeouts: the sync flow does the retrying.
    block.credentials.aws_client_parameters.config = {"retries": {"total_max_attempts": 1}, "connect_timeout": 2}
    return block


@pytest.mark.parametrize(
    "status, code, transient",
    [(503, "SlowDown", True), (500, "InternalError", True), (409, "ConditionalRequestConflict", True),
     (403, "AccessDenied", False), (400, "InvalidArgument", False), (501, "NotImplemented", False)],
)
def test_store_errors_are_classified(s3_harness, error_store, tmp_path, status, code, transient):
    handler = error_store.RequestHandlerClass
    handler.status, handler.code, handler.headers_out = status, code, {"Retry-After": "7"}
    block = _block_for(s3_harness, f"http://127.0.0.1:{error_store.server_address[1]}")
    with block.connector() as conn:
        with pytest.raises(DeliveryError) as info:
            conn.deliver(make_package(tmp_path, "INV-7015"))
    assert isinstance(info.value, TransientDeliveryError if transient else PermanentDeliveryError)
    assert "INV-7015" in str(info.value) and s3_harness.bucket in str(info.value)
    if transient:
        assert info.value.retry_after == 7


def test_a_store_message_echoing_the_secret_is_scrubbed(s3_harness, error_store, tmp_path):
    secret = s3_harness.server.secret
    handler = error_store.RequestHandlerClass
    handler.status, handler.code, handler.message = 400, "InvalidRequest", f"bad request signed with {secret}"
    with _block_for(s3_harness, f"http://127.0.0.1:{error_store.server_address[1]}").connector() as conn:
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(make_package(tmp_path, "INV-7017"))
    assert "bad request signed with ***" in str(info.value)
    assert secret not in str(info.value)


def test_an_unreachable_store_is_transient(s3_harness, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with _block_for(s3_harness, f"http://127.0.0.1:{port}").connector() as conn:
        assert not conn.check().ok
        with pytest.raises(TransientDeliveryError, match="INV-7016"):
            conn.deliver(make_package(tmp_path, "INV-7016"))
