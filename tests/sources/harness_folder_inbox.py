"""Source conformance harness for the capture inbox folder: a real folder on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.capture_inbox import CaptureInboxFolder
from tests.sources.conformance import InboxHarness


class FolderInboxHarness(InboxHarness):
    def __init__(self, root: Path):
        self.root = root

    def block(self) -> CaptureInboxFolder:
        return CaptureInboxFolder(path=str(self.root), settle_seconds=0)

    def broken_block(self) -> CaptureInboxFolder:
        return CaptureInboxFolder(path=str(self.root / "no-such-folder"), settle_seconds=0)

    def write(self, name: str, data: bytes) -> None:
        (self.root / name).write_bytes(data)

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def in_archive(self, name: str) -> bool:
        return (self.root / "archive" / name).is_file()


@pytest.fixture
def folder_inbox_harness(tmp_path):
    root = tmp_path / "inbox"
    root.mkdir()
    return FolderInboxHarness(root)
