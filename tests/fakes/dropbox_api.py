"""A local Dropbox API v2 (../shared/reference/connectors.md 9, sources.md 6): one https server for
the api and content hosts, and the token endpoint.

- POST /oauth2/token: refresh_token grant (app key and secret by HTTP basic or form); no rotation
  (Dropbox keeps the refresh token). Access tokens expire after `expires_in`.
- RPC (api host, JSON body): users/get_current_account, files/get_metadata, files/list_folder,
  files/list_folder/continue, files/list_folder/get_latest_cursor, files/create_folder_v2,
  files/delete_v2, files/move_v2.
- Content (Dropbox-API-Arg header, octet-stream body): files/upload (at most 150 MB; mode add,
  overwrite or {update: rev}; autorename false: a name conflict is 409 path/conflict/file; identical
  content is no conflict unless strict_conflict, as the SDK documents),
  files/upload_session/start, append_v2, finish (offsets checked: 409 incorrect_offset with
  correct_offset), files/download (metadata in Dropbox-API-Result).
- Teams: a team token must name the member in Dropbox-API-Select-User (else 400); each member has
  a home namespace, the team one a team space; Dropbox-API-Path-Root {".tag": "root", "root": id}
  makes paths relative to that namespace (a namespace the member cannot reach is 422).
- Cursors hold (namespace, folder, position, epoch); `reset_cursors()` expires every cursor
  issued so far: list_folder/continue answers 409 reset. Parents are created by an upload.
- Faults (FakeAPI.fault): 429 too_many_write_operations with Retry-After (`rate_limit_fault`),
  cut connections. A body shorter than its Content-Length creates nothing.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tasks.connectors.cloud import DropboxContentHasher
from tests.fakes.base import FakeAPI, Fault, Request, Response
from tests.fakes.cloud_common import Blobs, QuietStart, bearer, complete, tls

MAX_UPLOAD = 150 * 1024 * 1024


def content_hash(data: bytes) -> str:
    h = DropboxContentHasher()
    h.update(data)
    return h.hexdigest()


def error(status: int, summary: str, err: dict, headers: dict | None = None) -> Response:
    return Response.json({"error_summary": summary + "/..", "error": err}, status, headers)


def rate_limit_fault(retry_after: int = 1, times: int = 1, match: str | None = r"/2/files/upload") -> Fault:
    """A 429 too_many_write_operations, as Dropbox answers concurrent writes to one namespace."""
    body = json.dumps({"error_summary": "too_many_write_operations/..",
                       "error": {"reason": {".tag": "too_many_write_operations"}, "retry_after": retry_after}}).encode()
    return Fault(status=429, headers={"Retry-After": str(retry_after), "Content-Type": "application/json"}, body=body,
                 times=times, match=match)


@dataclass
class Item:
    id: str
    path_display: str
    folder: bool = False
    blob: str | None = None
    size: int = 0
    rev: str = ""
    content_hash: str = ""
    modified: str = ""

    def meta(self) -> dict:
        name = self.path_display.rsplit("/", 1)[-1]
        if self.folder:
            return {".tag": "folder", "name": name, "id": self.id, "path_lower": self.path_display.lower(),
                    "path_display": self.path_display}
        return {".tag": "file", "name": name, "id": self.id, "path_lower": self.path_display.lower(),
                "path_display": self.path_display, "rev": self.rev, "size": self.size, "content_hash": self.content_hash,
                "server_modified": self.modified, "client_modified": self.modified, "is_downloadable": True}


@dataclass
class Namespace:
    id: str
    items: dict[str, Item] = field(default_factory=dict)  # path_lower -> item
    log: list[tuple[str, dict]] = field(default_factory=list)  # (path_lower, entry as listed) in change order


class DropboxAPI(QuietStart, FakeAPI):
    def __init__(self, *, app_key: str = "dbx-app-key", app_secret: str | None = None, team: bool = False,
                 expires_in: float = 14400):
        ctx, self.ca_bundle = tls()
        super().__init__(tls=ctx, name="fake Dropbox")
        self.app_key, self.app_secret = app_key, app_secret or secrets.token_urlsafe(18)
        self.refresh_token = "dbx-refresh-" + secrets.token_urlsafe(18)
        self.expires_in = expires_in
        self.team = team
        self.tokens: dict[str, float] = {}
        self.blobs = Blobs()
        self.home = Namespace("1001")
        self.team_space = Namespace("2002")
        self.namespaces = {n.id: n for n in (self.home, self.team_space)}
        self.members = {"dbmid:member-1": self.home.id}
        self.sessions: dict[str, dict] = {}
        self.epoch = 0
        self.uploads = 0  # files committed (upload or finish)
        self.selected: list[str] = []  # Dropbox-API-Select-User values seen
        self._seq = 0
        self.lock = threading.RLock()
        self.route("POST", "/oauth2/token")(self._token)
        rpc = {
            "users/get_current_account": self._account, "files/get_metadata": self._get_metadata,
            "files/list_folder": self._list_folder, "files/list_folder/continue": self._continue,
            "files/list_folder/get_latest_cursor": self._latest_cursor, "files/create_folder_v2": self._create_folder,
            "files/delete_v2": self._delete, "files/move_v2": self._move,
        }
        content = {
            "files/upload": self._upload, "files/upload_session/start": self._session_start,
            "files/upload_session/append_v2": self._session_append, "files/upload_session/finish": self._session_finish,
            "files/download": self._download,
        }
        for name, fn in rpc.items():
            self.route("POST", f"/2/{name}")(self._rpc(fn))
        for name, fn in content.items():
            self.route("POST", f"/2/{name}")(self._content(fn))

    # -- test helpers -------------------------------------------------------------------------------
    def put_file(self, path: str, data: bytes, ns: Namespace | None = None) -> dict:
        with self.lock:
            return self._commit(ns or self.home, path, data, {".tag": "overwrite"})[1]

    def mkdir(self, path: str, ns: Namespace | None = None) -> None:
        with self.lock:
            self._mkdirs(ns or self.home, path)

    def remove(self, path: str, ns: Namespace | None = None) -> None:
        with self.lock:
            ns = ns or self.home
            item = ns.items.pop(path.lower(), None)
            if item is not None:
                self._log(ns, item, deleted=True)

    def file(self, path: str, ns: Namespace | None = None) -> bytes | None:
        item = (ns or self.home).items.get(path.lower())
        return self.blobs.get(item.blob) if item is not None and not item.folder else None

    def files_under(self, folder: str, ns: Namespace | None = None) -> list[str]:
        prefix = folder.lower().rstrip("/") + "/"
        return sorted(i.path_display for p, i in (ns or self.home).items.items() if p.startswith(prefix) and not i.folder)

    def reset_cursors(self) -> None:
        """Every cursor issued so far is invalid from now on (list_folder/continue: 409 reset)."""
        with self.lock:
            self.epoch += 1

    # -- plumbing -----------------------------------------------------------------------------------
    def _now(self) -> str:
        return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _auth(self, req: Request) -> Namespace | Response:
        token = bearer(req)
        if self.tokens.get(token, 0) < time.time():
            return error(401, "expired_access_token" if token in self.tokens else "invalid_access_token",
                         {".tag": "expired_access_token" if token in self.tokens else "invalid_access_token"})
        ns = self.home
        if self.team:
            member = req.headers.get("dropbox-api-select-user")
            if member is None:
                return Response.text('Error in call to API function: This API function operates on a single Dropbox account, '
                                     'but the OAuth 2 access token you provided is for an entire Dropbox Business team. '
                                     'Provide the "Dropbox-API-Select-User" HTTP header', 400)
            if member not in self.members:
                return Response.text(f"Error in call to API function: invalid Dropbox-API-Select-User {member!r}", 400)
            self.selected.append(member)
            ns = self.namespaces[self.members[member]]
        root = req.headers.get("dropbox-api-path-root")
        if root:
            spec = json.loads(root)
            wanted = spec.get("root") or spec.get("namespace_id")
            if wanted not in self.namespaces or (wanted == self.team_space.id and not self.team):
                return Response.json({"error_summary": "no_permission/..", "error": {".tag": "no_permission"}}, 422)
            ns = self.namespaces[wanted]
        return ns

    def _rpc(self, fn):
        def handler(req: Request) -> Response:
            ns = self._auth(req)
            if isinstance(ns, Response):
                return ns
            with self.lock:
                return fn(ns, req.json() or {})
        return handler

    def _content(self, fn):
        def handler(req: Request) -> Response:
            ns = self._auth(req)
            if isinstance(ns, Response):
                return ns
            if not complete(req):
                return Response.text("incomplete body", 400)
            arg = json.loads(req.headers.get("dropbox-api-arg") or "{}")
            with self.lock:
                return fn(ns, arg, req.body)
        return handler

    def _token(self, req: Request) -> Response:
        form = req.form()
        header = req.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            key, secret = form.get("client_id", ""), form.get("client_secret", "")
        if (key, secret) != (self.app_key, self.app_secret):
            return Response.json({"error": "invalid_client", "error_description": "Invalid client_id or client_secret"}, 400)
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != self.refresh_token:
            return Response.json({"error": "invalid_grant", "error_description": "refresh token is invalid or revoked"}, 400)
        token = "sl." + secrets.token_urlsafe(24)
        self.tokens[token] = time.time() + self.expires_in
        return Response.json({"access_token": token, "token_type": "bearer", "expires_in": int(self.expires_in)})

    def _log(self, ns: Namespace, item: Item, deleted: bool = False) -> None:
        entry = {".tag": "deleted", "name": item.path_display.rsplit("/", 1)[-1], "path_lower": item.path_display.lower(),
                 "path_display": item.path_display} if deleted else item.meta()
        ns.log.append((item.path_display.lower(), entry))

    @staticmethod
    def _norm(path: str) -> str:
        return "/" + "/".join(p for p in path.split("/") if p) if path not in ("", "/") else ""

    def _lookup(self, ns: Namespace, path: str) -> Item | None:
        if path.startswith("id:"):
            return next((i for i in ns.items.values() if i.id == path), None)
        return ns.items.get(self._norm(path).lower())

    def _mkdirs(self, ns: Namespace, folder: str) -> Response | None:
        parts = [p for p in folder.split("/") if p]
        for n in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:n])
            item = ns.items.get(path.lower())
            if item is None:
                item = Item("id:" + secrets.token_urlsafe(12), path, folder=True)
                ns.items[path.lower()] = item
                self._log(ns, item)
            elif not item.folder:
                return error(409, "path/conflict/file", {".tag": "path", "reason": {".tag": "conflict", "conflict": {".tag": "file"}}})
        return None

    def _commit(self, ns: Namespace, path: str, data: bytes, mode, strict: bool = False) -> tuple[Response | None, dict]:
        path = self._norm(path)
        mode = {".tag": mode} if isinstance(mode, str) else (mode or {".tag": "add"})
        existing = ns.items.get(path.lower())
        conflict = error(409, "path/conflict/file", {".tag": "path", "reason": {".tag": "conflict", "conflict": {".tag": "file"}}})
        if existing is not None:
            if existing.folder:
                return conflict, {}
            if mode[".tag"] == "add" or (mode[".tag"] == "update" and mode.get("update") != existing.rev):
                if content_hash(data) == existing.content_hash and mode[".tag"] == "add" and not strict:
                    return None, existing.meta()  # Dropbox: identical content is no conflict, unless strict_conflict
                return conflict, {}
        failed = self._mkdirs(ns, path.rsplit("/", 1)[0])
        if failed:
            return failed, {}
        self._seq += 1
        item = Item(existing.id if existing else "id:" + secrets.token_urlsafe(12), path, blob=self.blobs.put(data),
                    size=len(data), rev=f"{self._seq:09x}{secrets.token_hex(4)}", content_hash=content_hash(data),
                    modified=self._now())
        ns.items[path.lower()] = item
        self._log(ns, item)
        self.uploads += 1
        return None, item.meta()

    # -- RPC ----------------------------------------------------------------------------------------
    def _account(self, ns: Namespace, body: dict) -> Response:
        root = {".tag": "team", "root_namespace_id": self.team_space.id, "home_namespace_id": self.home.id} if self.team \
            else {".tag": "user", "root_namespace_id": self.home.id, "home_namespace_id": self.home.id}
        return Response.json({"account_id": "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc", "email": "ap@acme.example",
                              "name": {"given_name": "Acme", "surname": "AP", "familiar_name": "Acme", "display_name": "Acme AP",
                                       "abbreviated_name": "AA"},
                              "email_verified": True, "disabled": False, "locale": "en", "referral_link": "https://db.tt/fake",
                              "is_paired": False, "account_type": {".tag": "business" if self.team else "basic"},
                              "root_info": root, **({"team_member_id": "dbmid:member-1"} if self.team else {})})

    def _get_metadata(self, ns: Namespace, body: dict) -> Response:
        item = self._lookup(ns, body.get("path", ""))
        if item is None:
            return error(409, "path/not_found", {".tag": "path", "path": {".tag": "not_found"}})
        return Response.json(item.meta())

    def _cursor(self, ns: Namespace, folder: str, recursive: bool, pos: int) -> str:
        raw = json.dumps({"ns": ns.id, "folder": folder.lower(), "recursive": recursive, "pos": pos, "epoch": self.epoch})
        return "AAF" + base64.urlsafe_b64encode(raw.encode()).decode()

    def _list_folder(self, ns: Namespace, body: dict) -> Response:
        folder = self._norm(body.get("path", ""))
        if folder and (ns.items.get(folder.lower()) is None or not ns.items[folder.lower()].folder):
            return error(409, "path/not_found", {".tag": "path", "path": {".tag": "not_found"}})
        recursive = bool(body.get("recursive"))
        limit = int(body.get("limit") or 2000)
        entries = [i.meta() for p, i in sorted(ns.items.items()) if self._under(p, folder.lower(), recursive)]
        return self._page(ns, folder, recursive, entries, limit, 0)

    def _page(self, ns, folder, recursive, entries, limit, skip) -> Response:
        page = entries[skip : skip + limit]
        more = skip + limit < len(entries)
        if more:  # a listing in progress: the cursor remembers how far it got
            raw = json.dumps({"ns": ns.id, "folder": folder.lower(), "recursive": recursive, "listing": skip + limit,
                              "pos": len(ns.log), "epoch": self.epoch})
            cursor = "AAF" + base64.urlsafe_b64encode(raw.encode()).decode()
        else:
            cursor = self._cursor(ns, folder, recursive, len(ns.log))
        return Response.json({"entries": page, "cursor": cursor, "has_more": more})

    @staticmethod
    def _under(path_lower: str, folder_lower: str, recursive: bool) -> bool:
        if not path_lower.startswith(folder_lower + "/"):
            return False
        return recursive or "/" not in path_lower[len(folder_lower) + 1 :]

    def _continue(self, ns: Namespace, body: dict) -> Response:
        try:
            state = json.loads(base64.urlsafe_b64decode(body["cursor"][3:]))
        except (KeyError, ValueError):
            return Response.text("Error in call to API function \"files/list_folder/continue\": bad cursor", 400)
        if state["epoch"] != self.epoch or state["ns"] != ns.id:
            return error(409, "reset", {".tag": "reset"})
        folder, recursive = state["folder"], state["recursive"]
        if "listing" in state:
            entries = [i.meta() for p, i in sorted(ns.items.items()) if self._under(p, folder, recursive)]
            return self._page(ns, folder, recursive, entries, 2000, state["listing"])
        latest: dict[str, dict] = {}
        for path_lower, entry in ns.log[state["pos"]:]:
            if self._under(path_lower, folder, recursive):
                latest.pop(path_lower, None)
                latest[path_lower] = entry  # the latest state per path, in change order
        return Response.json({"entries": list(latest.values()), "cursor": self._cursor(ns, folder, recursive, len(ns.log)),
                              "has_more": False})

    def _latest_cursor(self, ns: Namespace, body: dict) -> Response:
        folder = self._norm(body.get("path", ""))
        return Response.json({"cursor": self._cursor(ns, folder, bool(body.get("recursive")), len(ns.log))})

    def _create_folder(self, ns: Namespace, body: dict) -> Response:
        path = self._norm(body["path"])
        existing = ns.items.get(path.lower())
        if existing is not None:
            return error(409, "path/conflict/folder", {".tag": "path", "reason": {".tag": "conflict", "conflict": {".tag": "folder"}}})
        failed = self._mkdirs(ns, path)
        return failed or Response.json({"metadata": ns.items[path.lower()].meta()})

    def _delete(self, ns: Namespace, body: dict) -> Response:
        item = self._lookup(ns, body.get("path", ""))
        if item is None:
            return error(409, "path_lookup/not_found", {".tag": "path_lookup", "path_lookup": {".tag": "not_found"}})
        meta = item.meta()
        prefix = item.path_display.lower()
        for p in [p for p in ns.items if p == prefix or p.startswith(prefix + "/")]:
            self._log(ns, ns.items.pop(p), deleted=True)
        return Response.json({"metadata": meta})

    def _move(self, ns: Namespace, body: dict) -> Response:
        item = self._lookup(ns, body.get("from_path", ""))
        if item is None:
            return error(409, "from_lookup/not_found", {".tag": "from_lookup", "from_lookup": {".tag": "not_found"}})
        to = self._norm(body["to_path"])
        if to.lower() in ns.items:
            return error(409, "to/conflict/file", {".tag": "to", "to": {".tag": "conflict", "conflict": {".tag": "file"}}})
        failed = self._mkdirs(ns, to.rsplit("/", 1)[0])
        if failed:
            return failed
        del ns.items[item.path_display.lower()]
        self._log(ns, item, deleted=True)
        item.path_display = to
        ns.items[to.lower()] = item
        self._log(ns, item)
        return Response.json({"metadata": item.meta()})

    # -- content ------------------------------------------------------------------------------------
    def _upload_error(self, failed: Response) -> Response:
        err = json.loads(failed.body)
        return error(409, "path/conflict/file", {".tag": "path", "reason": err["error"].get("reason", err["error"]),
                                                 "upload_session_id": "pid_upload_session:" + secrets.token_urlsafe(12)})

    def _upload(self, ns: Namespace, arg: dict, data: bytes) -> Response:
        if len(data) > MAX_UPLOAD:
            return Response.text("Error in call to API function \"files/upload\": request body too large (over 150 MB)", 400)
        if arg.get("autorename"):
            return Response.text("this fake does not autorename", 400)
        failed, meta = self._commit(ns, arg["path"], data, arg.get("mode", "add"), bool(arg.get("strict_conflict")))
        return self._upload_error(failed) if failed else Response.json(meta)

    def _session_start(self, ns: Namespace, arg: dict, data: bytes) -> Response:
        sid = "sess-" + secrets.token_urlsafe(12)
        self.sessions[sid] = {"ns": ns.id, "blob": self.blobs.append(None, data), "offset": len(data),
                              "closed": bool(arg.get("close")), "expires": time.time() + 7 * 86400}
        return Response.json({"session_id": sid})

    def _session(self, cursor: dict) -> dict | Response:
        session = self.sessions.get(cursor.get("session_id", ""))
        if session is None or session["expires"] < time.time():
            return error(409, "not_found", {".tag": "not_found"})
        if int(cursor.get("offset", -1)) != session["offset"]:
            return error(409, "incorrect_offset", {".tag": "incorrect_offset", "correct_offset": session["offset"]})
        return session

    def _session_append(self, ns: Namespace, arg: dict, data: bytes) -> Response:
        session = self._session(arg.get("cursor", {}))
        if isinstance(session, Response):
            return session
        if session["closed"]:
            return error(409, "closed", {".tag": "closed"})
        if len(data) > MAX_UPLOAD:
            return Response.text("request body too large (over 150 MB)", 400)
        self.blobs.append(session["blob"], data)
        session["offset"] += len(data)
        session["closed"] = bool(arg.get("close"))
        return Response.json(None)

    def _session_finish(self, ns: Namespace, arg: dict, data: bytes) -> Response:
        cursor = arg.get("cursor", {})
        session = self._session(cursor)
        if isinstance(session, Response):
            err = json.loads(session.body)["error"]
            return error(409, "lookup_failed/" + err[".tag"], {".tag": "lookup_failed", "lookup_failed": err})
        if data:
            self.blobs.append(session["blob"], data)
            session["offset"] += len(data)
        commit = arg["commit"]
        content = self.blobs.get(session["blob"])
        failed, meta = self._commit(ns, commit["path"], content, commit.get("mode", "add"), bool(commit.get("strict_conflict")))
        if failed:
            err = json.loads(failed.body)["error"]
            return error(409, "path/conflict/file", {".tag": "path", "path": err.get("reason", err)})
        self.blobs.drop(session["blob"])
        del self.sessions[cursor["session_id"]]
        return Response.json(meta)

    def _download(self, ns: Namespace, arg: dict, data: bytes) -> Response:
        item = self._lookup(ns, arg.get("path", ""))
        if item is None or item.folder:
            return error(409, "path/not_found", {".tag": "path", "path": {".tag": "not_found"}})
        return Response(200, {"Content-Type": "application/octet-stream", "Dropbox-API-Result": json.dumps(item.meta())},
                        self.blobs.get(item.blob))
