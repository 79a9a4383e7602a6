"""Capture inbox on a local or mounted folder (block `capture-inbox-folder`).

The inbox convention is tasks/sources/inbox.py's; this module is the folder store: one scandir
lists every file with its size, modification time and inode, and files are opened with
O_NOFOLLOW, so a file swapped for a symbolic link after it was listed is not read through either.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from tasks.sources.inbox import ARCHIVE, Entry, InboxSource, InboxStore


def _entry(name: str, st: os.stat_result) -> Entry:
    return Entry(name, st.st_size, st.st_mtime, str(st.st_mtime_ns), str(st.st_ino),
                 link=stat.S_ISLNK(st.st_mode), is_file=stat.S_ISREG(st.st_mode))


class FolderStore(InboxStore):
    """An inbox folder on this machine's file system."""

    def __init__(self, path: str):
        self.root = Path(path)
        self.label = f"capture inbox {self.root}"

    def local(self) -> bool:
        return True

    def entries(self) -> dict[str, Entry]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.label}: folder does not exist")
        out = {}
        with os.scandir(self.root) as it:
            for de in it:
                try:
                    out[de.name] = _entry(de.name, de.stat(follow_symlinks=False))
                except FileNotFoundError:  # removed while listing
                    continue
        return out

    def entry(self, name: str) -> Entry | None:
        try:
            return _entry(name, os.lstat(self.root / name))
        except FileNotFoundError:
            return None

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def open(self, name: str) -> BinaryIO:
        fd = os.open(self.root / name, os.O_RDONLY | os.O_NOFOLLOW)
        return os.fdopen(fd, "rb")

    def archive(self, names: list[str]) -> None:
        folder = self.root / ARCHIVE
        folder.mkdir(exist_ok=True)
        for name in names:
            src = self.root / name
            if os.path.lexists(src):
                shutil.move(str(src), folder / name)

    def archived(self, name: str) -> bool:
        return (self.root / ARCHIVE / name).exists()


class FolderInbox(InboxSource):
    """Documents from a CaptureInboxFolder block's folder."""

    def __init__(self, block):
        super().__init__(block, FolderStore(block.path))
