"""Capture inbox on an SFTP server (block `sftp-inbox`), through an SFTP connection block.

The inbox convention is tasks/sources/inbox.py's; this module is the SFTP store: one SSH session
per run (tasks/ssh.py: pinned host key, login), one directory listing per scan (sizes, times and
types without following links: OpenSSH lists with lstat), files streamed with read-ahead, and
archive after transfer as renames into `archive/` (posix-rename where the server offers it).
Modification times over SFTP v3 are whole seconds, so a file's fingerprint is its size and mtime.
"""

from __future__ import annotations

import errno
import posixpath
import stat
from typing import BinaryIO

import paramiko

from tasks.errors import TransientError
from tasks.sources.inbox import ARCHIVE, Entry, InboxSource, InboxStore
from tasks.ssh import open_sftp


def _entry(name: str, attrs: paramiko.SFTPAttributes) -> Entry:
    mode = attrs.st_mode or 0
    mtime = float(attrs.st_mtime or 0)
    return Entry(name, attrs.st_size or 0, mtime, str(int(mtime)), link=stat.S_ISLNK(mode), is_file=stat.S_ISREG(mode))


def _missing(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT


class SftpStore(InboxStore):
    """An inbox folder on an SFTP server."""

    separators = "/\\"  # a Windows server's SFTP takes a backslash as a folder separator too

    def __init__(self, block):
        self.block = block
        self.label = block.label()
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._root: str | None = None

    # -- session ----------------------------------------------------------------------------------
    def open_session(self) -> None:
        if self._sftp is None:
            self._transport, self._sftp = open_sftp(self.block.connection, self.label)

    def close(self) -> None:
        sftp, transport, self._sftp, self._transport = self._sftp, self._transport, None, None
        if sftp is not None:
            sftp.close()
        if transport is not None:
            transport.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None or self._transport is None or not self._transport.is_active():
            self.close()
            self.open_session()
        return self._sftp

    @property
    def root(self) -> str:
        if self._root is None:
            folder = self.block.folder
            self._root = folder if folder.startswith("/") else posixpath.normpath(posixpath.join(self.sftp.normalize("."), folder))
        return self._root

    def _path(self, name: str, *folders: str) -> str:
        return posixpath.join(self.root, *folders, name)

    def _call(self, what: str, fn, *args):
        """An SFTP call; a broken session is a TransientError naming the inbox (the run fails, nothing is lost)."""
        try:
            return fn(*args)
        except OSError:
            raise
        except (EOFError, paramiko.SSHException) as exc:
            self.close()
            raise TransientError(f"{self.label}: {what} failed: the SFTP session broke ({exc or type(exc).__name__})") from None

    # -- the store ----------------------------------------------------------------------------------
    def entries(self) -> dict[str, Entry]:
        try:
            listing = self._call("listing the inbox", self.sftp.listdir_attr, self.root)
        except OSError as exc:
            if _missing(exc):
                raise FileNotFoundError(f"{self.label}: folder does not exist") from None
            raise
        return {a.filename: _entry(a.filename, a) for a in listing}

    def entry(self, name: str) -> Entry | None:
        try:
            return _entry(name, self._call(f"stat of {name}", self.sftp.lstat, self._path(name)))
        except OSError as exc:
            if _missing(exc):
                return None
            raise

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def open(self, name: str) -> BinaryIO:
        fh = self._call(f"opening {name}", self.sftp.open, self._path(name), "rb")
        fh.prefetch()  # read-ahead: the whole file in flight, not one round trip per 32 KiB
        return fh

    def archive(self, names: list[str]) -> None:
        sftp = self.sftp
        folder = self._path(ARCHIVE)
        try:
            sftp.mkdir(folder)
        except OSError:
            pass  # already there (or the rename below says why not)
        for name in names:
            src, dst = self._path(name), self._path(name, ARCHIVE)
            if self.entry(name) is None:
                continue  # archived already (or gone): idempotent
            try:
                try:
                    sftp.posix_rename(src, dst)  # atomic, replaces an older archived copy
                except OSError as exc:
                    if _missing(exc):
                        raise
                    try:  # a server without posix-rename: plain rename, which will not replace
                        sftp.remove(dst)
                    except OSError:
                        pass
                    sftp.rename(src, dst)
            except OSError as exc:
                if _missing(exc) and self.entry(name) is None:
                    continue  # moved meanwhile
                raise TransientError(f"{self.label}: cannot archive {name}: {exc.strerror or exc}") from None

    def archived(self, name: str) -> bool:
        try:
            self.sftp.stat(self._path(name, ARCHIVE))
            return True
        except OSError:
            return False


class SftpInboxSource(InboxSource):
    """Documents from an SftpInbox block's folder."""

    def __init__(self, block):
        super().__init__(block, SftpStore(block))
