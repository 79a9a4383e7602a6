"""SMB connector (smbprotocol's smbclient): SMB 2/3, signing, encryption as the share requires,
temp name then rename, the policies of the SFTP connector.

Per file, in package order (document first, the sidecar or trigger file last, each renamed only
once the one before has its final name): stat the target (policy `if_exists`; none under
overwrite), write `.<name>.<random><temp_suffix>` in its folder, streamed through VerifyingReader
in 1 MiB writes (a source that breaks or changed is caught before the rename), check the temp
file's size (verify=size) or read it back and hash it (verify=hash: SMB has no server-side hash),
then rename it into place with ReplaceIfExists (SMB2 FileRenameInformation: atomic on the
server). A failure removes the temp file; a connection lost mid-write leaves it for
`remove_partial`, which the engine calls before a retry.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat as stat_mod
import uuid
from datetime import datetime, timezone

import smbclient

from tasks.connectors.base import (
    CheckResult,
    Connector,
    Delivery,
    DeliveryError,
    Mode,
    Package,
    PackageFile,
    PermanentDeliveryError,
    RemoteFile,
    TransientDeliveryError,
    VerifyingReader,
)
from tasks.smb import SmbSession, missing
from tasks.smb import replace as smb_replace

WRITE = 1024 * 1024


class SmbConnector(Connector):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = SmbSession(self.connection, self.label)
        self._dirs: set[str] = set()

    def open(self) -> None:
        self.session.open()

    def close(self) -> None:
        self.session.close()

    # -- paths --------------------------------------------------------------------------------------
    @property
    def root(self) -> str:
        """The connection's folder in the share, as 'a/b' ('' for the share's root)."""
        folder = self.test_setting("test_folder") if self.mode == Mode.TEST else self.connection.base_folder
        parts = [p for p in (folder or "").replace("\\", "/").split("/") if p and p != "."]
        if ".." in parts:
            raise PermanentDeliveryError(f"{self.label}: the folder must not contain '..'")
        return "/".join(parts)

    def _folder(self, package: Package) -> str:
        rel = posixpath.normpath(package.folder) if package.folder else "."
        if rel.startswith(("/", "..")) or "\\" in package.folder:
            raise PermanentDeliveryError(f"document {package.doc_id}: folder {package.folder!r} escapes {self.label}")
        if self.connection.day_folder:
            rel = posixpath.join(rel, datetime.now(timezone.utc).strftime("%Y-%m-%d"))
        for f in package.files:
            if "/" in f.name or "\\" in f.name or f.name in ("", ".", ".."):
                raise PermanentDeliveryError(f"document {package.doc_id}: bad file name {f.name!r} on {self.label}")
        return self.root if rel == "." else "/".join(p for p in (self.root, rel) if p)

    def _unc(self, *parts: str) -> str:
        return self.session.unc(*parts)

    def _call(self, fn, *args, action: str, what: str = "", **kwargs):
        try:
            self.session.open()
            return fn(*args, **kwargs, **self.session.kwargs)
        except DeliveryError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified by the session
            raise self.session.error(exc, action, what) from None

    def _stat(self, path: str, what: str = ""):
        try:
            self.session.open()
            return smbclient.stat(self._unc(path), **self.session.kwargs)
        except Exception as exc:  # noqa: BLE001 - classified
            if missing(exc):
                return None
            raise self.session.error(exc, f"stat {path}", what) from None

    def _makedirs(self, folder: str, what: str) -> None:
        if not folder or folder in self._dirs:
            return
        attrs = self._stat(folder, what)
        if attrs is None:
            self._call(smbclient.makedirs, self._unc(folder), exist_ok=True, action=f"create folder {folder}", what=what)
        elif not stat_mod.S_ISDIR(attrs.st_mode):
            raise PermanentDeliveryError(f"{what}: {folder} on {self.label} is a file, not a folder")
        self._dirs.add(folder)

    def _sha256(self, path: str, what: str) -> str:
        digest = hashlib.sha256()
        with self._call(smbclient.open_file, self._unc(path), mode="rb", action=f"read {path}", what=what) as fh:
            while data := fh.read(WRITE):
                digest.update(data)
        return digest.hexdigest()

    def _identical(self, path: str, attrs, f: PackageFile, what: str) -> bool:
        if attrs.st_size != f.size:
            return False
        return self.connection.verify != "hash" or self._sha256(path, what) == f.sha256

    # -- delivery -----------------------------------------------------------------------------------
    def _put(self, package: Package, folder: str, f: PackageFile) -> bool:
        """One file: True when an identical one was already there."""
        b = self.connection
        what = f"document {package.doc_id}"
        target = posixpath.join(folder, f.name)
        if b.if_exists != "overwrite":
            attrs = self._stat(target, what)
            if attrs is not None:
                if self._identical(target, attrs, f, what):
                    return True
                if b.if_exists == "fail":
                    raise PermanentDeliveryError(f"{what}: {target} already exists on {self.label} with other content "
                                                 f"(connection policy if_exists=fail)")
        tmp = posixpath.join(folder, f".{f.name}.{uuid.uuid4().hex[:8]}{b.temp_suffix}")
        written = False
        try:
            with f.open() as src:
                reader = VerifyingReader(src, f)
                with self._call(smbclient.open_file, self._unc(tmp), mode="wb", action=f"write {tmp}", what=what) as dst:
                    written = True
                    while True:
                        try:
                            data = reader.read(WRITE)
                        except OSError as exc:
                            raise TransientDeliveryError(f"{what}: cannot read source file {f.name}: {exc.strerror or exc}") from None
                        if not data:
                            break
                        try:
                            dst.write(data)
                        except Exception as exc:  # noqa: BLE001 - classified
                            raise self.session.error(exc, f"write {tmp}", what) from None
                reader.verify(package)
            if b.verify != "none":
                attrs = self._stat(tmp, what)
                if attrs is None or attrs.st_size != f.size:
                    raise TransientDeliveryError(f"{what}: {f.name} corrupted on transfer to {self.label}: sent {f.size} "
                                                 f"bytes, the share holds {attrs.st_size if attrs else 'nothing'}")
                if b.verify == "hash" and self._sha256(tmp, what) != f.sha256:
                    raise TransientDeliveryError(f"{what}: {f.name} corrupted on transfer to {self.label}: sha256 differs")
            try:
                smb_replace(self.session, self._unc(tmp), self._unc(target))
            except Exception as exc:  # noqa: BLE001 - classified
                raise self.session.error(exc, f"rename {tmp} to {target}", what) from None
            written = False
        except OSError as exc:
            raise TransientDeliveryError(f"{what}: cannot read source file {f.name}: {exc.strerror or exc}") from None
        finally:
            if written:
                try:  # never a temp file left behind where the connection still works
                    self.session.open()
                    smbclient.remove(self._unc(tmp), **self.session.kwargs)
                except Exception:  # noqa: BLE001 - remove_partial cleans up on the retry
                    pass
        return False

    def deliver(self, package: Package) -> Delivery:
        folder = self._folder(package)
        self._makedirs(folder, f"document {package.doc_id}")
        present = all([self._put(package, folder, f) for f in package.files])  # in order; stops at the first error
        return Delivery(remote_ref=self._ref(posixpath.join(folder, package.main.name)), already_present=present)

    def _ref(self, path: str) -> str:
        b = self.connection
        return f"smb://{b.host}:{b.port}/{b.share}/{path}"

    # -- the rest of the interface -------------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            self.session.open()
            root = self.root
            attrs = self._stat(root, "connection check") if root else True
            if attrs is None:
                return CheckResult(False, f"{self.label}: folder {root} does not exist")
            if root and not stat_mod.S_ISDIR(attrs.st_mode):
                return CheckResult(False, f"{self.label}: {root} is not a folder")
            probe = posixpath.join(root, f".docroute-probe-{uuid.uuid4().hex[:12]}{self.connection.temp_suffix}")
            with self._call(smbclient.open_file, self._unc(probe), mode="wb", action="write a probe file") as fh:
                fh.write(b"docroute connection test\n")
            self._call(smbclient.remove, self._unc(probe), action="remove the probe file")
        except DeliveryError as exc:
            return CheckResult(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        encrypted = " (encryption required)" if self.connection.encrypt else ""
        folder = self.root or "(share root)"
        return CheckResult(True, f"{self.label}: logged in{encrypted}, folder {folder} is writable")

    def lookup(self, package: Package) -> Delivery | None:
        folder = self._folder(package)
        for f in package.files:
            path = posixpath.join(folder, f.name)
            attrs = self._stat(path, f"document {package.doc_id}")
            if attrs is None or attrs.st_size != f.size or self._sha256(path, f"document {package.doc_id}") != f.sha256:
                return None
        return Delivery(remote_ref=self._ref(posixpath.join(folder, package.main.name)), already_present=True)

    def remove_partial(self, package: Package) -> None:
        folder = self._folder(package)
        what = f"document {package.doc_id}"
        try:
            self.session.open()
            names = smbclient.listdir(self._unc(folder), **self.session.kwargs)
        except Exception as exc:  # noqa: BLE001 - classified
            if missing(exc):
                return
            raise self.session.error(exc, f"list {folder}", what) from None
        prefixes = tuple(f".{f.name}." for f in package.files)
        for name in names:
            if name.startswith(prefixes) and name.endswith(self.connection.temp_suffix):
                self._call(smbclient.remove, self._unc(folder, name), action=f"remove {name}", what=what)

    def inventory(self, prefix: str = "", hashes: bool = False):
        if prefix and (prefix.startswith("/") or ".." in prefix.split("/")):
            raise PermanentDeliveryError(f"{self.label}: prefix {prefix!r} escapes the folder")
        root = self.root
        start = posixpath.join(root, prefix) if prefix else root
        found: list[RemoteFile] = []
        pending = [start]
        suffix = self.connection.temp_suffix
        while pending:
            folder = pending.pop()
            try:
                self.session.open()
                entries = list(smbclient.scandir(self._unc(folder), **self.session.kwargs))
            except Exception as exc:  # noqa: BLE001 - classified
                if missing(exc):
                    continue
                raise self.session.error(exc, f"list {folder}", "inventory") from None
            for entry in entries:
                path = posixpath.join(folder, entry.name) if folder else entry.name
                if entry.is_dir():
                    pending.append(path)
                    continue
                partial = entry.name.startswith(".") and entry.name.endswith(suffix)
                rel = posixpath.relpath(path, root) if root else path
                digest = self._sha256(path, "inventory") if hashes and not partial else None
                found.append(RemoteFile(rel, entry.smb_info.end_of_file, self._ref(path), partial, digest))
        return sorted(found)
