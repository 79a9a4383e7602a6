"""Dropbox connector (Dropbox API v2 over tasks/http.py, refresh-token OAuth over tasks/oauth.py).

One file: up to `simple_upload_max` (150 MB at most) one files/upload call, the body streamed from
the source with its last bytes held back until the source is verified (tasks/connectors/cloud.py);
larger files an upload session (start, append_v2, finish) in `chunk_size` requests, one chunk in
memory. Every commit is mode add, autorename false, strict_conflict true: an existing name is a 409
path/conflict/file, resolved by Dropbox's content_hash (computed while streaming): identical means
already delivered (a retry after a crash is a no-op), different follows `if_exists` (fail, or
replace with mode update on the rev seen, so a file changed meanwhile is never overwritten blind).

Retries: uploads are safe to repeat (a repeat of a committed upload is a conflict with identical
content), so the HTTP layer repeats them after network errors, 5xx and 429 (too_many_requests,
too_many_write_operations: Retry-After, or the body's retry_after, holds every thread). An append
repeated after a lost answer is told incorrect_offset with the correct offset and goes on from
there; a finish repeated after a lost answer finds its session gone and the committed file.
Other 409s (insufficient_space, malformed_path, disallowed_name) are permanent.
"""

from __future__ import annotations

import posixpath
import threading
import uuid

from tasks.connectors.base import (
    CheckResult,
    Delivery,
    Package,
    PackageFile,
    PermanentDeliveryError,
    RemoteFile,
    TransientDeliveryError,
)
from tasks.connectors.cloud import (
    ChunkSource,
    CloudConnector,
    DropboxContentHasher,
    HeldBackBody,
    hash_file,
    relative,
)
from tasks.dropbox_api import DropboxClient, RouteError
from tasks.errors import RemoteError


def _conflict(exc: RouteError) -> bool:
    return "conflict" in exc.summary


