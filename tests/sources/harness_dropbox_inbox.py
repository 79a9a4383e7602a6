"""Source conformance harness for the Dropbox inbox: the local Dropbox API (tests/fakes/dropbox_api.py)."""

from __future__ import annotations

import uuid

import pytest

from blocks.dropbox_inbox import DropboxInbox
from tests.connectors.harness_dropbox import dropbox_connection, dropbox_fake
from tests.sources.conformance import InboxHarness


class DropboxInboxHarness(InboxHarness):
    def __init__(self, fake, folder: str):
        self.fake, self.folder = fake, folder
        self.secrets = (fake.app_secret, fake.refresh_token)

    def block(self, **overrides) -> DropboxInbox:
        return DropboxInbox(connection=dropbox_connection(self.fake, self.folder), folder=self.folder, **overrides)

    def broken_block(self) -> DropboxInbox:
        return DropboxInbox(connection=dropbox_connection(self.fake, self.folder, client_secret="wrong-secret"), folder=self.folder)

    def write(self, name: str, data: bytes) -> None:
        self.fake.put_file(f"{self.folder}/{name}", data)

    def remove(self, name: str) -> None:
        self.fake.remove(f"{self.folder}/{name}")

    def in_archive(self, name: str) -> bool:
        return self.fake.file(f"{self.folder}/archive/{name}") is not None


@pytest.fixture
def dropbox_inbox_harness():
    fake = dropbox_fake()
    fake.clear_faults()
    folder = f"/inbox-{uuid.uuid4().hex[:8]}"
    fake.mkdir(folder)
    return DropboxInboxHarness(fake, folder)
