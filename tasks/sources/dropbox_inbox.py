"""Capture inbox in a Dropbox folder (block `dropbox-inbox`), polled with list_folder cursors.

The store of tasks/sources/changes.py over Dropbox: files/list_folder (its last cursor also yields
future changes), files/list_folder/continue (the changes since a cursor; a `reset` error expires
it), files/get_metadata, files/download (streamed), and archive after transfer as files/move_v2
into `archive/` (an older archived copy is replaced). A file's stamp is its rev.
"""

from __future__ import annotations

from datetime import datetime
from typing import BinaryIO

from tasks.connectors.cloud import clean_root
from tasks.dropbox_api import DropboxClient, RouteError
from tasks.errors import TransientError
from tasks.sources.changes import ChangeInboxSource, ChangeStore, CursorExpired
from tasks.sources.inbox import ARCHIVE, Entry


def _entry(meta: dict) -> Entry:
    if meta.get(".tag") != "file":
        return Entry(meta["name"], 0, 0.0, meta.get("id", ""), meta.get("id", ""), is_file=False)
    when = datetime.fromisoformat(meta["server_modified"].replace("Z", "+00:00")).timestamp()
    return Entry(meta["name"], int(meta.get("size", 0)), when, meta.get("rev", ""), meta.get("id", ""))


class _Download:
    """A download's body as a stream (read in chunks, never whole)."""

    def __init__(self, response):
        self.response = response
        response.raw.decode_content = True

    def read(self, n: int = -1) -> bytes:
        return self.response.raw.read(None if n is None or n < 0 else n)

    def close(self) -> None:
        self.response.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DropboxStore(ChangeStore):
    def __init__(self, block):
        super().__init__()
        self.block = block
        self.label = block.label()
        self.folder = clean_root(block.folder)
        self._client: DropboxClient | None = None

    @property
    def client(self) -> DropboxClient:
        if self._client is None:
            self._client = DropboxClient(self.block.connection, self.label)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _path(self, name: str, *folders: str) -> str:
        return "/".join([self.folder, *folders, name])

    def _direct(self, meta: dict) -> bool:
        return meta.get("path_lower", "").rsplit("/", 1)[0] == self.folder.lower()

    def entries(self) -> dict[str, Entry]:
        return self.snapshot()[0]

    def snapshot(self) -> tuple[dict[str, Entry], str]:
        found, cursor = self.client.list_folder(self.folder)
        entries = {m["name"]: _entry(m) for m in found if self._direct(m)}
        self.cache = dict(entries)
        return entries, cursor

    def changes(self, cursor: str) -> tuple[set[str], str]:
        names: set[str] = set()
        while True:
            try:
                page = self.client.rpc("files/list_folder/continue", {"cursor": cursor}, what="changes of the inbox")
            except RouteError as exc:
                if "reset" in exc.summary:
                    raise CursorExpired() from None
                raise
            for meta in page["entries"]:
                if not self._direct(meta):
                    continue
                name = meta["name"]
                names.add(name)
                if meta.get(".tag") == "deleted":
                    self.cache.pop(name, None)
                else:
                    self.cache[name] = _entry(meta)
            cursor = page["cursor"]
            if not page.get("has_more"):
                return names, cursor

    def lookup(self, name: str) -> Entry | None:
        meta = self.client.metadata(self._path(name), f"{name} in the inbox")
        return _entry(meta) if meta is not None else None

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def open(self, name: str) -> BinaryIO:
        try:
            response = self.client.content("files/download", {"path": self._path(name)}, None, what=f"download of {name}",
                                           idempotent=True, stream=True)
        except RouteError as exc:
            if "not_found" in exc.summary:
                raise FileNotFoundError(2, f"{name} is no longer in {self.label}") from None
            raise OSError(5, str(exc)) from None
        except TransientError as exc:
            raise OSError(5, str(exc)) from None
        return _Download(response)

    def archive(self, names: list[str]) -> None:
        try:
            self.client.rpc("files/create_folder_v2", {"path": self._path(ARCHIVE), "autorename": False}, what="archive")
        except RouteError as exc:
            if "conflict" not in exc.summary:
                raise
        for name in names:
            source, target = self._path(name), self._path(name, ARCHIVE)
            for _ in range(2):
                try:
                    self.client.rpc("files/move_v2", {"from_path": source, "to_path": target, "autorename": False},
                                    what=f"archive of {name}")
                    break
                except RouteError as exc:
                    if exc.summary.startswith("from_lookup/not_found"):
                        break  # archived already (or gone): idempotent
                    if "conflict" not in exc.summary:
                        raise
                    self.client.rpc("files/delete_v2", {"path": target}, what=f"archive of {name}")  # an older copy
            self.cache.pop(name, None)

    def archived(self, name: str) -> bool:
        return self.client.metadata(self._path(name, ARCHIVE)) is not None


class DropboxInboxSource(ChangeInboxSource):
    def __init__(self, block):
        super().__init__(block, DropboxStore(block))
