"""Google Drive connector (google-api-python-client + google-auth, tasks/gdrive.py).

Drive names are not unique: a blind retry makes a second file. So every file carries the document
version's idempotency key in appProperties (docroute_key = Package.idempotency_key, docroute_file =
a hash of its name), and before each file is uploaded, and again before any retry, the folder is
queried: `'<folder>' in parents and trashed = false and (name = '<name>' or appProperties has
{ key='docroute_key' and value='<key>' })`. Our own earlier upload (same key and file) that is
identical (size, md5Checksum) is already delivered; a file of that name from elsewhere is compared
the same way and otherwise follows `if_exists` (fail, or its content replaced).

Uploads: up to `multipart_max` (5 MB) one multipart request; larger ones resumable, in chunks of
`chunk_size` (256 KiB multiples), one chunk in memory, the last one only once the source is
verified (the file exists only after it). A connection broken mid-chunk: the library asks the
session where it is (`bytes */N`) and goes on; a session that answers 404 is started again, after
the query for the key. A multipart upload is never repeated by the library (its retries would
repeat a create whose answer was lost: a second file); a transient failure (403 rateLimitExceeded,
429, 5xx, a broken connection) is backed off here, the key looked for, and only then sent again. Folders are found by name under `folder_id` (or the shared drive, or My
Drive) and created when missing, once per run (a lock: two threads never make twin folders).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid

from googleapiclient.errors import HttpError
from googleapiclient.http import MediaUpload

from tasks.connectors.base import (
    CheckResult,
    Delivery,
    Package,
    PackageFile,
    PermanentDeliveryError,
    RemoteFile,
    TransientDeliveryError,
)
from tasks.connectors.cloud import ChunkSource, CloudConnector, hash_file, relative
from tasks.errors import RemoteError
from tasks.gdrive import FIELDS, FOLDER, TRANSPORT_ERRORS, DriveClient, q_string

KEY, FILE_KEY = "docroute_key", "docroute_file"
MAX_CUTS = 6
STARTS = 3  # uploads started for one file (a session that answered 404, a transient failure)


class _Restart(Exception):
    """The resumable session is gone (404): start again, after looking for the key."""


class _Media(MediaUpload):
    """A package file for google-api-python-client: bytes served from a ChunkSource (MediaUpload's
    documented extension point: size, chunksize, mimetype, resumable, getbytes, has_stream)."""

    def __init__(self, src: ChunkSource, mimetype: str, chunksize: int, resumable: bool):
        super().__init__()
        self._src, self._mime, self._chunk, self._resumable = src, mimetype, chunksize, resumable

    def chunksize(self):
        return self._chunk

    def mimetype(self):
        return self._mime

    def size(self):
        return self._src.size

    def resumable(self):
        return self._resumable

    def getbytes(self, begin, length):
        return self._src.chunk(begin, max(0, min(length, self._src.size - begin)))

    def has_stream(self):
        return False


def file_key(f: PackageFile) -> str:
    return hashlib.sha256(f.name.encode()).hexdigest()[:16]


def md5_of(f: PackageFile) -> str:
    h = hashlib.md5()
    hash_file(f, h)
    return h.hexdigest()


class GoogleDriveConnector(CloudConnector):
    scheme = "gdrive"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client: DriveClient | None = None
        self._folders: dict[str, str] = {}
        self._folder_lock = threading.Lock()

    @property
    def client(self) -> DriveClient:
        if self._client is None:
            self._client = DriveClient(self.connection, self.label)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @staticmethod
    def _ref(item: dict) -> str:
        return f"gdrive:{item['id']}"

    # -- folders ------------------------------------------------------------------------------------
    def folder_id(self, path: str, create: bool = True, what: str = "") -> str | None:
        """The id of the folder at `path` ('/a/b' under the base folder); None when missing and not `create`."""
        with self._folder_lock:
            if path in self._folders:
                return self._folders[path]
            parent, walked = self.client.base_folder(), ""
            for part in [p for p in path.split("/") if p]:
                walked += "/" + part
                if walked in self._folders:
                    parent = self._folders[walked]
                    continue
                parent = self.client.child_folder(parent, part, create, what)
                if parent is None:
                    return None
                self._folders[walked] = parent
            self._folders[path] = parent
            return parent

    # -- uploads ------------------------------------------------------------------------------------
    def _existing(self, parent: str, package: Package, f: PackageFile, what: str) -> tuple[list[dict], list[dict]]:
        """(our earlier uploads of this file of this version, other files of that name) in the folder."""
        key = package.idempotency_key
        q = (f"'{q_string(parent)}' in parents and trashed = false and (name = '{q_string(f.name)}' or "
             f"appProperties has {{ key='{KEY}' and value='{key}' }})")
        found = self.client.list(q, what)
        mine = [x for x in found if (x.get("appProperties") or {}).get(KEY) == key
                and (x.get("appProperties") or {}).get(FILE_KEY) == file_key(f)]
        others = [x for x in found if x not in mine and x.get("name") == f.name and x.get("mimeType") != FOLDER]
        return mine, others

    @staticmethod
    def _identical(item: dict, f: PackageFile, md5: str) -> bool:
        return str(item.get("size")) == str(f.size) and item.get("md5Checksum") == md5

    def _send(self, package: Package, f: PackageFile, parent: str, target: dict | None, what: str) -> dict:
        """One upload of the file: create it (target None) or replace target's content."""
        b = self.connection
        src = ChunkSource(package, f, hashlib.md5)
        service = self.client.service()
        props = {KEY: package.idempotency_key, FILE_KEY: file_key(f)}
        resumable = f.size > b.multipart_max
        try:
            media = _Media(src, f.media_type or "application/octet-stream", b.chunk_size, resumable)
            files = service.files()
            if target is None:
                request = files.create(body={"name": f.name, "parents": [parent], "appProperties": props,
                                             "mimeType": f.media_type}, media_body=media, fields=FIELDS, supportsAllDrives=True)
            else:
                request = files.update(fileId=target["id"], body={"appProperties": props}, media_body=media, fields=FIELDS,
                                       supportsAllDrives=True)
            if not resumable:
                try:  # never repeated by the library: a repeat after a lost answer would make a second file
                    item = request.execute(num_retries=0)
                except Exception as exc:  # noqa: BLE001 - classified; put() looks for the key before trying again
                    raise self.client.error(exc, what) from None
            else:
                item, cuts = None, 0
                while item is None:
                    try:
                        _, item = request.next_chunk(num_retries=b.retries)
                    except HttpError as exc:
                        if exc.resp.status == 404:
                            raise _Restart() from None
                        raise self.client.error(exc, what) from None
                    except TRANSPORT_ERRORS as exc:
                        cuts += 1  # the library asks the session where it stands on the next call
                        if cuts > MAX_CUTS:
                            raise self.client.error(exc, what) from None
            ours = src.hashers[0].hexdigest()
        finally:
            src.close()
        if str(item.get("size")) != str(f.size) or item.get("md5Checksum") != ours:
            raise TransientDeliveryError(f"{what}: {f.name} corrupted on transfer to {self.label}: sent {f.size} bytes "
                                         f"md5 {ours[:12]}, Drive holds {item.get('size')} bytes md5 {str(item.get('md5Checksum'))[:12]}")
        return item

    def put(self, package: Package, folder: str, f: PackageFile) -> tuple[str, bool]:
        what = f"document {package.doc_id}: {f.name}"
        parent = self.folder_id(folder, what=what)
        md5 = None
        for start in range(STARTS):
            mine, others = self._existing(parent, package, f, what)  # before the first upload and before any retry
            if mine or others:
                md5 = md5 or md5_of(f)
            done = next((x for x in mine + others if self._identical(x, f, md5)), None) if (mine or others) else None
            if done is not None:
                return self._ref(done), True  # delivered before: never two files for one document version
            target = (mine or others or [None])[0]
            if target is not None and not mine and self.connection.if_exists == "fail":
                raise PermanentDeliveryError(f"{what}: a file {f.name} with other content is already in {folder or '/'} on "
                                             f"{self.label} (connection policy if_exists=fail)")
            try:
                return self._ref(self._send(package, f, parent, target, what)), False
            except _Restart:
                continue
            except RemoteError as exc:
                if exc.permanent or start == STARTS - 1:
                    raise
                time.sleep(min(8.0, 0.5 * 2 ** start) * (0.5 + random.random()))  # truncated exponential backoff
                continue  # transient: look for the key again, then start again
        raise TransientDeliveryError(f"{what}: the resumable upload to {self.label} was lost {STARTS} times")

    # -- the rest of the interface -------------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            about = self.client.run(self.client.service().about().get(fields="user"), "connection check")
            root = self.root
            parent = self.folder_id(root, create=False, what="connection check")
            if parent is None:
                return self.check_result(False, f"{self.label}: folder {root} does not exist")
            from googleapiclient.http import MediaInMemoryUpload

            media = MediaInMemoryUpload(b"docroute connection test\n", mimetype="text/plain")
            probe = self.client.run(self.client.service().files().create(
                body={"name": f".docroute-probe-{uuid.uuid4().hex[:12]}", "parents": [parent]}, media_body=media,
                fields="id", supportsAllDrives=True), "connection check")
            self.client.run(self.client.service().files().delete(fileId=probe["id"], supportsAllDrives=True), "connection check")
        except RemoteError as exc:
            return self.check_result(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        user = (about.get("user") or {}).get("emailAddress", "?")
        return self.check_result(True, f"{self.label}: connected as {user}, folder {self.root or '/'} is writable")

    def lookup(self, package: Package) -> Delivery | None:
        parent = self.folder_id(self.folder_of(package), create=False, what=f"document {package.doc_id}")
        if parent is None:
            return None
        main = None
        for f in package.files:
            mine, _ = self._existing(parent, package, f, f"document {package.doc_id}")
            md5 = md5_of(f) if mine else None
            item = next((x for x in mine if self._identical(x, f, md5)), None)
            if item is None:
                return None
            main = main or item
        return Delivery(remote_ref=self._ref(main), already_present=True)

    def inventory(self, prefix: str = "", hashes: bool = False):
        if prefix and (prefix.startswith("/") or ".." in prefix.split("/")):
            raise PermanentDeliveryError(f"{self.label}: prefix {prefix!r} escapes the folder")
        root = self.root
        start = f"{root}/{prefix}".rstrip("/") if prefix else root
        top = self.folder_id(start, create=False, what="inventory")
        if top is None:
            return []
        found: list[RemoteFile] = []
        pending = [(top, start)]
        while pending:
            fid, path = pending.pop()
            for child in self.client.list(f"'{q_string(fid)}' in parents and trashed = false", "inventory"):
                child_path = f"{path}/{child['name']}"
                if child.get("mimeType") == FOLDER:
                    pending.append((child["id"], child_path))
                else:
                    found.append(RemoteFile(relative(root, child_path), int(child.get("size") or 0), self._ref(child)))
        return sorted(found)
