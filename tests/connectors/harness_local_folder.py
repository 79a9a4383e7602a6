"""Conformance harness for the local folder connector."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.local_folder import LocalFolderConnection
from tests.connectors.conformance import Harness


class LocalFolderHarness(Harness):
    def __init__(self, root: Path):
        self.root = root

    def connection(self):
        return LocalFolderConnection(base_folder=str(self.root))

    def received(self, package, f):
        path = self.root / package.path_of(f)
        return path.read_bytes() if path.is_file() else None

    def leftovers(self, package):
        folder = self.root / package.folder
        return [p.name for p in folder.glob("*.partial")] if folder.is_dir() else []


@pytest.fixture
def local_folder_harness(tmp_path):
    root = tmp_path / "destination"
    root.mkdir()
    return LocalFolderHarness(root)
