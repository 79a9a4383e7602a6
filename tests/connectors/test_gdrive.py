"""The Google Drive connector against the local Drive v3 (tests/fakes/drive_api.py): the appProperties
key (never two files for one document version), resumable sessions, 404 restarts, rate limits,
shared drives, user OAuth."""

from __future__ import annotations

import json
import uuid

import pytest

from tasks.connectors.base import PermanentDeliveryError
from tests.connectors.conformance import make_package
from tests.connectors.harness_gdrive import drive_fake, gdrive_connection
from tests.fakes.base import Fault
from tests.fakes.drive_api import CHUNK, cut_chunk, rate_limit_fault

USER = "ap@acme.example"
KB = 1024


@pytest.fixture
def fake():
    fake = drive_fake()
    fake.clear_faults()
    return fake


@pytest.fixture
def folder_id(fake):
    return fake.folder(fake.root_of(USER), f"out-{uuid.uuid4().hex[:8]}")


def files_named(fake, parent: str, package, f) -> list:
    for part in package.folder.split("/"):
        found = [x for x in fake.children(parent, part) if x.mimeType.endswith("folder")]
        assert len(found) <= 1, f"twin folders {part}"
        if not found:
            return []
        parent = found[0].id
    return fake.children(parent, f.name)


def key_queries(fake, mark: int) -> list:
    return [r for r in fake.requests[mark:] if r.path == "/drive/v3/files" and "appProperties has" in (r.arg("q") or "")]


def test_every_file_carries_the_idempotency_key(fake, folder_id, tmp_path):
    package = make_package(tmp_path, "K-1")
    with gdrive_connection(fake, folder_id).connector() as connector:
        connector.deliver(package)
    for f in package.files:
        [item] = files_named(fake, folder_id, package, f)
        assert item.appProperties["docroute_key"] == package.idempotency_key
        assert fake.content(item) == f.open().read()


def test_a_lost_answer_to_a_create_never_makes_a_second_file(fake, folder_id, tmp_path):
    package = make_package(tmp_path, "LA-1", with_xml=False, with_sidecar=False)
    fake.fault(Fault(kind="cut-after", match=lambda r: r.method == "POST" and r.path == "/upload/drive/v3/files", times=1))
    mark = len(fake.requests)
    with gdrive_connection(fake, folder_id).connector() as connector:
        delivery = connector.deliver(package)  # created, answer lost: the key is looked for, and found
    assert delivery.already_present
    assert len(files_named(fake, folder_id, package, package.main)) == 1
    assert len(key_queries(fake, mark)) == 2  # before the upload, and before the retry
    assert len([r for r in fake.requests[mark:] if r.path == "/upload/drive/v3/files"]) == 1  # never sent twice


def test_a_resumable_upload_resumes_after_a_broken_connection(fake, folder_id, tmp_path):
    conn = gdrive_connection(fake, folder_id, multipart_max=100 * KB, chunk_size=CHUNK)
    package = make_package(tmp_path, "RS-1", pdf_size=900 * KB, with_xml=False, with_sidecar=False)
    fake.fault(cut_chunk(times=1))
    mark = len(fake.requests)
    with conn.connector() as connector:
        connector.deliver(package)
    [item] = files_named(fake, folder_id, package, package.main)
    assert fake.content(item) == package.main.open().read()
    puts = [r for r in fake.requests[mark:] if r.method == "PUT"]
    assert any("bytes */" in r.headers.get("content-range", "") for r in puts)  # asked the session where it stood
    assert all(len(r.body) <= CHUNK for r in puts)  # one chunk at a time


def test_a_resumable_session_that_answers_404_is_started_again_after_looking_for_the_key(fake, folder_id, tmp_path):
    conn = gdrive_connection(fake, folder_id, multipart_max=100 * KB, chunk_size=CHUNK)
    package = make_package(tmp_path, "RS-2", pdf_size=700 * KB, with_xml=False, with_sidecar=False)
    body = json.dumps({"error": {"code": 404, "message": "Upload session not found"}}).encode()
    fake.fault(Fault(status=404, body=body, headers={"Content-Type": "application/json"}, times=1,
                     match=lambda r: r.method == "PUT" and "upload_id" in r.query))
    mark = len(fake.requests)
    with conn.connector() as connector:
        connector.deliver(package)
    starts = [r for r in fake.requests[mark:] if r.method == "POST" and r.arg("uploadType") == "resumable"]
    assert len(starts) == 2 and len(key_queries(fake, mark)) == 2
    [item] = files_named(fake, folder_id, package, package.main)
    assert fake.content(item) == package.main.open().read()


@pytest.mark.parametrize("status", [403, 429])
def test_rate_limits_are_backed_off(fake, folder_id, tmp_path, status):
    package = make_package(tmp_path, f"RL-{status}", with_xml=False, with_sidecar=False)
    fake.fault(rate_limit_fault(status, times=2, match=r"GET /drive/v3/files$"))
    with gdrive_connection(fake, folder_id).connector() as connector:
        connector.deliver(package)
    assert len(files_named(fake, folder_id, package, package.main)) == 1


def test_a_file_of_that_name_from_elsewhere_follows_if_exists(fake, folder_id, tmp_path):
    package = make_package(tmp_path, "NX-1", folder="", with_xml=False, with_sidecar=False)
    fake.add_file(folder_id, package.main.name, b"%PDF-1.7\nsomeone else's\n")
    with gdrive_connection(fake, folder_id, if_exists="fail").connector() as connector:
        with pytest.raises(PermanentDeliveryError, match="if_exists=fail"):
            connector.deliver(package)
    with gdrive_connection(fake, folder_id, if_exists="overwrite").connector() as connector:
        connector.deliver(package)
    [item] = fake.children(folder_id, package.main.name)  # replaced, not a second file
    assert fake.content(item) == package.main.open().read()


def test_a_shared_drive_is_written_with_supports_all_drives(fake, tmp_path):
    drive = fake.shared_drive()
    package = make_package(tmp_path, "SD-1", with_xml=False)
    with gdrive_connection(fake, None, shared_drive_id=drive, folder="Invoices").connector() as connector:
        assert not connector.check().ok  # the check never makes the folder
        connector.deliver(package)  # delivering does
        assert connector.check().ok
    [invoices] = fake.children(drive, "Invoices")
    assert invoices.driveId == drive
    [item] = files_named(fake, invoices.id, package, package.main)
    assert item.driveId == drive and fake.content(item) == package.main.open().read()


def test_user_oauth_tokens_come_from_the_oauth_layer(fake, folder_id, tmp_path):
    conn = gdrive_connection(fake, folder_id, auth="user", service_account_key=None, client_id=fake.client_id,
                             client_secret=fake.client_secret, token_url=f"{fake.url}/token", refresh_token=fake.issue_user())
    package = make_package(tmp_path, "UO-1", with_xml=False)
    with conn.connector() as connector:
        assert connector.check().ok
        connector.deliver(package)
    assert conn.access_token is not None
    [item] = files_named(fake, folder_id, package, package.main)
    assert fake.content(item) == package.main.open().read()
