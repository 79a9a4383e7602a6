"""A local Microsoft Graph (OneDrive / SharePoint drive items) and Entra ID token endpoint
(../shared/reference/connectors.md 10, sources.md 6), one https server.

Entra ID: GET /{tenant}/v2.0/.well-known/openid-configuration (what msal reads for an authority),
POST /{tenant}/oauth2/v2.0/token: client_credentials (client secret; scope
https://graph.microsoft.com/.default; app-only tokens) and refresh_token (delegated tokens; the
refresh token rotates on every use).

Graph v1.0, one business drive (`drive_id`), reachable as /drives/{id}, /sites/{site}/drive,
/sites/{site}/drives/{id}, /users/{user}/drive and, for delegated tokens, /me/drive:
- GET items by id or path (/root:/a/b.pdf:), children (paged), content (302 to the
  pre-authenticated @microsoft.graph.downloadUrl, which takes no token);
- PUT .../root:/path:/content (simple upload, at most 250 MB; @microsoft.graph.conflictBehavior
  fail|replace|rename, default replace; fail on an existing name is 409 nameAlreadyExists); missing
  parent folders are created, as Graph does for path-addressed uploads;
- POST .../root:/path:/createUploadSession {"item": {...conflictBehavior}} -> uploadUrl (takes no
  token); PUT byte ranges (each a multiple of 320 KiB except the last, under 60 MiB, all or nothing,
  starting where nextExpectedRanges says, else 416); GET uploadUrl -> nextExpectedRanges; DELETE
  cancels; the last range commits (409 when the name exists and the session said fail);
- PATCH items/{id} (move/rename; conflictBehavior in the query), DELETE items/{id}, POST
  items/{id}/children (create a folder);
- GET /drives/{id}/root/delta: no token = the whole drive, paged with @odata.nextLink, then an
  @odata.deltaLink; token=latest = an empty page and a deltaLink; a token = every item changed since,
  its latest state once, deleted ones with the `deleted` facet; no parentReference.path, and no cTag
  (as OneDrive for Business). `expire_delta_tokens()` makes every earlier token answer 410 Gone
  resyncChangesApplyDifferences with a Location to a fresh enumeration.
- Items carry file.hashes.quickXorHash only (business drives have no SHA-1/SHA-256).
- GET items/{id}/listItem/fields: the SharePoint columns of a file (`set_fields`), with a few system ones.
Faults (FakeAPI.fault): 429 and 503 with Retry-After, cut connections (`cut_fragment`).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

from tasks.connectors.cloud import QuickXorHash
from tests.fakes.base import FakeAPI, Fault, Request, Response
from tests.fakes.cloud_common import Blobs, QuietStart, bearer, complete, tls

SIMPLE_MAX = 250 * 1024 * 1024
FRAGMENT = 320 * 1024
FRAGMENT_MAX = 60 * 1024 * 1024
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def g_error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    return Response.json({"error": {"code": code, "message": message,
                                    "innerError": {"request-id": secrets.token_hex(8), "date": _now()}}}, status, headers)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def throttle_fault(status: int = 429, retry_after: int = 1, times: int = 1, match: str | None = None) -> Fault:
    body = json.dumps({"error": {"code": "activityLimitReached" if status == 429 else "serviceNotAvailable",
                                 "message": "throttled"}}).encode()
    return Fault(status=status, headers={"Retry-After": str(retry_after), "Content-Type": "application/json"}, body=body,
                 times=times, match=match)


def cut_fragment(times: int = 1) -> Fault:
    """The connection cut while a range is sent to an upload session (the range is not stored)."""
    return Fault(kind="cut", times=times, match=lambda r: r.method == "PUT" and r.path.startswith("/upload/"))


@dataclass
class Item:
    id: str
    name: str
    parent: str | None
    folder: bool = False
    blob: str | None = None
    size: int = 0
    etag: str = ""
    qxh: str = ""
    modified: str = ""
    fields: dict | None = None  # SharePoint columns of the item's list item


class GraphAPI(QuietStart, FakeAPI):
    def __init__(self, *, tenant: str = "contoso-tenant", client_id: str = "graph-client-id", client_secret: str | None = None,
                 expires_in: float = 3600):
        ctx, self.ca_bundle = tls()
        super().__init__(tls=ctx, name="fake Graph")
        self.tenant, self.client_id = tenant, client_id
        self.client_secret = client_secret or secrets.token_urlsafe(18)
        self.expires_in = expires_in
        self.drive_id = "b!" + secrets.token_urlsafe(12)
        self.site_id = "contoso.sharepoint.com,site-1,web-1"
        self.user = "ap@contoso.example"
        self.tokens: dict[str, tuple[float, str]] = {}  # access token -> (expiry, "app" | "delegated")
        self.refresh_tokens: set[str] = set()
        self.blobs = Blobs()
        self.items: dict[str, Item] = {}
        self.root = Item("root-" + secrets.token_hex(4), "root", None, folder=True, etag=self._etag())
        self.items[self.root.id] = self.root
        self.log: list[str] = []  # item ids in change order
        self.epoch = 0
        self.sessions: dict[str, dict] = {}
        self.downloads: dict[str, str] = {}  # download token -> item id
        self.commits = 0
        self.lock = threading.RLock()
        t = re.escape(tenant)
        self.route("GET", f"/{t}/v2.0/.well-known/openid-configuration")(self._oidc)
        self.route("POST", f"/{t}/oauth2/v2.0/token")(self._token)
        drive = r"/v1\.0/(?:drives/(?P<d>[^/]+)|sites/(?P<site>[^/]+)/drives/(?P<sd>[^/]+)|sites/(?P<s>[^/]+)/drive|users/(?P<u>[^/]+)/drive|me/drive)"
        self.route("GET", drive)(self._auth(self._drive))
        for method in ("GET", "PUT", "POST"):
            self.route(method, drive + r"/root:(?P<rest>.*)")(self._auth(self._by_path))
        self.route("GET", drive + r"/root")(self._auth(lambda req, **kw: Response.json(self._meta(self.root))))
        self.route("GET", drive + r"/root/children")(self._auth(lambda req, **kw: self._children(req, self.root)))
        self.route("GET", drive + r"/root/delta")(self._auth(self._delta))
        self.route("GET", drive + r"/items/(?P<item>[^/:]+)")(self._auth(self._get_item))
        self.route("PATCH", drive + r"/items/(?P<item>[^/:]+)")(self._auth(self._patch))
        self.route("DELETE", drive + r"/items/(?P<item>[^/:]+)")(self._auth(self._delete))
        self.route("GET", drive + r"/items/(?P<item>[^/:]+)/children")(self._auth(self._item_children))
        self.route("POST", drive + r"/items/(?P<item>[^/:]+)/children")(self._auth(self._mkdir))
        self.route("GET", drive + r"/items/(?P<item>[^/:]+)/content")(self._auth(self._content))
        self.route("GET", drive + r"/items/(?P<item>[^/:]+)/listItem/fields")(self._auth(self._fields))
        for method in ("PUT", "GET", "DELETE"):
            self.route(method, r"/upload/(?P<sid>[^/]+)")(self._session)
        self.route("GET", r"/download/(?P<token>[^/]+)")(self._download)

    # -- test helpers -------------------------------------------------------------------------------
    def issue_delegated(self) -> tuple[str, str]:
        """(access token, refresh token) of a delegated sign-in, as after `docroute connect`."""
        with self.lock:
            access, refresh = "eyJ0.d." + secrets.token_urlsafe(20), "M.R3_" + secrets.token_urlsafe(20)
            self.tokens[access] = (time.time() + self.expires_in, "delegated")
            self.refresh_tokens.add(refresh)
            return access, refresh

    def put_file(self, path: str, data: bytes) -> dict:
        with self.lock:
            return self._meta(self._commit(path, data, "replace"))

    def mkdir(self, path: str) -> Item:
        with self.lock:
            return self._mkdirs([p for p in path.split("/") if p])

    def item_at(self, path: str) -> Item | None:
        with self.lock:
            item = self.root
            for part in [p for p in path.split("/") if p]:
                item = self._child(item, part)
                if item is None:
                    return None
            return item

    def file(self, path: str) -> bytes | None:
        item = self.item_at(path)
        return self.blobs.get(item.blob) if item is not None and not item.folder else None

    def remove(self, path: str) -> None:
        with self.lock:
            item = self.item_at(path)
            if item is not None:
                self._drop(item)

    def files_under(self, path: str) -> list[str]:
        start = self.item_at(path)
        out: list[str] = []

        def walk(item: Item, prefix: str) -> None:
            for child in sorted((i for i in self.items.values() if i.parent == item.id), key=lambda i: i.name):
                if child.folder:
                    walk(child, f"{prefix}/{child.name}")
                else:
                    out.append(f"{prefix}/{child.name}")
        if start is not None:
            walk(start, path.rstrip("/"))
        return out

    def set_fields(self, path: str, fields: dict) -> None:
        """Set SharePoint columns on a file's list item (its eTag changes: it shows in delta)."""
        with self.lock:
            item = self.item_at(path)
            item.fields = {**(item.fields or {}), **fields}
            item.etag = self._etag()
            self._changed(item)

    def expire_delta_tokens(self) -> None:
        with self.lock:
            self.epoch += 1

    # -- plumbing -----------------------------------------------------------------------------------
    @staticmethod
    def _etag() -> str:
        return f'"{{{secrets.token_hex(8).upper()}}},{secrets.randbelow(100)}"'

    def _oidc(self, req: Request) -> Response:
        base = f"{self.url}/{self.tenant}"
        return Response.json({"token_endpoint": f"{base}/oauth2/v2.0/token", "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                              "issuer": f"{base}/v2.0", "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                              "end_session_endpoint": f"{base}/oauth2/v2.0/logout"})

    def _token(self, req: Request) -> Response:
        form = req.form()
        header = req.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            cid, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        if cid != self.client_id or not secrets.compare_digest(secret, self.client_secret):
            return Response.json({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.",
                                  "error_codes": [7000215]}, 401)
        grant = form.get("grant_type")
        with self.lock:
            if grant == "client_credentials":
                if GRAPH_SCOPE not in form.get("scope", "").split():
                    return Response.json({"error": "invalid_scope", "error_description": "AADSTS1002012: scope must be .default"}, 400)
                kind, refresh = "app", None
            elif grant == "refresh_token":
                if form.get("refresh_token") not in self.refresh_tokens:
                    return Response.json({"error": "invalid_grant", "error_description": "AADSTS70000: refresh token expired or revoked"}, 400)
                self.refresh_tokens.discard(form["refresh_token"])  # rotates
                kind, refresh = "delegated", "M.R3_" + secrets.token_urlsafe(20)
                self.refresh_tokens.add(refresh)
            else:
                return Response.json({"error": "unsupported_grant_type", "error_description": grant or ""}, 400)
            access = "eyJ0." + secrets.token_urlsafe(24)
            self.tokens[access] = (time.time() + self.expires_in, kind)
        out = {"token_type": "Bearer", "expires_in": int(self.expires_in), "ext_expires_in": int(self.expires_in), "access_token": access}
        if refresh:
            out["refresh_token"] = refresh
            out["scope"] = "Files.ReadWrite.All offline_access"
        return Response.json(out)

    def _auth(self, fn):
        def handler(req: Request, d=None, sd=None, site=None, s=None, u=None, **kw) -> Response:
            expiry, kind = self.tokens.get(bearer(req), (0, ""))
            if expiry < time.time():
                return g_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
            drive = d or sd
            if drive is not None and drive != self.drive_id:
                return g_error(404, "itemNotFound", "The drive was not found")
            if (site or s) is not None and (site or s) != self.site_id:
                return g_error(404, "itemNotFound", "The site was not found")
            if u is not None and unquote(u) != self.user:
                return g_error(404, "itemNotFound", "The user was not found")
            if d is None and sd is None and s is None and site is None and u is None and kind == "app":
                return g_error(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            with self.lock:
                return fn(req, **kw)
        return handler

    def _path(self, item: Item) -> str:
        parts = []
        while item.parent is not None:
            parts.append(item.name)
            item = self.items[item.parent]
        return "/" + "/".join(reversed(parts))

    def _meta(self, item: Item, delta: bool = False) -> dict:
        out = {"id": item.id, "name": item.name, "eTag": item.etag, "lastModifiedDateTime": item.modified or _now(),
               "createdDateTime": item.modified or _now(), "size": item.size}
        if item.parent is not None:
            ref = {"driveId": self.drive_id, "driveType": "business", "id": item.parent}
            if not delta:
                parent_path = self._path(self.items[item.parent])
                ref["path"] = f"/drive/root:{parent_path if parent_path != '/' else ''}"
            out["parentReference"] = ref
        else:
            out["root"] = {}
        if item.folder:
            out["folder"] = {"childCount": sum(1 for i in self.items.values() if i.parent == item.id)}
        else:
            token = secrets.token_urlsafe(12)
            self.downloads[token] = item.id
            out["file"] = {"mimeType": "application/octet-stream", "hashes": {"quickXorHash": item.qxh}}
            out["@microsoft.graph.downloadUrl"] = f"{self.url}/download/{token}"
        return out

    def _child(self, parent: Item, name: str) -> Item | None:
        return next((i for i in self.items.values() if i.parent == parent.id and i.name.lower() == name.lower()), None)

    def _changed(self, item: Item) -> None:
        self.log.append(item.id)
        if item.parent is not None:  # a folder's eTag changes with its children
            self.log.append(item.parent)

    def _mkdirs(self, parts: list[str]) -> Item:
        item = self.root
        for part in parts:
            child = self._child(item, part)
            if child is None:
                child = Item(secrets.token_hex(8).upper(), part, item.id, folder=True, etag=self._etag(), modified=_now())
                self.items[child.id] = child
                self._changed(child)
            elif not child.folder:
                raise ValueError(f"{part} is a file")
            item = child
        return item

    def _commit(self, path: str, data: bytes, behavior: str) -> Item | Response:
        parts = [p for p in path.split("/") if p]
        try:
            parent = self._mkdirs(parts[:-1])
        except ValueError as exc:
            return g_error(409, "nameAlreadyExists", str(exc))
        existing = self._child(parent, parts[-1])
        name = parts[-1]
        if existing is not None:
            if behavior == "fail" or existing.folder:
                return g_error(409, "nameAlreadyExists", "The specified item name already exists.")
            if behavior == "rename":
                stem, dot, ext = name.rpartition(".")
                n = 1
                while self._child(parent, f"{stem or name} {n}{dot}{ext if stem else ''}"):
                    n += 1
                name, existing = f"{stem or name} {n}{dot}{ext if stem else ''}", None
        q = QuickXorHash()
        q.update(data)
        item = existing or Item(secrets.token_hex(8).upper(), name, parent.id)
        if item.blob:
            self.blobs.drop(item.blob)
        item.blob, item.size, item.qxh, item.etag, item.modified = self.blobs.put(data), len(data), q.b64(), self._etag(), _now()
        self.items[item.id] = item
        self._changed(item)
        self.commits += 1
        return item

    def _drop(self, item: Item) -> None:
        for child in [i for i in self.items.values() if i.parent == item.id]:
            self._drop(child)
        del self.items[item.id]
        self.log.append(item.id)
        if item.blob:
            self.blobs.drop(item.blob)
        self.deleted = getattr(self, "deleted", {})
        self.deleted[item.id] = item

    # -- routes -------------------------------------------------------------------------------------
    def _drive(self, req: Request) -> Response:
        return Response.json({"id": self.drive_id, "driveType": "business", "name": "Documents",
                              "owner": {"user": {"displayName": "Accounts Payable", "email": self.user}},
                              "quota": {"total": 1 << 40, "used": sum(i.size for i in self.items.values()), "state": "normal"}})

    def _by_path(self, req: Request, rest: str) -> Response:
        m = re.match(r"^(?P<path>/.*?):?(?P<action>/content|/createUploadSession|/children)?$", rest)
        if not m:
            return g_error(400, "invalidRequest", "bad path")
        path = unquote(m.group("path")).rstrip(":")
        action = m.group("action")
        behavior = req.arg("@microsoft.graph.conflictBehavior", "replace")
        if action == "/content" and req.method == "PUT":
            if not complete(req):
                return g_error(400, "invalidRequest", "incomplete body")
            if len(req.body) > SIMPLE_MAX:
                return g_error(413, "requestTooLarge", "simple upload is limited to 250 MB")
            result = self._commit(path, req.body, behavior)
            return result if isinstance(result, Response) else Response.json(self._meta(result), 201)
        if action == "/createUploadSession" and req.method == "POST":
            spec = (req.json() or {}).get("item", {})
            behavior = spec.get("@microsoft.graph.conflictBehavior", "replace")
            parts = [p for p in path.split("/") if p]
            existing = self.item_at(path)
            if existing is not None and behavior == "fail":
                return g_error(409, "nameAlreadyExists", "The specified item name already exists.")
            sid = secrets.token_urlsafe(16)
            expires = datetime.now(timezone.utc) + timedelta(minutes=15)
            self.sessions[sid] = {"path": "/".join(parts), "behavior": behavior, "blob": None, "received": 0,
                                  "expires": expires}
            return Response.json({"uploadUrl": f"{self.url}/upload/{sid}", "expirationDateTime": expires.isoformat(),
                                  "nextExpectedRanges": ["0-"]})
        item = self.item_at(path)
        if item is None:
            return g_error(404, "itemNotFound", "The resource could not be found.")
        if action == "/children":
            return self._children(req, item)
        if action is None and req.method == "GET":
            return Response.json(self._meta(item))
        return g_error(405, "invalidRequest", "method not allowed")

    def _children(self, req: Request, item: Item) -> Response:
        if not item.folder:
            return g_error(400, "invalidRequest", "not a folder")
        kids = sorted((i for i in self.items.values() if i.parent == item.id), key=lambda i: i.name)
        top = int(req.arg("$top", "200"))
        skip = int(req.arg("$skiptoken", "0"))
        out = {"value": [self._meta(i) for i in kids[skip : skip + top]]}
        if skip + top < len(kids):
            out["@odata.nextLink"] = f"{self.url}{req.path}?$top={top}&$skiptoken={skip + top}"
        return Response.json(out)

    def _get_item(self, req: Request, item: str) -> Response:
        found = self.items.get(item)
        return Response.json(self._meta(found)) if found else g_error(404, "itemNotFound", "The resource could not be found.")

    def _item_children(self, req: Request, item: str) -> Response:
        found = self.items.get(item)
        return self._children(req, found) if found else g_error(404, "itemNotFound", "The resource could not be found.")

    def _mkdir(self, req: Request, item: str) -> Response:
        parent = self.items.get(item)
        if parent is None:
            return g_error(404, "itemNotFound", "The resource could not be found.")
        body = req.json() or {}
        existing = self._child(parent, body["name"])
        if existing is not None:
            if body.get("@microsoft.graph.conflictBehavior", "fail") == "fail":
                return g_error(409, "nameAlreadyExists", "The specified item name already exists.")
            return Response.json(self._meta(existing), 201)
        child = Item(secrets.token_hex(8).upper(), body["name"], parent.id, folder=True, etag=self._etag(), modified=_now())
        self.items[child.id] = child
        self._changed(child)
        return Response.json(self._meta(child), 201)

    def _patch(self, req: Request, item: str) -> Response:
        found = self.items.get(item)
        if found is None:
            return g_error(404, "itemNotFound", "The resource could not be found.")
        body = req.json() or {}
        parent = self.items.get((body.get("parentReference") or {}).get("id", found.parent))
        if parent is None or not parent.folder:
            return g_error(400, "invalidRequest", "parent not found")
        name = body.get("name", found.name)
        clash = self._child(parent, name)
        if clash is not None and clash.id != found.id:
            if req.arg("@microsoft.graph.conflictBehavior", "fail") != "replace":
                return g_error(409, "nameAlreadyExists", "The specified item name already exists.")
            self._drop(clash)
        old_parent = found.parent
        found.parent, found.name, found.etag = parent.id, name, self._etag()
        self._changed(found)
        if old_parent:
            self.log.append(old_parent)
        return Response.json(self._meta(found))

    def _delete(self, req: Request, item: str) -> Response:
        found = self.items.get(item)
        if found is None:
            return g_error(404, "itemNotFound", "The resource could not be found.")
        self._drop(found)
        return Response(204)

    def _content(self, req: Request, item: str) -> Response:
        found = self.items.get(item)
        if found is None or found.folder:
            return g_error(404, "itemNotFound", "The resource could not be found.")
        return Response(302, {"Location": self._meta(found)["@microsoft.graph.downloadUrl"]})

    def _fields(self, req: Request, item: str) -> Response:
        found = self.items.get(item)
        if found is None or found.folder:
            return g_error(404, "itemNotFound", "The resource could not be found.")
        system = {"FileLeafRef": found.name, "Modified": found.modified, "ContentType": "Document", "id": "7"}
        return Response.json({"@odata.etag": found.etag, **system, **(found.fields or {})})

    def _download(self, req: Request, token: str) -> Response:
        with self.lock:
            item = self.items.get(self.downloads.get(token, ""))
            if item is None:
                return g_error(404, "itemNotFound", "gone")
            return Response(200, {"Content-Type": "application/octet-stream"}, self.blobs.get(item.blob))

    def _delta(self, req: Request) -> Response:
        token = req.arg("token")
        skip = int(req.arg("$skiptoken", "0"))
        if token == "latest":
            return Response.json({"value": [], "@odata.deltaLink": self._delta_link(len(self.log))})
        if token is None:  # the whole drive, as it is now
            items = [self.items[i] for i in sorted(self.items, key=lambda i: (i != self.root.id, i))]
            values = [self._meta(i, delta=True) for i in items]
            pos = len(self.log)
            if req.arg("pos") is not None:
                pos = int(req.arg("pos"))
        else:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
            except ValueError:
                return g_error(400, "invalidRequest", "bad token")
            if state["epoch"] != self.epoch:
                return g_error(410, "resyncChangesApplyDifferences",
                               "Resync required. Replace any local items with the server's version (including deletes) "
                               "if you're sure that the service was up to date with your local changes when you last sync'd.",
                               {"Location": f"{self.url}/v1.0/drives/{self.drive_id}/root/delta"})
            latest: dict[str, None] = {}
            for item_id in self.log[state["pos"]:]:
                latest.pop(item_id, None)
                latest[item_id] = None
            values = []
            for item_id in latest:
                if item_id in self.items:
                    values.append(self._meta(self.items[item_id], delta=True))
                else:
                    gone = getattr(self, "deleted", {}).get(item_id)
                    values.append({"id": item_id, "deleted": {"state": "deleted"},
                                   "parentReference": {"driveId": self.drive_id, "id": gone.parent if gone else None}})
            pos = len(self.log)
        page = 100
        out = {"value": values[skip : skip + page]}
        if skip + page < len(values):
            query = f"token={token}&" if token else f"pos={pos}&"
            out["@odata.nextLink"] = f"{self.url}/v1.0/drives/{self.drive_id}/root/delta?{query}$skiptoken={skip + page}"
        else:
            out["@odata.deltaLink"] = self._delta_link(pos)
        return Response.json(out)

    def _delta_link(self, pos: int) -> str:
        token = base64.urlsafe_b64encode(json.dumps({"pos": pos, "epoch": self.epoch}).encode()).decode()
        return f"{self.url}/v1.0/drives/{self.drive_id}/root/delta?token={token}"

    def _session(self, req: Request, sid: str) -> Response:
        if req.headers.get("authorization"):
            return g_error(401, "unauthenticated", "uploadUrl takes no Authorization header")
        with self.lock:
            session = self.sessions.get(sid)
            if session is None:
                return g_error(404, "itemNotFound", "The upload session was not found or has expired.")
            if req.method == "DELETE":
                del self.sessions[sid]
                if session["blob"]:
                    self.blobs.drop(session["blob"])
                return Response(204)
            status = {"expirationDateTime": session["expires"].isoformat(), "nextExpectedRanges": [f"{session['received']}-"]}
            if req.method == "GET":
                return Response.json(status)
            m = re.match(r"bytes (\d+)-(\d+)/(\d+)", req.headers.get("content-range", ""))
            if not m or not complete(req):
                return g_error(400, "invalidRequest", "bad Content-Range or incomplete body")
            start, end, total = map(int, m.groups())
            if start != session["received"] or end - start + 1 != len(req.body):
                return g_error(416, "invalidRange", f"expected a range starting at {session['received']}")
            last = end + 1 == total
            if len(req.body) > FRAGMENT_MAX or (not last and len(req.body) % FRAGMENT):
                return g_error(400, "invalidRange", "fragments must be multiples of 320 KiB and under 60 MiB")
            session["blob"] = self.blobs.append(session["blob"], req.body)
            session["received"] = end + 1
            session["expires"] = datetime.now(timezone.utc) + timedelta(minutes=15)
            if not last:
                return Response.json({"expirationDateTime": session["expires"].isoformat(),
                                      "nextExpectedRanges": [f"{end + 1}-"]}, 202)
            data = self.blobs.get(session["blob"])
            self.blobs.drop(session["blob"])
            del self.sessions[sid]
            result = self._commit(session["path"], data, session["behavior"])
            return result if isinstance(result, Response) else Response.json(self._meta(result), 201)
