"""Source conformance harness for the OneDrive/SharePoint inbox: the local Graph (tests/fakes/graph_api.py)."""

from __future__ import annotations

import uuid

import pytest

from blocks.onedrive_inbox import OneDriveInbox
from tests.connectors.harness_onedrive import graph_fake, onedrive_connection
from tests.sources.conformance import InboxHarness


class OneDriveInboxHarness(InboxHarness):
    def __init__(self, fake, folder: str):
        self.fake, self.folder = fake, folder
        self.secrets = (fake.client_secret,)

    def block(self, **overrides) -> OneDriveInbox:
        return OneDriveInbox(connection=onedrive_connection(self.fake, self.folder), folder=self.folder, **overrides)

    def broken_block(self) -> OneDriveInbox:
        return OneDriveInbox(connection=onedrive_connection(self.fake, self.folder, client_secret="wrong-secret"), folder=self.folder)

    def write(self, name: str, data: bytes) -> None:
        self.fake.put_file(f"{self.folder}/{name}", data)

    def remove(self, name: str) -> None:
        self.fake.remove(f"{self.folder}/{name}")

    def in_archive(self, name: str) -> bool:
        return self.fake.file(f"{self.folder}/archive/{name}") is not None


@pytest.fixture
def onedrive_inbox_harness():
    fake = graph_fake()
    fake.clear_faults()
    folder = f"/inbox-{uuid.uuid4().hex[:8]}"
    fake.mkdir(folder)
    return OneDriveInboxHarness(fake, folder)
