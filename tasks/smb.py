"""SMB sessions for the SMB connector and the SMB inbox (smbprotocol's high-level client, smbclient).

Each connector or source has its own connection cache (smbclient's pool is keyed by server and
user, so a wrong password would otherwise ride on another block's live session), closed with it.
Errors are classified here: a refused login is CredentialsRefusedError; access denied, a missing
share and a full disk are PermanentError; a broken or timed-out connection is TransientError
(and the cache is dropped, so the next call reconnects).
"""

from __future__ import annotations

import errno
import posixpath
import socket

import smbclient
from smbprotocol.exceptions import SMBAuthenticationError, SMBConnectionClosed, SMBException, SMBOSError, SMBResponseException

from tasks.errors import CredentialsRefusedError, PermanentError, RemoteError, TransientError

_MISSING = {errno.ENOENT, errno.ENOTDIR}
STATUS_ACCESS_DENIED = 0xC0000022  # smbprotocol maps it to errno 0, not EACCES
STATUS_NO_SUCH_FILE = 0xC000000F


def denied(exc: BaseException) -> bool:
    return isinstance(exc, SMBOSError) and (exc.errno in _DENIED or getattr(exc, "ntstatus", None) == STATUS_ACCESS_DENIED)
_DENIED = {errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}


class SmbSession:
    def __init__(self, block, label: str):
        self.block, self.label = block, label
        self.cache: dict = {}
        self.registered = False

    @property
    def kwargs(self) -> dict:
        """What every smbclient call takes: the login (a dropped connection is made again with it) and our cache."""
        b = self.block
        return {"username": f"{b.domain}\\{b.username}" if b.domain else b.username, "password": b.password.get_secret_value(),
                "port": b.port, "encrypt": True if b.encrypt else None, "connection_timeout": b.connect_timeout,
                "connection_cache": self.cache}

    def unc(self, *parts: str) -> str:
        """\\\\host\\share\\a\\b from relative POSIX parts."""
        path = posixpath.normpath("/".join(p.strip("/\\").replace("\\", "/") for p in parts if p)).lstrip("/")
        tail = "" if path in ("", ".") else "\\" + path.replace("/", "\\")
        return f"\\\\{self.block.host}\\{self.block.share}{tail}"

    def open(self) -> None:
        if self.registered:
            return
        b = self.block
        try:
            smbclient.register_session(b.host, auth_protocol=b.auth_protocol, require_signing=b.require_signing, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - classified
            raise self.error(exc, "log in") from None
        self.registered = True

    def close(self) -> None:
        try:
            smbclient.reset_connection_cache(connection_cache=self.cache)
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass
        self.cache.clear()
        self.registered = False

    def error(self, exc: BaseException, action: str, what: str = "") -> RemoteError:
        where = f"{what}: " if what else ""
        if isinstance(exc, RemoteError):
            return exc
        if isinstance(exc, SMBAuthenticationError) or (isinstance(exc, SMBResponseException) and "LOGON_FAILURE" in str(exc)):
            self.close()
            return CredentialsRefusedError(f"{where}{self.label}: the server refused the login ({type(exc).__name__})")
        if isinstance(exc, SMBOSError):
            code = exc.errno
            if denied(exc):
                reason = "access denied"
            elif code in _MISSING:
                reason = "no such file or folder"
            elif code in _FULL:
                reason = "the share is full or over quota"
            else:
                reason = exc.strerror or str(exc)
            return PermanentError(f"{where}cannot {action} on {self.label}: {reason}")
        if isinstance(exc, (SMBConnectionClosed, ConnectionError, socket.timeout, TimeoutError, EOFError)) or (
                isinstance(exc, ValueError) and "connect" in str(exc).lower()):
            self.close()
            return TransientError(f"{where}connection to {self.label} lost while trying to {action}: "
                                  f"{type(exc).__name__}; will reconnect")
        if isinstance(exc, (SMBException, OSError)):
            self.close()
            return TransientError(f"{where}cannot {action} on {self.label}: {type(exc).__name__}: {exc}"[:400])
        return TransientError(f"{where}unexpected {type(exc).__name__} trying to {action} on {self.label}: {exc}"[:400])


def replace(session: SmbSession, src: str, dst: str) -> None:
    """Rename src over dst. smbclient's replace first opens an existing dst for FILE_EXECUTE, which Samba
    refuses for a file without an x bit (the usual 0644, unless `acl allow execute always`): then
    the old dst is removed and src renamed (not atomic, but the final name never holds a partial
    file), as the SFTP connector does on a server without posix-rename."""
    kwargs = session.kwargs
    try:
        smbclient.replace(src, dst, **kwargs)
        return
    except SMBOSError as exc:
        if not denied(exc):
            raise
    try:
        smbclient.remove(dst, **kwargs)
    except SMBOSError as exc:
        if exc.errno not in _MISSING:
            raise
    smbclient.rename(src, dst, **kwargs)


def missing(exc: BaseException) -> bool:
    return isinstance(exc, (SMBOSError, FileNotFoundError)) and (
        getattr(exc, "errno", None) in _MISSING or getattr(exc, "ntstatus", None) == STATUS_NO_SUCH_FILE)
