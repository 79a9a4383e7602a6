"""Capture inbox in a OneDrive/SharePoint folder (block `onedrive-inbox`), polled with Graph delta.

The store of tasks/sources/changes.py over Graph: the folder's children (paged), the drive's
root/delta (token=latest for "from now on"; then the deltaLink, followed through nextLinks; 410
resync expires it), items by path, downloads from the pre-authenticated downloadUrl (no token),
and archive after transfer as a move (PATCH parentReference, conflictBehavior=replace) into
`archive/`. Delta items carry no parentReference.path (and on business drives no cTag, nor a name
when deleted), so items are tracked by id and filtered by parentReference.id; a file's stamp is
its quickXorHash (else its eTag).
"""

from __future__ import annotations

from datetime import datetime
from typing import BinaryIO
from urllib.parse import quote

from tasks.connectors.cloud import clean_root
from tasks.errors import RemoteError
from tasks.graph import GraphClient
from tasks.sources.changes import ChangeInboxSource, ChangeStore, CursorExpired, PropertiesView
from tasks.sources.dropbox_inbox import _Download
from tasks.sources.inbox import ARCHIVE, Entry


def _entry(item: dict) -> Entry:
    when = datetime.fromisoformat(item.get("lastModifiedDateTime", "1970-01-01T00:00:00Z").replace("Z", "+00:00")).timestamp()
    hashes = (item.get("file") or {}).get("hashes") or {}
    stamp = hashes.get("quickXorHash") or hashes.get("sha256Hash") or item.get("eTag", "")
    return Entry(item["name"], int(item.get("size", 0)), when, stamp, item["id"], is_file="file" in item)


class OneDriveStore(ChangeStore):
    def __init__(self, block):
        super().__init__()
        self.block = block
        self.label = block.label()
        self.folder = clean_root(block.folder)
        self._client: GraphClient | None = None
        self._folder_id: str | None = None
        self._names: dict[str, str] = {}  # item id -> name, of what this run saw in the folder
        self._urls: dict[str, str] = {}  # name -> downloadUrl

    @property
    def client(self) -> GraphClient:
        if self._client is None:
            self._client = GraphClient(self.block.connection, self.label)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def folder_id(self) -> str:
        if self._folder_id is None:
            item = self.client.item(self.folder, "the inbox folder") if self.folder else self.client.json(
                "GET", self.client.by_path(""), what="the inbox folder")
            if item is None or "folder" not in item:
                raise FileNotFoundError(f"{self.label}: folder {self.folder} does not exist")
            self._folder_id = item["id"]
        return self._folder_id

    def _keep(self, item: dict) -> Entry:
        entry = _entry(item)
        self.cache[entry.name] = entry
        self._names[item["id"]] = entry.name
        if item.get("@microsoft.graph.downloadUrl"):
            self._urls[entry.name] = item["@microsoft.graph.downloadUrl"]
        return entry

    def entries(self) -> dict[str, Entry]:
        return {e.name: e for e in (self._keep(i) for i in self.client.children(self.folder_id, "listing the inbox"))}

    def snapshot(self) -> tuple[dict[str, Entry], str]:
        folder_id = self.folder_id
        latest = self.client.json("GET", f"{self.client.drive_path()}/root/delta", params={"token": "latest"}, what="delta")
        entries = {e.name: e for e in (self._keep(i) for i in self.client.children(folder_id, "listing the inbox"))}
        return entries, latest["@odata.deltaLink"]

    def changes(self, cursor: str) -> tuple[set[str], str]:
        folder_id, names, url = self.folder_id, set(), cursor
        while True:
            response = self.client.http.request("GET", url, what="changes of the inbox", check=False)
            if response.status_code == 410:
                response.close()
                raise CursorExpired()
            error = self.client.http.status_error(response, "changes of the inbox")
            if error is not None:
                raise error
            page = response.json()
            for item in page.get("value", []):
                parent = (item.get("parentReference") or {}).get("id")
                if "deleted" in item or parent != folder_id:
                    name = self._names.pop(item["id"], None)  # gone, or moved out (archived)
                    if name is not None:
                        self.cache.pop(name, None)
                        names.add(name)
                    continue
                if "name" in item:
                    names.add(self._keep(item).name)
            if page.get("@odata.deltaLink"):
                return names, page["@odata.deltaLink"]
            url = page["@odata.nextLink"]

    def lookup(self, name: str) -> Entry | None:
        item = self.client.item(f"{self.folder}/{name}", f"{name} in the inbox")
        return self._keep(item) if item is not None else None

    def properties(self, name: str) -> dict | None:
        """The SharePoint columns of the file's list item (GET .../items/{id}/listItem/fields)."""
        entry = self.entry(name)
        if entry is None:
            return None
        response = self.client.http.request("GET", f"{self.client.drive_path()}/items/{quote(entry.ident)}/listItem/fields",
                                            what=f"columns of {name}", check=False)
        if response.status_code in (400, 404):  # a personal OneDrive: no list item, no columns
            response.close()
            return None
        error = self.client.http.status_error(response, f"columns of {name}")
        if error is not None:
            raise error
        return response.json()

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def open(self, name: str) -> BinaryIO:
        try:
            url = self._urls.get(name)
            if url is None:
                item = self.client.item(f"{self.folder}/{name}", f"download of {name}")
                if item is None or not item.get("@microsoft.graph.downloadUrl"):
                    raise FileNotFoundError(2, f"{name} is no longer in {self.label}")
                url = item["@microsoft.graph.downloadUrl"]
            response = self.client.plain(url).request("GET", url, what=f"download of {name}", stream=True, check=False)
            if response.status_code == 404:
                response.close()
                self._urls.pop(name, None)
                raise FileNotFoundError(2, f"{name} is no longer in {self.label}")
            error = self.client.plain(url).status_error(response, f"download of {name}")
            if error is not None:
                raise error
        except RemoteError as exc:
            raise OSError(5, str(exc)) from None
        return _Download(response)

    def _archive_id(self) -> str:
        http = self.client.http
        response = http.request("POST", f"{self.client.drive_path()}/items/{quote(self.folder_id)}/children",
                                json={"name": ARCHIVE, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"},
                                what="archive", check=False)
        if response.status_code in (200, 201):
            return response.json()["id"]
        response.close()
        item = self.client.item(f"{self.folder}/{ARCHIVE}", "archive")
        if item is None or "folder" not in item:
            raise OSError(5, f"{self.label}: cannot make folder {ARCHIVE}")
        return item["id"]

    def archive(self, names: list[str]) -> None:
        archive_id = self._archive_id()
        for name in names:
            item = self.client.item(f"{self.folder}/{name}", f"archive of {name}")
            if item is None:
                continue  # archived already (or gone): idempotent
            self.client.http.request("PATCH", f"{self.client.drive_path()}/items/{quote(item['id'])}",
                                     params={"@microsoft.graph.conflictBehavior": "replace"},
                                     json={"parentReference": {"id": archive_id}}, what=f"archive of {name}", idempotent=True)
            self.cache.pop(name, None)

    def archived(self, name: str) -> bool:
        return self.client.item(f"{self.folder}/{ARCHIVE}/{name}") is not None


class OneDriveInboxSource(ChangeInboxSource):
    def __init__(self, block):
        store = OneDriveStore(block)
        super().__init__(block, PropertiesView(store) if block.metadata == "properties" else store)