class DropboxConnector(CloudConnector):
    scheme = "dropbox"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client: DropboxClient | None = None
        self._tl = threading.local()  # this thread's content_hash of the file in hand (parallel transfers)

    @property
    def client(self) -> DropboxClient:
        if self._client is None:
            self._client = DropboxClient(self.connection, self.label)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _ref(self, meta: dict) -> str:
        return f"dropbox:{meta.get('path_lower') or meta['path_display'].lower()}"

    # -- uploads ------------------------------------------------------------------------------------
    def _commit_arg(self, path: str, mode) -> dict:
        return {"path": path, "mode": mode, "autorename": False, "mute": True, "strict_conflict": True}

    def _upload(self, package: Package, f: PackageFile, arg: dict) -> tuple[dict, str | None]:
        """Commit the file at arg['path']; (metadata, our content_hash or None when not all bytes were read)."""
        if f.size <= self.connection.simple_upload_max:
            body = HeldBackBody(package, f, DropboxContentHasher)
            try:
                meta = self.client.content("files/upload", arg, body, what=f"document {package.doc_id}: upload of {f.name}",
                                           idempotent=True).json()
            except RouteError:
                if body.complete:
                    self._tl.ours = body.hashers[0].hexdigest()
                raise
            finally:
                body.close()
            return meta, body.hashers[0].hexdigest() if body.complete else None
        return self._session(package, f, arg)

    def _session(self, package: Package, f: PackageFile, arg: dict) -> tuple[dict, str]:
        src = ChunkSource(package, f, DropboxContentHasher)
        size, step = f.size, self.connection.chunk_size
        what = f"document {package.doc_id}: upload session of {f.name}"
        try:
            first = src.chunk(0, min(step, size))
            sid = self.client.content("files/upload_session/start", {"close": False}, first, what=what,
                                      idempotent=True).json()["session_id"]
            offset, turns = len(first), 0
            while offset < size:
                data = src.chunk(offset, min(step, size - offset))
                try:
                    self.client.content("files/upload_session/append_v2",
                                        {"cursor": {"session_id": sid, "offset": offset}, "close": False}, data,
                                        what=what, idempotent=True)
                    offset += len(data)
                except RouteError as exc:
                    correct = exc.error.get("correct_offset")
                    turns += 1
                    if exc.error.get(".tag") != "incorrect_offset" or correct is None or turns > 8:
                        raise
                    offset = int(correct)  # an append the lost answer had applied: go on from where Dropbox is
            ours = src.hashers[0].hexdigest()
            try:
                meta = self.client.content("files/upload_session/finish",
                                           {"cursor": {"session_id": sid, "offset": size}, "commit": arg}, b"",
                                           what=what, idempotent=True).json()
            except RouteError as exc:
                if exc.summary.startswith("lookup_failed"):  # a repeated finish: the first one may have committed
                    meta = self.client.metadata(arg["path"], what)
                    if meta and meta.get("content_hash") == ours:
                        return meta, ours
                self._tl.ours = ours
                raise
            return meta, ours
        finally:
            src.close()

    def _ours_of(self, f: PackageFile) -> str:
        if self._tl.ours is None:
            hasher = DropboxContentHasher()
            hash_file(f, hasher)
            self._tl.ours = hasher.hexdigest()
        return self._tl.ours

    def put(self, package: Package, folder: str, f: PackageFile) -> tuple[str, bool]:
        path = f"{folder}/{f.name}"
        self._tl.ours = None
        try:
            meta, ours = self._upload(package, f, self._commit_arg(path, "add"))
        except RouteError as exc:
            if not _conflict(exc):
                raise PermanentDeliveryError(f"document {package.doc_id}: {exc}") from None
            existing = self.client.metadata(path, f"document {package.doc_id}")
            if existing is None:
                raise TransientDeliveryError(f"document {package.doc_id}: {path} on {self.label} conflicted, then was gone") from None
            if existing.get(".tag") != "file":
                raise PermanentDeliveryError(f"document {package.doc_id}: {path} on {self.label} is a folder") from None
            if existing.get("size") == f.size and existing.get("content_hash") == self._ours_of(f):
                return self._ref(existing), True  # delivered before (a retry after a crash): nothing sent twice
            if self.connection.if_exists == "fail":
                raise PermanentDeliveryError(
                    f"document {package.doc_id}: {path} already exists on {self.label} with other content "
                    f"(connection policy if_exists=fail)") from None
            try:
                meta, ours = self._upload(package, f, self._commit_arg(path, {".tag": "update", "update": existing["rev"]}))
            except RouteError as again:
                if _conflict(again):
                    raise TransientDeliveryError(f"document {package.doc_id}: {path} on {self.label} changed while "
                                                 f"being replaced; tried again later") from None
                raise PermanentDeliveryError(f"document {package.doc_id}: {again}") from None
        if meta.get("size") != f.size or (ours and meta.get("content_hash") != ours):
            raise TransientDeliveryError(f"document {package.doc_id}: {f.name} corrupted on transfer to {self.label}: "
                                         f"sent {f.size} bytes, Dropbox holds {meta.get('size')} (content_hash differs)")
        return self._ref(meta), False

    # -- the rest of the interface ----------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            account = self.client.account()
            self.client.headers()
            root = self.root
            if root:
                meta = self.client.metadata(root, "connection check")
                if meta is None:
                    return self.check_result(False, f"{self.label}: folder {root} does not exist")
                if meta.get(".tag") != "folder":
                    return self.check_result(False, f"{self.label}: {root} is not a folder")
            probe = f"{root}/.docroute-probe-{uuid.uuid4().hex[:12]}"
            self.client.content("files/upload", self._commit_arg(probe, "add"), b"docroute connection test\n",
                                what="connection check")
            self.client.rpc("files/delete_v2", {"path": probe}, what="connection check")
        except (RemoteError, FileNotFoundError) as exc:
            return self.check_result(False, f"{self.label}: {exc}" if self.label not in str(exc) else str(exc))
        email = account.get("email", "?")
        return self.check_result(True, f"{self.label}: connected as {email}, folder {self.root or '/'} is writable")

    def lookup(self, package: Package) -> Delivery | None:
        folder = self.folder_of(package)
        main = None
        for f in package.files:
            meta = self.client.metadata(f"{folder}/{f.name}", f"document {package.doc_id}")
            if meta is None or meta.get(".tag") != "file" or meta.get("size") != f.size:
                return None
            hasher = DropboxContentHasher()
            hash_file(f, hasher)
            if meta.get("content_hash") != hasher.hexdigest():
                return None
            main = main or meta
        return Delivery(remote_ref=self._ref(main), already_present=True)

    def inventory(self, prefix: str = "", hashes: bool = False):
        root = self.root
        start = posixpath.normpath(f"{root}/{prefix}") if prefix else root
        if prefix and (prefix.startswith("/") or ".." in prefix.split("/")):
            raise PermanentDeliveryError(f"{self.label}: prefix {prefix!r} escapes the folder")
        try:
            entries, _ = self.client.list_folder(start if start != "/" else "", recursive=True)
        except FileNotFoundError:
            return []
        return sorted(RemoteFile(relative(root, e["path_display"]), e["size"], self._ref(e))
                      for e in entries if e.get(".tag") == "file")
