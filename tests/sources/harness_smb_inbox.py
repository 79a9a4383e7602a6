"""Source conformance harness for the SMB inbox: Debian's Samba on 127.0.0.1 (tests/smbd.py).

The server is local: the harness writes the capture system's files straight into the share's folder."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from blocks.smb_inbox import SmbInbox
from tests.connectors.harness_smb import smb_connection, smb_server
from tests.sources.conformance import InboxHarness


class SmbInboxHarness(InboxHarness):
    def __init__(self, server, root: Path):
        self.server, self.root = server, root
        self.secrets = (server.password,)

    def block(self, **overrides) -> SmbInbox:
        return SmbInbox(connection=smb_connection(self.server, ""), folder=self.root.name, settle_seconds=0, **overrides)

    def broken_block(self) -> SmbInbox:
        return SmbInbox(connection=smb_connection(self.server, "", password="wrong-" + self.server.password), folder=self.root.name)

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.write_bytes(data)
        os.chown(path, self.server.uid, self.server.gid)

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def in_archive(self, name: str) -> bool:
        return (self.root / "archive" / name).is_file()


@pytest.fixture
def smb_inbox_harness():
    server = smb_server()
    root = server.mkdir("docs", f"inbox-{uuid.uuid4().hex[:8]}")
    yield SmbInboxHarness(server, root)
    shutil.rmtree(root, ignore_errors=True)
