"""Capture inbox in a Google Drive folder (block `google-drive-inbox`), polled with the changes feed.

The store of tasks/sources/changes.py over Drive v3: files.list of the folder, changes.getStartPageToken
(taken before the listing) and changes.list from the page token (following nextPageToken; the last
page's newStartPageToken is the next cursor; a token Drive rejects, 400/404/410, means a full
listing), downloads with files.get alt=media in chunks (MediaIoBaseDownload), and archive after
transfer as files.update addParents=archive/removeParents=inbox. A file's stamp is its md5Checksum
(else its headRevisionId); it is tracked by id.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import BinaryIO

from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload

from tasks.errors import PermanentError, RemoteError
from tasks.gdrive import FIELDS, FOLDER, TRANSPORT_ERRORS, DriveClient, q_string
from tasks.sources.changes import ChangeInboxSource, ChangeStore, CursorExpired, PropertiesView
from tasks.sources.inbox import ARCHIVE, Entry

DOWNLOAD_CHUNK = 4 * 1024 * 1024


def _entry(f: dict) -> Entry:
    when = datetime.fromisoformat(f.get("modifiedTime", "1970-01-01T00:00:00Z").replace("Z", "+00:00")).timestamp()
    return Entry(f["name"], int(f.get("size") or 0), when, f.get("md5Checksum") or f.get("headRevisionId") or "",
                 f["id"], is_file=f.get("mimeType") != FOLDER)


class _Reader:
    """A Drive file's content as a stream, downloaded DOWNLOAD_CHUNK at a time."""

    def __init__(self, request):
        self._buf = io.BytesIO()
        self._dl = MediaIoBaseDownload(self._buf, request, chunksize=DOWNLOAD_CHUNK)
        self._done = False
        self._pending = b""

    def read(self, n: int = -1) -> bytes:
        want = None if n is None or n < 0 else n
        while not self._done and (want is None or len(self._pending) < want):
            try:
                _, self._done = self._dl.next_chunk(num_retries=3)
            except HttpError as exc:
                raise (FileNotFoundError(2, "no longer there") if exc.resp.status == 404 else OSError(5, str(exc))) from None
            except TRANSPORT_ERRORS as exc:
                raise OSError(5, f"download broke: {exc}") from None
            self._pending += self._buf.getvalue()
            self._buf.seek(0)
            self._buf.truncate()
        if want is None:
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:want], self._pending[want:]
        return out

    def close(self) -> None:
        self._pending = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GoogleDriveStore(ChangeStore):
    def __init__(self, block):
        super().__init__()
        self.block = block
        self.label = block.label()
        self._client: DriveClient | None = None
        self._folder_id: str | None = block.folder_id
        self._archive: str | None = None
        self._names: dict[str, str] = {}
        self._props: dict[str, dict] = {}  # name -> the file's `properties` (metadata="properties")

    @property
    def client(self) -> DriveClient:
        if self._client is None:
            self._client = DriveClient(self.block.connection, self.label)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def folder_id(self) -> str:
        if self._folder_id is None:
            parent = self.client.base_folder()
            for part in [p for p in self.block.folder.split("/") if p]:
                parent = self.client.child_folder(parent, part, create=False, what="the inbox folder")
                if parent is None:
                    raise FileNotFoundError(f"{self.label}: folder {self.block.folder} does not exist")
            self._folder_id = parent
        return self._folder_id

    def _keep(self, files: list[dict]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for f in sorted(files, key=lambda f: f.get("modifiedTime", "")):  # of twin names, the newest wins
            out[f["name"]] = _entry(f)
            self._names[f["id"]] = f["name"]
            self._props[f["name"]] = dict(f.get("properties") or {})
        self.cache.update(out)
        return out

    def entries(self) -> dict[str, Entry]:
        try:
            return self._keep(self.client.list(f"'{q_string(self.folder_id)}' in parents and trashed = false", "listing the inbox"))
        except PermanentError as exc:
            if exc.status == 404:
                raise FileNotFoundError(f"{self.label}: folder does not exist") from None
            raise

    def _kwargs(self) -> dict:
        kwargs = {"supportsAllDrives": True}
        if self.block.connection.shared_drive_id:
            kwargs["driveId"] = self.block.connection.shared_drive_id
        return kwargs

    def snapshot(self) -> tuple[dict[str, Entry], str]:
        token = self.client.run(self.client.service().changes().getStartPageToken(**self._kwargs()), "changes")["startPageToken"]
        return self.entries(), token

    def changes(self, cursor: str) -> tuple[set[str], str]:
        names: set[str] = set()
        folder, token = self.folder_id, cursor
        while True:
            try:
                page = self.client.run(self.client.service().changes().list(
                    pageToken=token, pageSize=1000, includeItemsFromAllDrives=True, includeRemoved=True,
                    fields=f"nextPageToken,newStartPageToken,changes(fileId,removed,file({FIELDS}))", **self._kwargs()),
                    "changes of the inbox")
            except PermanentError as exc:
                if exc.status in (400, 404, 410):
                    raise CursorExpired() from None
                raise
            for change in page.get("changes", []):
                f = change.get("file")
                inside = f is not None and not change.get("removed") and not f.get("trashed") and folder in (f.get("parents") or [])
                if inside:
                    names.update(self._keep([f]))
                else:
                    name = self._names.pop(change.get("fileId", ""), None)
                    if name is not None:
                        self.cache.pop(name, None)
                        names.add(name)
            if page.get("newStartPageToken"):
                return names, page["newStartPageToken"]
            token = page["nextPageToken"]

    def lookup(self, name: str) -> Entry | None:
        found = self.client.list(f"'{q_string(self.folder_id)}' in parents and name = '{q_string(name)}' and trashed = false",
                                 f"{name} in the inbox")
        return self._keep(found).get(name) if found else None

    def properties(self, name: str) -> dict | None:
        if name not in self._props and self.lookup(name) is None:
            return None
        return self._props.get(name)

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def open(self, name: str) -> BinaryIO:
        entry = self.entry(name)
        if entry is None:
            raise FileNotFoundError(2, f"{name} is no longer in {self.label}")
        return _Reader(self.client.service().files().get_media(fileId=entry.ident, supportsAllDrives=True))

    def _archive_id(self) -> str:
        if self._archive is None:
            self._archive = self.client.child_folder(self.folder_id, ARCHIVE, create=True, what="archive")
        return self._archive

    def archive(self, names: list[str]) -> None:
        target = self._archive_id()
        for name in names:
            entry = self.lookup(name)
            if entry is None:
                continue  # archived already (or gone): idempotent
            try:
                self.client.run(self.client.service().files().update(
                    fileId=entry.ident, addParents=target, removeParents=self.folder_id, fields="id", supportsAllDrives=True),
                    f"archive of {name}")
            except RemoteError:
                raise
            self.cache.pop(name, None)

    def archived(self, name: str) -> bool:
        archive = self.client.child_folder(self.folder_id, ARCHIVE, create=False)
        if archive is None:
            return False
        return bool(self.client.list(f"'{q_string(archive)}' in parents and name = '{q_string(name)}' and trashed = false"))


class GoogleDriveInboxSource(ChangeInboxSource):
    def __init__(self, block):
        store = GoogleDriveStore(block)
        super().__init__(block, PropertiesView(store) if block.metadata == "properties" else store)
