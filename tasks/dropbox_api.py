"""The Dropbox API v2 client shared by the Dropbox connector and the Dropbox inbox source.

Built on tasks/http.py and tasks/oauth.py rather than the official `dropbox` SDK: the SDK takes an
upload body only as bytes (a 150 MB file would be held in memory) and is pointed at other hosts
only by environment variables read when it is imported; the wire format is the SDK's (RPC calls
with a JSON body on the api host, uploads and downloads with a Dropbox-API-Arg header on the
content host, errors as {error_summary, error} with 409 for route errors).

Team spaces: `Dropbox-API-Select-User` (a team app acting for a member) and
`Dropbox-API-Path-Root` ({".tag": "root", "root": <root namespace id>}) go on every call.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from tasks.errors import PermanentError, RemoteError, TransientError
from tasks.connectors.cloud import send
from tasks.http import HttpClient
from tasks.oauth import BearerAuth, TokenManager


class RouteError(PermanentError):
    """A 409 route error: `summary` like "path/conflict/file/..", `error` the decoded union."""

    def __init__(self, message: str, summary: str, error: dict):
        super().__init__(message, status=409)
        self.summary, self.error = summary, error


class DropboxClient:
    def __init__(self, block, label: str):
        self.block = block
        self.label = label
        self.auth = BearerAuth(TokenManager(block))
        self.http = HttpClient(label, base_url=block.api_url, hosts=[block.content_url], auth=self.auth,
                               secrets=block.secret_values(), ca_bundle=block.ca_bundle, verify=block.verify_tls,
                               timeout=(15, block.request_timeout), pool_size=max(4, 2 * getattr(block, "transfers", 1)))
        self._headers: dict[str, str] | None = None

    def close(self) -> None:
        self.http.close()

    # -- namespaces ----------------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            headers = {}
            if self.block.select_user:
                headers["Dropbox-API-Select-User"] = self.block.select_user
            root = self.block.root_namespace_id
            if root is None and self.block.namespace == "team_space":
                self._headers = headers  # the account call itself goes without a path root
                info = self.account().get("root_info", {})
                root = info.get("root_namespace_id")
                if not root or info.get(".tag") != "team":
                    self._headers = None
                    raise PermanentError(f"{self.label}: namespace team_space, but the account has no team space "
                                         f"(root_info {info.get('.tag', '?')})")
            if root:
                headers["Dropbox-API-Path-Root"] = json.dumps({".tag": "root", "root": root})
            self._headers = headers
        return self._headers

    def account(self) -> dict:
        return self.rpc("users/get_current_account", None, what="connection check")

    # -- calls --------------------------------------------------------------------------------------
    def _answer(self, response: requests.Response, what: str) -> Any:
        if response.status_code == 409:
            try:
                body = response.json()
            except ValueError:
                body = {}
            summary = str(body.get("error_summary", ""))
            response.close()
            raise RouteError(f"{what}: {self.label} answered 409: {summary or 'conflict'}", summary, body.get("error") or {})
        error = self.http.status_error(response, what)
        if error is not None:
            if response.status_code == 429 and error.retry_after is None:
                try:  # Dropbox also puts the wait in the body: {"error": {"retry_after": n}}
                    error.retry_after = float(response.json()["error"]["retry_after"])
                except (ValueError, KeyError, TypeError):
                    pass
            response.close()
            raise error
        return response

    def _post(self, url: str, what: str, idempotent: bool, **kwargs) -> requests.Response:
        """POST, repeated after 429 (Retry-After, or the body's retry_after), 5xx and network errors when
        `idempotent`; a 409 is returned for `_answer` to read."""
        if not idempotent:
            return self.http.request("POST", url, what=what, idempotent=False, check=False, **kwargs)
        try:
            return send(self.http, "POST", url, accept=(409,), what=what, **kwargs)
        except TransientError as exc:
            raise exc from None

    def rpc(self, name: str, body: dict | None, *, what: str = "", idempotent: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else b"null"
        response = self._post(f"/2/{name}", what or name, idempotent, data=data,
                              headers={"Content-Type": "application/json", **self.headers()})
        response = self._answer(response, what or name)
        return response.json() if response.content else None

    def content(self, name: str, arg: dict, data: Any, *, what: str = "", idempotent: bool = False,
                stream: bool = False) -> requests.Response:
        headers = {"Dropbox-API-Arg": json.dumps(arg, ensure_ascii=True), **self.headers()}
        if data is not None:
            headers["Content-Type"] = "application/octet-stream"
        response = self._post(f"{self.block.content_url}/2/{name}", what or name, idempotent, data=data, headers=headers,
                              stream=stream)
        return self._answer(response, what or name)

    def metadata(self, path: str, what: str = "") -> dict | None:
        """A file's or folder's metadata, None when the path is not there."""
        try:
            return self.rpc("files/get_metadata", {"path": path}, what=what)
        except RouteError as exc:
            if "not_found" in exc.summary:
                return None
            raise

    def list_folder(self, path: str, recursive: bool = False) -> tuple[list[dict], str]:
        """Every entry under `path` (following has_more) and the cursor for what comes after."""
        try:
            page = self.rpc("files/list_folder", {"path": path, "recursive": recursive, "include_deleted": False,
                                                  "limit": 2000}, what=f"listing {path or '/'}")
        except RouteError as exc:
            if "not_found" in exc.summary:
                raise FileNotFoundError(f"{self.label}: folder {path or '/'} does not exist") from None
            raise
        entries = list(page["entries"])
        while page.get("has_more"):
            page = self.rpc("files/list_folder/continue", {"cursor": page["cursor"]}, what=f"listing {path or '/'}")
            entries += page["entries"]
        return entries, page["cursor"]


def transient(exc: RemoteError) -> bool:
    return isinstance(exc, TransientError)
