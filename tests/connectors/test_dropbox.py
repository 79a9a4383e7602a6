"""The Dropbox connector against the local Dropbox API (tests/fakes/dropbox_api.py): what the
conformance suite does not cover (upload sessions, conflicts, 429, team spaces, token refresh)."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from dropbox.content_hash import DropboxContentHasher as SdkHasher

from tasks.connectors.base import CredentialsRefusedError, PermanentDeliveryError
from tasks.connectors.cloud import DropboxContentHasher
from tests.connectors.conformance import make_package
from tests.connectors.harness_dropbox import dropbox_connection, dropbox_fake
from tests.fakes.base import Fault
from tests.fakes.dropbox_api import DropboxAPI, rate_limit_fault

KB = 1024


@pytest.fixture
def fake():
    fake = dropbox_fake()
    fake.clear_faults()
    return fake


@pytest.fixture
def folder(fake):
    path = f"/out-{uuid.uuid4().hex[:8]}"
    fake.mkdir(path)
    return path


def since(fake: DropboxAPI, mark: int, path: str) -> list:
    return [r for r in fake.requests[mark:] if r.path == path]


def test_our_content_hash_is_dropboxs(tmp_path):
    for size in (0, 1, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 9_000_000):
        data = os.urandom(size)
        ours, sdk = DropboxContentHasher(), SdkHasher()
        for i in range(0, len(data), 777_777):
            ours.update(data[i : i + 777_777])
        sdk.update(data)
        assert ours.hexdigest() == sdk.hexdigest(), size


def test_a_large_file_goes_through_an_upload_session_one_chunk_at_a_time(fake, folder, tmp_path):
    conn = dropbox_connection(fake, folder, simple_upload_max=100 * KB, chunk_size=64 * KB)
    package = make_package(tmp_path, "BIG-1", pdf_size=300 * KB)
    mark = len(fake.requests)
    with conn.connector() as connector:
        delivery = connector.deliver(package)
    assert not delivery.already_present
    assert fake.file(f"{folder}/{package.path_of(package.main)}") == package.main.open().read()
    appends = since(fake, mark, "/2/files/upload_session/append_v2")
    assert len(since(fake, mark, "/2/files/upload_session/start")) == 1 and len(appends) >= 3
    assert len(since(fake, mark, "/2/files/upload_session/finish")) == 1
    assert all(len(r.body) <= 64 * KB for r in appends)  # streamed: never more than a chunk per request
    uploads = [r for r in since(fake, mark, "/2/files/upload") if "BIG-1.pdf" in r.headers["dropbox-api-arg"]]
    assert uploads == []  # the PDF never went in one call
    arg = since(fake, mark, "/2/files/upload_session/finish")[0].headers["dropbox-api-arg"]
    assert '"mode": "add"' in arg and '"autorename": false' in arg


def test_an_append_whose_answer_was_lost_goes_on_from_dropboxs_offset(fake, folder, tmp_path):
    conn = dropbox_connection(fake, folder, simple_upload_max=100 * KB, chunk_size=64 * KB)
    package = make_package(tmp_path, "BIG-2", pdf_size=300 * KB, with_xml=False)
    fake.fault(Fault(kind="cut-after", match=r"upload_session/append_v2", times=1))  # applied, answer lost
    mark = len(fake.requests)
    with conn.connector() as connector:
        connector.deliver(package)
    assert fake.file(f"{folder}/{package.path_of(package.main)}") == package.main.open().read()
    assert fake.files_under(folder + "/acme") == sorted(f"{folder}/{package.path_of(f)}" for f in package.files)
    offsets = [json.loads(r.headers["dropbox-api-arg"])["cursor"]["offset"] for r in since(fake, mark, "/2/files/upload_session/append_v2")]
    assert offsets[0] == offsets[1] and offsets == sorted(offsets)  # the same append again (incorrect_offset), then on


def test_a_name_conflict_is_settled_by_content_hash_then_by_if_exists(fake, folder, tmp_path):
    package = make_package(tmp_path, "CF-1", with_xml=False, with_sidecar=False)
    path = f"{folder}/{package.path_of(package.main)}"
    with dropbox_connection(fake, folder).connector() as connector:
        connector.deliver(package)
        commits = fake.uploads
        again = connector.deliver(package)  # identical: 409, same content_hash, nothing written
        assert again.already_present and fake.uploads == commits
    fake.put_file(path, b"%PDF-1.7\nsomeone else's file\n")
    with dropbox_connection(fake, folder, if_exists="fail").connector() as connector:
        with pytest.raises(PermanentDeliveryError, match="if_exists=fail"):
            connector.deliver(package)
    assert fake.file(path) == b"%PDF-1.7\nsomeone else's file\n"
    with dropbox_connection(fake, folder, if_exists="overwrite").connector() as connector:
        mark = len(fake.requests)
        replaced = connector.deliver(package)
    assert not replaced.already_present and fake.file(path) == package.main.open().read()
    arg = since(fake, mark, "/2/files/upload")[-1].headers["dropbox-api-arg"]
    assert '"update"' in arg  # replaced on the rev it saw, never blind


def test_too_many_write_operations_is_waited_out_with_retry_after(fake, folder, tmp_path):
    package = make_package(tmp_path, "RL-1", with_xml=False, with_sidecar=False)
    fake.fault(rate_limit_fault(retry_after=1, times=1))
    mark = len(fake.requests)
    started = time.monotonic()
    with dropbox_connection(fake, folder).connector() as connector:
        connector.deliver(package)
    assert time.monotonic() - started >= 1.0
    assert len(since(fake, mark, "/2/files/upload")) == 2
    assert fake.file(f"{folder}/{package.path_of(package.main)}") == package.main.open().read()


def test_an_expired_access_token_is_refreshed_with_the_refresh_token(fake, folder, tmp_path):
    conn = dropbox_connection(fake, folder)
    with conn.connector() as connector:
        connector.deliver(make_package(tmp_path, "TK-1", with_xml=False))
        first = conn.access_token.get_secret_value()
        fake.tokens[first] = 0.0  # Dropbox expired it early
        connector.deliver(make_package(tmp_path, "TK-2", with_xml=False))
    assert conn.access_token.get_secret_value() != first
    assert conn.refresh_token.get_secret_value() == fake.refresh_token  # Dropbox does not rotate it


def test_a_team_member_and_the_team_space_are_selected_on_every_call(tmp_path):
    team = DropboxAPI(team=True).start()
    try:
        folder = "/Accounting"
        team.mkdir(folder, team.team_space)
        conn = dropbox_connection(team, folder, select_user="dbmid:member-1", namespace="team_space")
        package = make_package(tmp_path, "TS-1", with_xml=False)
        with conn.connector() as connector:
            assert connector.check().ok
            connector.deliver(package)
        assert team.file(f"{folder}/{package.path_of(package.main)}", team.team_space) == package.main.open().read()
        assert team.file(f"{folder}/{package.path_of(package.main)}") is None  # not in the member's own space
        assert all(r.headers.get("dropbox-api-select-user") == "dbmid:member-1" for r in team.requests if r.path.startswith("/2/"))
        assert any('"root": "2002"' in r.headers.get("dropbox-api-path-root", "") for r in team.requests)
        without = dropbox_connection(team, folder)
        with without.connector() as connector:
            result = connector.check()
        assert not result.ok and "Dropbox-API-Select-User" in result.message
    finally:
        team.stop()
        team.blobs.cleanup()


def test_a_wrong_app_secret_refuses_the_credentials_without_showing_them(fake, folder, tmp_path):
    conn = dropbox_connection(fake, folder, client_secret="not-the-secret")
    with conn.connector() as connector:
        with pytest.raises(CredentialsRefusedError) as info:
            connector.deliver(make_package(tmp_path, "BAD-1"))
    assert "not-the-secret" not in str(info.value) and fake.refresh_token not in str(info.value)


SDK_SCRIPT = r'''
import json, os, sys
import dropbox
from dropbox.files import WriteMode, CommitInfo, UploadSessionCursor
info = json.loads(sys.argv[1])
dbx = dropbox.Dropbox(oauth2_refresh_token=info["refresh"], app_key=info["key"], app_secret=info["secret"],
                      ca_certs=info["ca"], max_retries_on_error=0, max_retries_on_rate_limit=0)
out = {"account": dbx.users_get_current_account().email}
meta = dbx.files_upload(b"%PDF-1.7 sdk", info["folder"] + "/a.pdf", mode=WriteMode.add, strict_conflict=True)
out["hash"] = meta.content_hash
try:
    dbx.files_upload(b"%PDF-1.7 sdk", info["folder"] + "/a.pdf", mode=WriteMode.add, strict_conflict=True)
except dropbox.exceptions.ApiError as exc:
    out["conflict"] = exc.error.is_path() and exc.error.get_path().reason.is_conflict()
start = dbx.files_upload_session_start(b"x" * 1000)
dbx.files_upload_session_append_v2(b"y" * 1000, UploadSessionCursor(start.session_id, 1000))
try:
    dbx.files_upload_session_append_v2(b"y" * 1000, UploadSessionCursor(start.session_id, 1000))
except dropbox.exceptions.ApiError as exc:
    out["correct_offset"] = exc.error.get_incorrect_offset().correct_offset
done = dbx.files_upload_session_finish(b"", UploadSessionCursor(start.session_id, 2000), CommitInfo(info["folder"] + "/b.pdf"))
out["session_size"] = done.size
listing = dbx.files_list_folder(info["folder"])
out["names"] = sorted(e.name for e in listing.entries)
print(json.dumps({"cursor": listing.cursor, **out}))
sys.stdout.flush()
if sys.stdin.readline():
    try:
        dbx.files_list_folder_continue(listing.cursor)
    except dropbox.exceptions.ApiError as exc:
        print(json.dumps({"reset": exc.error.is_reset()}))
'''


def test_the_official_sdk_reads_the_fake_through_its_own_host_settings(fake, folder):
    """The fake speaks the wire format the official SDK (de)serialises strictly: the SDK, pointed at
    it by its DROPBOX_API_HOST / DROPBOX_API_CONTENT_HOST settings, uploads, conflicts, resumes a
    session from correct_offset, lists, and is told `reset` for an expired cursor."""
    import subprocess
    import sys

    host = fake.url.removeprefix("https://")
    env = {**os.environ, "DROPBOX_API_HOST": host, "DROPBOX_API_CONTENT_HOST": host}
    info = json.dumps({"refresh": fake.refresh_token, "key": fake.app_key, "secret": fake.app_secret, "ca": fake.ca_bundle,
                       "folder": folder})
    proc = subprocess.Popen([sys.executable, "-c", SDK_SCRIPT, info], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline() or "{}")
    fake.reset_cursors()
    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert first["account"] == "ap@acme.example" and first["conflict"] is True and first["correct_offset"] == 2000
    assert first["session_size"] == 2000 and first["names"] == ["a.pdf", "b.pdf"]
    sdk = SdkHasher()
    sdk.update(b"%PDF-1.7 sdk")
    assert first["hash"] == sdk.hexdigest()  # the fake's content_hash is Dropbox's
    assert json.loads(out.strip().splitlines()[-1]) == {"reset": True}
