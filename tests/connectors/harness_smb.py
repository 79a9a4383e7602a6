"""Conformance harness for the SMB connector: Debian's Samba started on 127.0.0.1 (tests/smbd.py).

The server is local, so what it received is read back from the share's folder. The `docs` share
signs every message; the `sealed` share requires SMB 3 encryption."""

from __future__ import annotations

import atexit
import shutil
import threading
import uuid
from pathlib import Path

import pytest

from blocks.smb import SmbConnection
from tests.connectors.conformance import Harness
from tests.smbd import Smbd, start_smbd

_SERVER: list[Smbd] = []
_LOCK = threading.Lock()


def smb_server() -> Smbd:
    """The process's Samba (started on first use, stopped at exit)."""
    with _LOCK:
        if not _SERVER:
            server = start_smbd()
            _SERVER.append(server)

            def stop() -> None:
                server.stop()
                shutil.rmtree(server.workdir, ignore_errors=True)

            atexit.register(stop)
        return _SERVER[0]


def smb_connection(server: Smbd, folder: str, share: str = "docs", **overrides) -> SmbConnection:
    fields = dict(host=server.host, port=server.port, share=share, username=server.user, password=server.password,
                  base_folder=folder, test_folder=folder + "-test", connect_timeout=10)
    fields.update(overrides)
    return SmbConnection(**fields)


class SmbHarness(Harness):
    def __init__(self, server: Smbd, root: Path, share: str):
        self.server, self.root, self.share = server, root, share
        self.secrets = (server.password,)

    def connection(self, **overrides) -> SmbConnection:
        return smb_connection(self.server, self.root.name, self.share, **overrides)

    def bad_credentials(self) -> SmbConnection:
        return self.connection(password="wrong-" + self.server.password)

    def received(self, package, f):
        path = self.root / package.path_of(f)
        return path.read_bytes() if path.is_file() else None

    def leftovers(self, package):
        folder = self.root / package.folder
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial")) if folder.is_dir() else []


@pytest.fixture
def smb_harness():
    server = smb_server()
    root = server.mkdir("docs", f"out-{uuid.uuid4().hex[:8]}")
    yield SmbHarness(server, root, "docs")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def smb_sealed_harness():
    """The share that requires encryption: the same suite, over SMB 3 encryption."""
    server = smb_server()
    root = server.mkdir("sealed", f"out-{uuid.uuid4().hex[:8]}")
    yield SmbHarness(server, root, "sealed")
    shutil.rmtree(root, ignore_errors=True)
