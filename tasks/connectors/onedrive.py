"""OneDrive / SharePoint connector (Microsoft Graph; msal or tasks/oauth.py for tokens, tasks/http.py for calls).

One file: up to `simple_upload_max` (250 MB at most) one PUT .../root:/<path>:/content with
@microsoft.graph.conflictBehavior=fail, the body streamed with its last bytes held back until the
source is verified (tasks/connectors/cloud.py); larger files an upload session (createUploadSession
with conflictBehavior fail, then fragments of `fragment_size`, a multiple of 320 KiB, one in
memory). The last fragment commits the file, and it is sent only once the source is verified.

A broken connection during a fragment: the session's status (GET uploadUrl) gives
nextExpectedRanges and the upload goes on from there (the fragment again, or the next one when the
lost answer had stored it); a session that is gone after a cut may have committed: the item is
looked up. A name that exists (409 nameAlreadyExists, at the PUT, the session's creation or its
last fragment) is compared by size and hash (sha256Hash where the drive has it, else quickXorHash
computed from the source, else size): identical is already delivered, different follows `if_exists`.
429 and 503 are waited out (Retry-After) by the HTTP layer; simple PUTs and status reads are
repeated by it too (a repeat of a committed PUT is a conflict with identical content).
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

from tasks.connectors.base import (
    CheckResult,
    Delivery,
    Package,
    PackageFile,
    PermanentDeliveryError,
    RemoteFile,
    TransientDeliveryError,
)
from tasks.connectors.cloud import ChunkSource, CloudConnector, HeldBackBody, QuickXorHash, hash_file, relative, send
from tasks.errors import RemoteError, TransientError
from tasks.graph import GraphClient

CONFLICT = "@microsoft.graph.conflictBehavior"
MAX_CUTS = 6


class _Conflict(Exception):
    pass


def _next_offset(status: dict) -> int | None:
    ranges = status.get("nextExpectedRanges") or []
    m = re.match(r"(\d+)-", ranges[0]) if ranges else None
    return int(m.group(1)) if m else None


class OneDriveConnector(CloudConnector):
    scheme = "onedrive"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client: GraphClient | None = None

    @property
    def client(self) -> GraphClient:
        if self._client is None:
            self._client = GraphClient(self.connection, self.label)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @staticmethod
    def _ref(item: dict) -> str:
        return f"onedrive:{item['id']}"

    # -- comparing -----------------------------------------------------------------------------------
    @staticmethod
    def identical(item: dict, f: PackageFile) -> bool:
        if "file" not in item or item.get("size") != f.size:
            return False
        hashes = (item.get("file") or {}).get("hashes") or {}
        if hashes.get("sha256Hash"):
            return hashes["sha256Hash"].lower() == f.sha256
        if hashes.get("quickXorHash"):
            q = QuickXorHash()
            hash_file(f, q)
            return q.b64() == hashes["quickXorHash"]
        return True  # no hash the drive gives: size alone (documented assumption)

    # -- uploads ------------------------------------------------------------------------------------
    def _simple(self, package: Package, f: PackageFile, path: str, behavior: str) -> dict:
        body = HeldBackBody(package, f)
        what = f"document {package.doc_id}: upload of {f.name}"
        try:
            response = send(self.client.http, "PUT", self.client.by_path(path, ":/content"), accept=(409,),
                            params={CONFLICT: behavior}, data=body, headers={"Content-Type": "application/octet-stream"},
                            what=what)  # repeated after a lost answer: a conflict with identical content
        finally:
            body.close()
        if response.status_code == 409:
            response.close()
            raise _Conflict()
        error = self.client.http.status_error(response, what)
        if error is not None:
            raise error
        return response.json()

    def _session(self, package: Package, f: PackageFile, path: str, behavior: str) -> dict:
        what = f"document {package.doc_id}: upload session of {f.name}"
        http = self.client.http
        response = send(http, "POST", self.client.by_path(path, ":/createUploadSession"), accept=(409,),
                        json={"item": {CONFLICT: behavior}}, what=what)
        if response.status_code == 409:
            response.close()
            raise _Conflict()
        error = http.status_error(response, what)
        if error is not None:
            raise error
        url = response.json()["uploadUrl"]
        plain = self.client.plain(url)
        src = ChunkSource(package, f)
        size, step, offset, cuts, done = f.size, self.connection.fragment_size, 0, 0, False
        try:
            while True:
                n = min(step, size - offset)
                data = src.chunk(offset, n)
                try:
                    answer = plain.request("PUT", url, data=data, what=what, idempotent=False, check=False,
                                           headers={"Content-Range": f"bytes {offset}-{offset + n - 1}/{size}"})
                except TransientError as exc:
                    if exc.status is not None:
                        raise
                    cuts += 1  # the connection broke: where does the session stand?
                    if cuts > MAX_CUTS:
                        raise
                    status = plain.request("GET", url, what=what, check=False)
                    if status.status_code == 404:  # gone: the lost answer was the commit, or it expired
                        status.close()
                        item = self.client.item(path, what)
                        if item is not None and self.identical(item, f):
                            done = True
                            return item
                        raise TransientDeliveryError(f"{what}: the upload session expired after a broken connection") from None
                    next_offset = _next_offset(plain.json(status, what))
                    offset = offset if next_offset is None else next_offset
                    continue
                if answer.status_code == 202:
                    next_offset = _next_offset(answer.json())
                    offset = offset + n if next_offset is None else next_offset
                    continue
                if answer.status_code in (200, 201):
                    done = True
                    return answer.json()
                if answer.status_code == 409:
                    answer.close()
                    done = True  # the session is over
                    raise _Conflict()
                if answer.status_code == 416:  # not where the session is: ask it
                    answer.close()
                    next_offset = _next_offset(plain.json(plain.request("GET", url, what=what), what))
                    if next_offset is None:
                        raise TransientDeliveryError(f"{what}: the upload session lost track of its ranges")
                    offset = next_offset
                    continue
                error = plain.status_error(answer, what)
                raise error if error is not None else TransientDeliveryError(f"{what}: unexpected {answer.status_code}")
        finally:
            src.close()
            if not done:
                try:  # nothing half-uploaded is left waiting on the server
                    plain.request("DELETE", url, what=what, check=False).close()
                except RemoteError:
                    pass

    def _upload(self, package: Package, f: PackageFile, path: str, behavior: str) -> dict:
        if f.size <= self.connection.simple_upload_max:
            return self._simple(package, f, path, behavior)
        return self._session(package, f, path, behavior)

    def put(self, package: Package, folder: str, f: PackageFile) -> tuple[str, bool]:
        path = f"{folder}/{f.name}"
        try:
            item = self._upload(package, f, path, "fail")
        except _Conflict:
            existing = self.client.item(path, f"document {package.doc_id}")
            if existing is None:
                raise TransientDeliveryError(f"document {package.doc_id}: {path} on {self.label} conflicted, then was gone") from None
            if self.identical(existing, f):
                return self._ref(existing), True  # delivered before: nothing sent twice
            if "folder" in existing:
                raise PermanentDeliveryError(f"document {package.doc_id}: {path} on {self.label} is a folder") from None
            if self.connection.if_exists == "fail":
                raise PermanentDeliveryError(
                    f"document {package.doc_id}: {path} already exists on {self.label} with other content "
                    f"(connection policy if_exists=fail)") from None
            try:
                item = self._upload(package, f, path, "replace")
            except _Conflict:
                raise TransientDeliveryError(f"document {package.doc_id}: {path} on {self.label} could not be replaced") from None
        if item.get("size") != f.size:
            raise TransientDeliveryError(f"document {package.doc_id}: {f.name} corrupted on transfer to {self.label}: "
                                         f"sent {f.size} bytes, the drive holds {item.get('size')}")
        return self._ref(item), False

    # -- the rest of the interface -------------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            drive = self.client.drive()
            root = self.root
            if root:
                item = self.client.item(root, "connection check")
                if item is None:
                    return self.check_result(False, f"{self.label}: folder {root} does not exist")
                if "folder" not in item:
                    return self.check_result(False, f"{self.label}: {root} is not a folder")
            probe = f"{root}/.docroute-probe-{uuid.uuid4().hex[:12]}"
            response = self.client.http.request("PUT", self.client.by_path(probe, ":/content"), params={CONFLICT: "fail"},
                                                data=b"docroute connection test\n", what="connection check")
            self.client.http.request("DELETE", f"{self.client.drive_path()}/items/{quote(response.json()['id'])}",
                                     what="connection check", idempotent=True)
        except RemoteError as exc:
            return self.check_result(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        owner = ((drive.get("owner") or {}).get("user") or {}).get("displayName", "?")
        return self.check_result(True, f"{self.label}: drive {drive.get('name', '?')} of {owner} reached, folder "
                                       f"{self.root or '/'} is writable")

    def lookup(self, package: Package) -> Delivery | None:
        folder = self.folder_of(package)
        main = None
        for f in package.files:
            item = self.client.item(f"{folder}/{f.name}", f"document {package.doc_id}")
            if item is None or not self.identical(item, f):
                return None
            main = main or item
        return Delivery(remote_ref=self._ref(main), already_present=True)

    def inventory(self, prefix: str = "", hashes: bool = False):
        if prefix and (prefix.startswith("/") or ".." in prefix.split("/")):
            raise PermanentDeliveryError(f"{self.label}: prefix {prefix!r} escapes the folder")
        root = self.root
        start = f"{root}/{prefix}".rstrip("/") if prefix else root
        top = self.client.item(start, "inventory") if start else self.client.json("GET", self.client.by_path(""), what="inventory")
        if top is None:
            return []
        found: list[RemoteFile] = []
        pending = [(top, start)]
        while pending:
            item, path = pending.pop()
            for child in self.client.children(item["id"], "inventory"):
                child_path = f"{path}/{child['name']}"
                if "folder" in child:
                    pending.append((child, child_path))
                else:
                    found.append(RemoteFile(relative(root, child_path), child.get("size", 0), self._ref(child)))
        return sorted(found)
