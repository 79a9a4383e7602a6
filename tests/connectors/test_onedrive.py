"""The OneDrive/SharePoint connector against the local Graph and Entra ID (tests/fakes/graph_api.py):
upload sessions and their resumption, conflicts by hash, throttling, drive selection, delegated tokens."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from blocks.onedrive import OneDriveConnection
from tasks.connectors.base import PermanentDeliveryError
from tests.connectors.conformance import make_package
from tests.connectors.harness_onedrive import graph_fake, onedrive_connection
from tests.fakes.graph_api import FRAGMENT, cut_fragment, throttle_fault

KB = 1024


@pytest.fixture
def fake():
    fake = graph_fake()
    fake.clear_faults()
    return fake


@pytest.fixture
def folder(fake):
    path = f"/out-{uuid.uuid4().hex[:8]}"
    fake.mkdir(path)
    return path


def fragments(fake, mark: int) -> list:
    return [r for r in fake.requests[mark:] if r.path.startswith("/upload/") and r.method == "PUT"]


def test_a_large_file_goes_in_fragments_of_320_kib_without_a_token(fake, folder, tmp_path):
    conn = onedrive_connection(fake, folder, simple_upload_max=200 * KB, fragment_size=FRAGMENT)
    package = make_package(tmp_path, "BIG-1", pdf_size=1100 * KB, with_xml=False)
    mark = len(fake.requests)
    with conn.connector() as connector:
        connector.deliver(package)
    assert fake.file(f"{folder}/{package.path_of(package.main)}") == package.main.open().read()
    sent = fragments(fake, mark)
    assert len(sent) == 4 and all(len(r.body) == FRAGMENT for r in sent[:-1])  # 320 KiB each, the last one short
    assert all("authorization" not in r.headers for r in sent)  # the uploadUrl is pre-authenticated
    created = [r for r in fake.requests[mark:] if r.path.endswith(":/createUploadSession")]
    assert created and created[0].json() == {"item": {"@microsoft.graph.conflictBehavior": "fail"}}
    assert fake.sessions == {}  # finished, nothing left waiting


def test_a_broken_connection_mid_session_resumes_from_next_expected_ranges(fake, folder, tmp_path):
    conn = onedrive_connection(fake, folder, simple_upload_max=200 * KB, fragment_size=FRAGMENT)
    package = make_package(tmp_path, "CUT-1", pdf_size=1100 * KB, with_xml=False, with_sidecar=False)
    fake.fault(cut_fragment(times=1))
    mark = len(fake.requests)
    with conn.connector() as connector:
        connector.deliver(package)
    assert fake.file(f"{folder}/{package.path_of(package.main)}") == package.main.open().read()
    statuses = [r for r in fake.requests[mark:] if r.path.startswith("/upload/") and r.method == "GET"]
    assert len(statuses) == 1  # asked where the session stood, then went on from there
    ranges = [r.headers["content-range"] for r in fragments(fake, mark)]
    assert len(ranges) == 5 and ranges[0] == ranges[1]  # the cut fragment again, not the file from the start
    assert fake.files_under(folder + "/acme") == [f"{folder}/{package.path_of(package.main)}"]


def test_a_conflict_is_settled_by_quickxorhash_then_by_if_exists(fake, folder, tmp_path):
    package = make_package(tmp_path, "CF-1", with_xml=False, with_sidecar=False)
    path = f"{folder}/{package.path_of(package.main)}"
    with onedrive_connection(fake, folder).connector() as connector:
        connector.deliver(package)
        commits = fake.commits
        assert connector.deliver(package).already_present and fake.commits == commits
    fake.put_file(path, b"%PDF-1.7\nanother file\n")
    with onedrive_connection(fake, folder, if_exists="fail").connector() as connector:
        with pytest.raises(PermanentDeliveryError, match="if_exists=fail"):
            connector.deliver(package)
    assert fake.file(path) == b"%PDF-1.7\nanother file\n"
    with onedrive_connection(fake, folder, if_exists="overwrite").connector() as connector:
        assert not connector.deliver(package).already_present
    assert fake.file(path) == package.main.open().read()


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_is_waited_out_with_retry_after(fake, folder, tmp_path, status):
    package = make_package(tmp_path, f"TH-{status}", with_xml=False, with_sidecar=False)
    fake.fault(throttle_fault(status, retry_after=1, times=1, match=r":/content"))
    started = time.monotonic()
    with onedrive_connection(fake, folder).connector() as connector:
        connector.deliver(package)
    assert time.monotonic() - started >= 1.0
    assert fake.file(f"{folder}/{package.path_of(package.main)}") == package.main.open().read()


def test_the_drive_is_found_by_site_or_by_user(fake, folder, tmp_path):
    for where in ({"site_id": fake.site_id}, {"user": fake.user}):
        mark = len(fake.requests)
        conn = onedrive_connection(fake, folder, drive_id=None, **where)
        with conn.connector() as connector:
            assert connector.check().ok
        lookups = [r.path for r in fake.requests[mark:] if r.path.endswith("/drive")]
        assert len(lookups) == 1 and (where.get("site_id") or where.get("user")) in lookups[0].replace("%40", "@")
    with pytest.raises(ValidationError, match="app-only tokens have no /me drive"):
        OneDriveConnection(tenant=fake.tenant, client_id="x", client_secret="y")


def test_delegated_tokens_are_refreshed_and_the_rotated_refresh_token_kept(fake, folder, tmp_path):
    access, refresh = fake.issue_delegated()
    fake.tokens[access] = (0.0, "delegated")  # expired
    conn = onedrive_connection(fake, folder, auth="delegated", access_token=access, refresh_token=refresh,
                               expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    package = make_package(tmp_path, "DL-1", with_xml=False)
    with conn.connector() as connector:
        connector.deliver(package)  # 401, one refresh, the request again
    assert fake.file(f"{folder}/{package.path_of(package.main)}") == package.main.open().read()
    assert conn.refresh_token.get_secret_value() != refresh and conn.refresh_token.get_secret_value() in fake.refresh_tokens
