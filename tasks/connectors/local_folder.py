"""Local folder connector: temp name in the target folder, fsync, then an atomic rename."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from tasks.connectors.base import (
    CheckResult,
    Connector,
    Delivery,
    Mode,
    Package,
    PackageFile,
    PermanentDeliveryError,
    RemoteFile,
    TransientDeliveryError,
    VerifyingReader,
)

PARTIAL_SUFFIX = ".partial"
_PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class LocalFolderConnector(Connector):
    @property
    def root(self) -> Path:
        return Path(self.test_setting("test_folder") if self.mode == Mode.TEST else self.connection.base_folder)

    def _target(self, package: Package, f: PackageFile) -> Path:
        root = self.root.resolve()
        target = (root / package.path_of(f)).resolve()
        # Mapping already sanitises paths; this is the last line of defence.
        if root not in target.parents:
            raise PermanentDeliveryError(
                f"document {package.doc_id}: path {package.path_of(f)!r} escapes {self.label}"
            )
        return target

    def check(self) -> CheckResult:
        root = self.root
        probe = root / f".docroute-probe-{uuid.uuid4().hex}"
        try:
            if not root.is_dir():
                return CheckResult(False, f"{self.label}: folder does not exist")
            probe.write_bytes(b"probe")
            probe.unlink()
        except OSError as exc:
            return CheckResult(False, f"{self.label}: cannot write a probe file: {exc.strerror}")
        return CheckResult(True, f"{self.label}: folder exists and is writable")

    def lookup(self, package: Package) -> Delivery | None:
        targets = [self._target(package, f) for f in package.files]
        for f, t in zip(package.files, targets):
            if not t.is_file() or t.stat().st_size != f.size or _sha256_file(t) != f.sha256:
                return None
        return Delivery(remote_ref=str(targets[0]), already_present=True)

    def remove_partial(self, package: Package) -> None:
        for f in package.files:
            target = self._target(package, f)
            for leftover in target.parent.glob(f".{target.name}.*{PARTIAL_SUFFIX}"):
                leftover.unlink(missing_ok=True)

    def deliver(self, package: Package) -> Delivery:
        policy = self.connection.if_exists
        present = 0
        first: Path | None = None
        for f in package.files:  # document first, sidecar last: the sidecar is the trigger
            target = self._target(package, f)
            first = first or target
            try:
                present += self._put(package, f, target, policy)
            except OSError as exc:
                raise self._error(package, target, exc) from None
        return Delivery(remote_ref=str(first), already_present=present == len(package.files))

    def _put(self, package: Package, f: PackageFile, target: Path, policy: str) -> bool:
        """Write one file atomically; True when an identical file was already there."""
        if target.exists():
            identical = target.stat().st_size == f.size and _sha256_file(target) == f.sha256
            if identical and policy != "overwrite":
                return True
            if policy == "fail":
                raise PermanentDeliveryError(
                    f"document {package.doc_id}: {target} already exists with other content "
                    f"(connection policy if_exists=fail)"
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        try:
            with f.open() as src, tmp.open("wb") as dst:
                reader = VerifyingReader(src, f)
                shutil.copyfileobj(reader, dst, 1024 * 1024)
                reader.verify(package)
                if self.connection.fsync:
                    dst.flush()
                    os.fsync(dst.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return False

    def _error(self, package: Package, target: Path, exc: OSError):
        text = f"document {package.doc_id}: cannot write {target} on {self.label}: {exc.strerror or exc}"
        if exc.errno in _PERMANENT_ERRNOS:
            return PermanentDeliveryError(text)
        return TransientDeliveryError(text)

    def inventory(self, prefix: str = "", hashes: bool = False):
        """Ability.INVENTORY: every file under root/prefix; `.<name>.<random>.partial` temp files flagged."""
        root = self.root.resolve()
        start = (root / prefix).resolve() if prefix else root
        if start != root and root not in start.parents:
            raise PermanentDeliveryError(f"{self.label}: prefix {prefix!r} escapes the folder")
        if not start.is_dir():
            return
        for folder, dirs, names in os.walk(start):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder) / name
                try:
                    size = path.stat().st_size
                    digest = _sha256_file(path) if hashes else None
                except FileNotFoundError:  # removed while listing (a temp file renamed into place)
                    continue
                partial = name.startswith(".") and name.endswith(PARTIAL_SUFFIX)
                rel = path.relative_to(root).as_posix()
                yield RemoteFile(rel, size, str(path), partial, digest)
