"""Source conformance harness for the Google Drive inbox: the local Drive v3 (tests/fakes/drive_api.py)."""

from __future__ import annotations

import uuid

import pytest

from blocks.gdrive_inbox import GoogleDriveInbox
from tests.connectors.harness_gdrive import drive_fake, gdrive_connection
from tests.sources.conformance import InboxHarness

USER = "ap@acme.example"


class GoogleDriveInboxHarness(InboxHarness):
    def __init__(self, fake, folder_id: str):
        self.fake, self.folder_id = fake, folder_id
        self.secrets = (fake.service_account_info()["private_key"].splitlines()[1],)

    def block(self, **overrides) -> GoogleDriveInbox:
        return GoogleDriveInbox(connection=gdrive_connection(self.fake, self.folder_id), folder_id=self.folder_id, **overrides)

    def broken_block(self) -> GoogleDriveInbox:
        return GoogleDriveInbox(connection=gdrive_connection(self.fake, self.folder_id, delegated_user="nobody@elsewhere.example"),
                                folder_id=self.folder_id)

    def write(self, name: str, data: bytes) -> None:
        for old in self.fake.children(self.folder_id, name):  # a capture system replacing its file
            with self.fake.lock:
                self.fake._store(old, data)
            return
        self.fake.add_file(self.folder_id, name, data)

    def remove(self, name: str) -> None:
        for f in self.fake.children(self.folder_id, name):
            self.fake.remove(f.id)

    def in_archive(self, name: str) -> bool:
        archives = [f for f in self.fake.children(self.folder_id, "archive")]
        return any(self.fake.children(a.id, name) for a in archives)


@pytest.fixture
def gdrive_inbox_harness():
    fake = drive_fake()
    fake.clear_faults()
    folder_id = fake.folder(fake.root_of(USER), f"inbox-{uuid.uuid4().hex[:8]}")
    return GoogleDriveInboxHarness(fake, folder_id)
