"""Source conformance harness for the SFTP inbox: the session's real OpenSSH sshd (tests/sshd.py).

The server is local: the harness writes the capture system's files straight into the folder the
server serves (readable by the test account, the folder its own, so archive/ can be made)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from blocks.sftp import SftpConnection
from blocks.sftp_inbox import SftpInbox
from tests.sources.conformance import InboxHarness
from tests.sshd import Sshd


class SftpInboxHarness(InboxHarness):
    def __init__(self, server: Sshd, root: Path):
        self.server = server
        self.root = root
        self.secrets = (server.password,)

    def connection(self, **overrides) -> SftpConnection:
        s = self.server
        fields = dict(host=s.host, port=s.port, username=s.user, password=s.password, host_key=s.known_hosts_line,
                      connect_timeout=10, timeout=10)
        return SftpConnection(**{**fields, **overrides})

    def block(self) -> SftpInbox:
        return SftpInbox(connection=self.connection(), folder=str(self.root), settle_seconds=0)

    def broken_block(self) -> SftpInbox:
        return SftpInbox(connection=self.connection(password="wrong-" + self.server.password), folder=str(self.root))

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.write_bytes(data)
        os.chown(path, self.server.uid, self.server.gid)

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def in_archive(self, name: str) -> bool:
        return (self.root / "archive" / name).is_file()


@pytest.fixture
def sftp_inbox_harness(sftp_server):
    root = sftp_server.mkdir(f"inbox-{uuid.uuid4().hex[:8]}")
    yield SftpInboxHarness(sftp_server, root)
    shutil.rmtree(root, ignore_errors=True)
