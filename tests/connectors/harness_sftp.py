"""Conformance harness for the SFTP connector: a real OpenSSH sshd on 127.0.0.1 (see tests/sshd.py).

The server is local, so what it received is read back from its filesystem.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from blocks.sftp import SftpConnection
from tests.connectors.conformance import Harness
from tests.sshd import Sshd, start_sshd


class SftpHarness(Harness):
    def __init__(self, server: Sshd, root: Path):
        self.server = server
        self.root = root
        self.secrets = (server.password, server.key_passphrase)

    def connection(self, **overrides) -> SftpConnection:
        s = self.server
        fields = dict(
            host=s.host,
            port=s.port,
            username=s.user,
            password=s.password,
            host_key=s.known_hosts_line,
            base_folder=str(self.root),
            test_folder=str(self.root) + "-test",
            connect_timeout=10,
            timeout=10,
        )
        fields.update(overrides)
        return SftpConnection(**fields)

    def bad_credentials(self):
        return self.connection(password="wrong-" + self.server.password)

    def received(self, package, f):
        path = self.root / package.path_of(f)
        return path.read_bytes() if path.is_file() else None

    def leftovers(self, package):
        folder = self.root / package.folder
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial")) if folder.is_dir() else []


@pytest.fixture(scope="session")
def sftp_server():
    # Its own folder under /tmp: pytest's tmp folders are 0700, and the test user must reach its files.
    server = start_sshd(sftp_log=True)  # tests read what the client asked the server
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def sftp_harness(sftp_server):
    root = sftp_server.mkdir(f"out-{uuid.uuid4().hex[:8]}")
    yield SftpHarness(sftp_server, root)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(str(root) + "-test", ignore_errors=True)
