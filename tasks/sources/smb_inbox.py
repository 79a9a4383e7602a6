"""Capture inbox on an SMB share (block `smb-inbox`), through an SMB connection block.

The inbox convention is tasks/sources/inbox.py's; this module is the SMB store: one directory
listing per scan (names, sizes, write times and file ids from the listing itself), files opened
and streamed with smbclient, archive after transfer as renames into `archive/` (ReplaceIfExists,
so an older archived copy is replaced). A reparse point (symbolic link, junction) is flagged as a
link and never read through.
"""

from __future__ import annotations

from typing import BinaryIO

import smbclient

from tasks.smb import SmbSession, missing, replace
from tasks.sources.inbox import ARCHIVE, Entry, InboxSource, InboxStore

_REPARSE = 0x400
_DIRECTORY = 0x10


def _entry(name: str, info) -> Entry:
    attrs = info.file_attributes
    when = info.last_write_time.timestamp()
    return Entry(name, info.end_of_file, when, str(info.last_write_time.timestamp()), str(info.file_id),
                 link=bool(attrs & _REPARSE), is_file=not attrs & (_DIRECTORY | _REPARSE))


class SmbStore(InboxStore):
    separators = "/\\"

    def __init__(self, block):
        self.block = block
        self.label = block.label()
        self.session = SmbSession(block.connection, self.label)
        parts = [p for p in (block.folder or "").replace("\\", "/").split("/") if p and p != "."]
        self.folder = "/".join(parts)

    def open_session(self) -> None:
        self.session.open()

    def close(self) -> None:
        self.session.close()

    def _unc(self, name: str = "", *folders: str) -> str:
        return self.session.unc(self.folder, *folders, name)

    def _fail(self, exc: Exception, action: str):
        if missing(exc):
            return FileNotFoundError(2, f"{self.label}: {action}: no such file or folder")
        return self.session.error(exc, action)

    def entries(self) -> dict[str, Entry]:
        try:
            self.session.open()
            return {e.name: _entry(e.name, e.smb_info) for e in smbclient.scandir(self._unc(), **self.session.kwargs)}
        except Exception as exc:  # noqa: BLE001 - classified
            if missing(exc):
                raise FileNotFoundError(f"{self.label}: folder does not exist") from None
            raise self.session.error(exc, "list the inbox") from None

    def entry(self, name: str) -> Entry | None:
        try:
            self.session.open()
            found = list(smbclient.scandir(self._unc(), search_pattern=name, **self.session.kwargs))  # closes the listing
            return next((_entry(name, e.smb_info) for e in found if e.name == name), None)
        except Exception as exc:  # noqa: BLE001 - classified
            if missing(exc):
                return None
            raise self.session.error(exc, f"look at {name}") from None

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def open(self, name: str) -> BinaryIO:
        try:
            self.session.open()
            return smbclient.open_file(self._unc(name), mode="rb", **self.session.kwargs)
        except Exception as exc:  # noqa: BLE001 - classified
            error = self._fail(exc, f"open {name}")
            raise error if isinstance(error, OSError) else OSError(5, str(error)) from None

    def archive(self, names: list[str]) -> None:
        try:
            self.session.open()
            smbclient.makedirs(self._unc(ARCHIVE), exist_ok=True, **self.session.kwargs)
        except Exception as exc:  # noqa: BLE001 - classified
            raise self.session.error(exc, f"create {ARCHIVE}") from None
        for name in names:
            if self.entry(name) is None:
                continue  # archived already (or gone): idempotent
            try:
                replace(self.session, self._unc(name), self._unc(name, ARCHIVE))
            except Exception as exc:  # noqa: BLE001 - classified
                if missing(exc):
                    continue  # archived already (or gone): idempotent
                raise self.session.error(exc, f"archive {name}") from None

    def archived(self, name: str) -> bool:
        try:
            self.session.open()
            smbclient.stat(self._unc(name, ARCHIVE), **self.session.kwargs)
            return True
        except Exception:  # noqa: BLE001 - not there, or not reachable: not archived
            return False


class SmbInboxSource(InboxSource):
    def __init__(self, block):
        super().__init__(block, SmbStore(block))
