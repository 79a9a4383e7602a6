"""A local Google Drive API v3 and Google token endpoint (../shared/reference/connectors.md 11,
sources.md 6), one https server (google-api-python-client builds upload URLs on https).

- POST /token: the JWT bearer grant of a service account (the assertion's RS256 signature checked
  with the account's public key, aud = Google's token endpoint, scope drive; `sub` = a user of the domain
  for domain-wide delegation, refused unless `delegation` allows it) and the refresh_token grant of
  a user OAuth client. `service_account_info()` is a key file pointing here (token_uri).
- /drive/v3: about (user), files.list (q: `'<id>' in parents`, `name = '...'`, `mimeType = '...'`,
  `trashed = false`, `appProperties has { key='k' and value='v' }`, `properties has {...}`, joined with
  and / or / parentheses; pageToken paging), files.get (alt=media for content), files.create
  (metadata only: folders), files.update (addParents/removeParents: a move), files.delete,
  changes.getStartPageToken and changes.list (drive-wide, newStartPageToken on the last page;
  `expire_page_tokens()` makes earlier tokens answer 400 invalid, the [?] in the reference decided
  here), drives.get.
- /upload/drive/v3/files: uploadType=multipart (metadata + media, at most 5 MB here as the docs
  advise), uploadType=resumable (POST the metadata -> Location with upload_id; PUT chunks with
  Content-Range, multiples of 256 KiB but the last; `bytes */N` asks the state: 308 with Range;
  the last chunk creates the file; `expire_upload_sessions()`: 404), and PATCH .../files/{id} to
  replace content.
- Shared drives: items in one carry driveId; get/create/update/delete need supportsAllDrives=true
  and files.list includeItemsFromAllDrives=true to see them (else 404 / not listed).
- File names are not unique: two creates of one name make two files (what the connector's
  appProperties key exists for).
- Faults: `rate_limit_fault` (403 rateLimitExceeded, or 429), 5xx, cut connections.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tests.fakes.base import FakeAPI, Fault, Request, Response
from tests.fakes.cloud_common import Blobs, QuietStart, bearer, complete, tls

FOLDER = "application/vnd.google-apps.folder"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
CHUNK = 256 * 1024
MULTIPART_MAX = 5 * 1024 * 1024
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"  # the aud Google's token endpoint takes, whatever its URL


def d_error(status: int, reason: str, message: str, domain: str = "global", location: str | None = None) -> Response:
    err = {"domain": domain, "reason": reason, "message": message}
    if location:
        err.update(locationType="parameter", location=location)
    return Response.json({"error": {"errors": [err], "code": status, "message": message}}, status)


def rate_limit_fault(status: int = 403, times: int = 1, match: str | None = None) -> Fault:
    reason = "rateLimitExceeded" if status == 403 else "rateLimitExceeded"
    body = json.dumps({"error": {"errors": [{"domain": "usageLimits", "reason": reason, "message": "Rate Limit Exceeded"}],
                                 "code": status, "message": "Rate Limit Exceeded"}}).encode()
    return Fault(status=status, headers={"Content-Type": "application/json"}, body=body, times=times, match=match)


def cut_chunk(times: int = 1) -> Fault:
    """The connection cut while a chunk goes to a resumable session (the chunk is not stored)."""
    return Fault(kind="cut", times=times, match=lambda r: r.method == "PUT" and r.path.startswith("/upload/")
                 and "bytes */" not in r.headers.get("content-range", ""))


@dataclass
class File:
    id: str
    name: str
    parents: list[str]
    mimeType: str = "application/octet-stream"
    appProperties: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)
    blob: str | None = None
    size: int = 0
    md5: str = ""
    trashed: bool = False
    modified: str = ""
    version: int = 1
    head: str = ""
    driveId: str | None = None

    def meta(self) -> dict:
        out = {"kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mimeType, "parents": list(self.parents),
               "trashed": self.trashed, "modifiedTime": self.modified, "version": str(self.version),
               "appProperties": dict(self.appProperties), "properties": dict(self.properties)}
        if self.mimeType != FOLDER:
            out.update(size=str(self.size), md5Checksum=self.md5, headRevisionId=self.head)
        if self.driveId:
            out["driveId"] = self.driveId
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the query language (a subset) -----------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(\(|\)|\{|\}|'(?:[^'\\]|\\.)*'|[A-Za-z_]+|=|!=)")


def _tokens(q: str) -> list[str]:
    out, pos = [], 0
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if not m:
            if q[pos:].strip() == "":
                break
            raise ValueError(f"bad query near {q[pos:pos + 20]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _string(tok: str) -> str:
    return re.sub(r"\\(.)", r"\1", tok[1:-1])


def parse_query(q: str):
    """A predicate over File from a Drive query (the subset in the module docstring)."""
    toks = _tokens(q)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take(expected=None):
        nonlocal pos
        tok = toks[pos]
        if expected is not None and tok.lower() != expected:
            raise ValueError(f"expected {expected}, got {tok}")
        pos += 1
        return tok

    def expr():
        left = term()
        while (peek() or "").lower() == "or":
            take()
            right = term()
            left = (lambda a, b: lambda f: a(f) or b(f))(left, right)
        return left

    def term():
        left = factor()
        while (peek() or "").lower() == "and":
            take()
            right = factor()
            left = (lambda a, b: lambda f: a(f) and b(f))(left, right)
        return left

    def has_clause(attr: str):
        take("{")
        take("key")
        take("=")
        key = _string(take())
        take("and")
        take("value")
        take("=")
        value = _string(take())
        take("}")
        return lambda f: getattr(f, attr).get(key) == value

    def factor():
        tok = peek()
        if tok == "(":
            take()
            inner = expr()
            take(")")
            return inner
        if tok.lower() == "not":
            take()
            inner = factor()
            return lambda f: not inner(f)
        if tok.startswith("'"):
            value = _string(take())
            take("in")
            take("parents")
            return lambda f: value in f.parents
        name = take()
        if name in ("appProperties", "properties"):
            take("has")
            return has_clause(name)
        op = take()
        raw = take()
        value = _string(raw) if raw.startswith("'") else raw.lower() == "true"
        getter = {"name": lambda f: f.name, "mimeType": lambda f: f.mimeType, "trashed": lambda f: f.trashed}[name]
        return (lambda f: getter(f) == value) if op == "=" else (lambda f: getter(f) != value)

    pred = expr()
    if pos != len(toks):
        raise ValueError(f"unexpected {toks[pos]!r}")
    return pred


def _parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The bodies of a multipart/related message's parts (RFC 2046: the line break before a delimiter
    belongs to it). The line break is the one after the first delimiter: the library writes LF,
    others CRLF; only that one is taken off a part's end (a payload may end in CR or LF itself)."""
    sections = body.split(b"--" + boundary)
    nl = b"\r\n" if sections[1].startswith(b"\r\n") else b"\n"
    out = []
    for section in sections[1:]:
        if section.startswith(b"--"):
            break
        section = section[len(nl):]
        head, found, rest = section.partition(nl + nl)  # the part's headers end at the first blank line
        section = rest if found else section
        out.append(section[: -len(nl)] if section.endswith(nl) else section)
    return out


class DriveAPI(QuietStart, FakeAPI):
    def __init__(self, *, expires_in: float = 3600, delegation: bool = True):
        ctx, self.ca_bundle = tls()
        super().__init__(tls=ctx, name="fake Google Drive")
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
        self._public = key.public_key()
        self.sa_email = "docroute@acme-project.iam.gserviceaccount.com"
        self.key_id = secrets.token_hex(20)
        self.domain_users = {"ap@acme.example"}
        self.delegation = delegation
        self.client_id, self.client_secret = "drive-client.apps.googleusercontent.com", secrets.token_urlsafe(18)
        self.refresh_tokens: set[str] = set()
        self.expires_in = expires_in
        self.tokens: dict[str, tuple[float, str]] = {}  # token -> (expiry, subject)
        self.blobs = Blobs()
        self.files: dict[str, File] = {}
        self.roots: dict[str, str] = {}  # subject -> My Drive root folder id
        self.shared_drives: dict[str, str] = {}  # drive id -> name (its root folder has the drive's id)
        self.log: list[str] = []
        self.epoch = 0
        self.session_epoch = 0
        self.sessions: dict[str, dict] = {}
        self.creates = 0
        self.lock = threading.RLock()
        self.route("POST", "/token")(self._token)
        api = "/drive/v3"
        self.route("GET", f"{api}/about")(self._auth(self._about))
        self.route("GET", f"{api}/files")(self._auth(self._list))
        self.route("POST", f"{api}/files")(self._auth(self._create_meta))
        self.route("GET", f"{api}/files/(?P<fid>[^/]+)")(self._auth(self._get))
        self.route("PATCH", f"{api}/files/(?P<fid>[^/]+)")(self._auth(self._update))
        self.route("DELETE", f"{api}/files/(?P<fid>[^/]+)")(self._auth(self._delete))
        self.route("GET", f"{api}/changes/startPageToken")(self._auth(self._start_token))
        self.route("GET", f"{api}/changes")(self._auth(self._changes))
        self.route("GET", f"{api}/drives/(?P<did>[^/]+)")(self._auth(self._drive))
        self.route("POST", "/upload/drive/v3/files")(self._auth(self._upload))
        self.route("PATCH", "/upload/drive/v3/files/(?P<fid>[^/]+)")(self._auth(self._upload))
        self.route("PUT", "/upload/drive/v3/files")(self._auth(self._chunk))
        self.route("PUT", "/upload/drive/v3/files/(?P<fid>[^/]+)")(self._auth(self._chunk))

    # -- test helpers -------------------------------------------------------------------------------
    def service_account_info(self) -> dict:
        return {"type": "service_account", "project_id": "acme-project", "private_key_id": self.key_id,
                "private_key": self._private_pem, "client_email": self.sa_email, "client_id": "1234567890",
                "token_uri": f"{self.url}/token"}

    def issue_user(self) -> str:
        with self.lock:
            token = "1//" + secrets.token_urlsafe(24)
            self.refresh_tokens.add(token)
            return token

    def root_of(self, subject: str) -> str:
        with self.lock:
            if subject not in self.roots:
                root = File("root-" + secrets.token_hex(6), "My Drive", [], FOLDER, modified=_now())
                self.files[root.id] = root
                self.roots[subject] = root.id
            return self.roots[subject]

    def shared_drive(self, name: str = "Accounting") -> str:
        with self.lock:
            did = "0A" + secrets.token_hex(8)
            self.shared_drives[did] = name
            self.files[did] = File(did, name, [], FOLDER, driveId=did, modified=_now())
            return did

    def folder(self, parent: str, name: str) -> str:
        with self.lock:
            f = File(secrets.token_urlsafe(16), name, [parent], FOLDER, modified=_now(), driveId=self.files[parent].driveId)
            self.files[f.id] = f
            self.log.append(f.id)
            return f.id

    def add_file(self, parent: str, name: str, data: bytes, **extra) -> File:
        with self.lock:
            return self._new_file({"name": name, "parents": [parent], **extra}, data)

    def set_properties(self, fid: str, props: dict) -> None:
        """Change a file's public properties (as a capture system would): a change in the feed."""
        with self.lock:
            f = self.files[fid]
            f.properties.update(props)
            f.modified, f.version = _now(), f.version + 1
            self._changed(f)

    def children(self, parent: str, name: str | None = None) -> list[File]:
        with self.lock:
            return [f for f in self.files.values() if parent in f.parents and not f.trashed and (name is None or f.name == name)]

    def content(self, f: File) -> bytes:
        return self.blobs.get(f.blob)

    def remove(self, fid: str) -> None:
        with self.lock:
            if self.files.pop(fid, None) is not None:
                self.log.append(fid)

    def expire_page_tokens(self) -> None:
        with self.lock:
            self.epoch += 1

    def expire_upload_sessions(self) -> None:
        with self.lock:
            self.session_epoch += 1

    # -- plumbing -----------------------------------------------------------------------------------
    def _token(self, req: Request) -> Response:
        import jwt

        form = req.form()
        grant = form.get("grant_type")
        with self.lock:
            if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                try:
                    claims = jwt.decode(form.get("assertion", ""), self._public, algorithms=["RS256"], audience=GOOGLE_AUDIENCE)
                except jwt.PyJWTError as exc:
                    return Response.json({"error": "invalid_grant", "error_description": f"Invalid JWT Signature: {exc}"}, 400)
                if claims.get("iss") != self.sa_email or DRIVE_SCOPE not in claims.get("scope", "").split():
                    return Response.json({"error": "invalid_scope", "error_description": "bad iss or scope"}, 400)
                subject = claims.get("sub") or self.sa_email
                if subject != self.sa_email and (not self.delegation or subject not in self.domain_users):
                    return Response.json({"error": "unauthorized_client", "error_description":
                                          "Client is unauthorized to retrieve access tokens using this method, or client not "
                                          "authorized for any of the scopes requested."}, 401)
            elif grant == "refresh_token":
                if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
                    import base64

                    header = req.headers.get("authorization", "")
                    pair = base64.b64decode(header[6:]).decode().partition(":") if header.lower().startswith("basic ") else ("", "", "")
                    if (pair[0], pair[2]) != (self.client_id, self.client_secret):
                        return Response.json({"error": "invalid_client", "error_description": "The OAuth client was not found."}, 401)
                if form.get("refresh_token") not in self.refresh_tokens:
                    return Response.json({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, 400)
                subject = "ap@acme.example"
            else:
                return Response.json({"error": "unsupported_grant_type"}, 400)
            token = "ya29." + secrets.token_urlsafe(24)
            self.tokens[token] = (time.time() + self.expires_in, subject)
        return Response.json({"access_token": token, "expires_in": int(self.expires_in), "token_type": "Bearer"})

    def _auth(self, fn):
        def handler(req: Request, **kw) -> Response:
            expiry, subject = self.tokens.get(bearer(req), (0, ""))
            if expiry < time.time():
                return Response.json({"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                                "errors": [{"domain": "global", "reason": "authError", "message": "Invalid Credentials",
                                                            "locationType": "header", "location": "Authorization"}],
                                                "status": "UNAUTHENTICATED"}}, 401)
            with self.lock:
                return fn(req, subject, **kw)
        return handler

    def _visible(self, f: File, req: Request, listing: bool = False) -> bool:
        if f.driveId is None:
            return True
        flag = "includeItemsFromAllDrives" if listing else "supportsAllDrives"
        return req.arg(flag, "false").lower() == "true" and (not listing or req.arg("supportsAllDrives", "false").lower() == "true")

    def _resolve(self, fid: str, subject: str) -> str:
        return self.root_of(subject) if fid == "root" else fid

    def _file(self, fid: str, subject: str, req: Request) -> File | Response:
        f = self.files.get(self._resolve(fid, subject))
        if f is None or not self._visible(f, req):
            return d_error(404, "notFound", f"File not found: {fid}.", location="fileId")
        return f

    def _changed(self, f: File) -> None:
        self.log.append(f.id)

    def _new_file(self, meta: dict, data: bytes) -> File:
        parents = meta.get("parents") or []
        drive = self.files[parents[0]].driveId if parents and parents[0] in self.files else None
        f = File(secrets.token_urlsafe(16), meta.get("name", "Untitled"), parents, meta.get("mimeType") or "application/octet-stream",
                 dict(meta.get("appProperties") or {}), dict(meta.get("properties") or {}), driveId=drive)
        self._store(f, data)
        self.files[f.id] = f
        self.creates += 1
        return f

    def _store(self, f: File, data: bytes) -> None:
        if f.blob:
            self.blobs.drop(f.blob)
        f.blob, f.size, f.md5 = self.blobs.put(data), len(data), hashlib.md5(data).hexdigest()
        f.modified, f.version, f.head = _now(), f.version + 1, secrets.token_hex(10)
        self._changed(f)

    # -- routes -------------------------------------------------------------------------------------
    def _about(self, req: Request, subject: str) -> Response:
        return Response.json({"kind": "drive#about", "user": {"kind": "drive#user", "displayName": subject.split("@")[0],
                                                               "emailAddress": subject, "me": True}})

    def _drive(self, req: Request, subject: str, did: str) -> Response:
        if did not in self.shared_drives:
            return d_error(404, "notFound", f"Shared drive not found: {did}", location="driveId")
        return Response.json({"kind": "drive#drive", "id": did, "name": self.shared_drives[did]})

    def _list(self, req: Request, subject: str) -> Response:
        q = req.arg("q", "trashed = false")
        for root_alias in re.findall(r"'root' in parents", q):
            q = q.replace(root_alias, f"'{self.root_of(subject)}' in parents")
        try:
            pred = parse_query(q)
        except (ValueError, KeyError, IndexError) as exc:
            return d_error(400, "invalid", f"Invalid Value: {exc}", location="q")
        matched = [f for f in self.files.values() if self._visible(f, req, listing=True) and pred(f)]
        matched.sort(key=lambda f: (f.name, f.id))
        size = int(req.arg("pageSize", "100"))
        start = int(req.arg("pageToken", "0") or 0)
        out = {"kind": "drive#fileList", "files": [f.meta() for f in matched[start : start + size]]}
        if start + size < len(matched):
            out["nextPageToken"] = str(start + size)
        return Response.json(out)

    def _get(self, req: Request, subject: str, fid: str) -> Response:
        f = self._file(fid, subject, req)
        if isinstance(f, Response):
            return f
        if req.arg("alt") == "media":
            if f.mimeType == FOLDER:
                return d_error(403, "fileNotDownloadable", "Only files with binary content can be downloaded.")
            return Response(200, {"Content-Type": f.mimeType}, self.blobs.get(f.blob))
        return Response.json(f.meta())

    def _create_meta(self, req: Request, subject: str) -> Response:
        meta = req.json() or {}
        meta["parents"] = [self._resolve(p, subject) for p in meta.get("parents") or ["root"]]
        parent = self.files.get(meta["parents"][0])
        if parent is None or not self._visible(parent, req):
            return d_error(404, "notFound", f"File not found: {meta['parents'][0]}.", location="fileId")
        f = File(secrets.token_urlsafe(16), meta.get("name", "Untitled"), meta["parents"], meta.get("mimeType", "application/octet-stream"),
                 dict(meta.get("appProperties") or {}), dict(meta.get("properties") or {}), modified=_now(), driveId=parent.driveId)
        self.files[f.id] = f
        self._changed(f)
        return Response.json(f.meta())

    def _update(self, req: Request, subject: str, fid: str) -> Response:
        f = self._file(fid, subject, req)
        if isinstance(f, Response):
            return f
        meta = req.json() if req.body else {}
        if "name" in (meta or {}):
            f.name = meta["name"]
        for key in ("appProperties", "properties"):
            if key in (meta or {}):
                getattr(f, key).update({k: v for k, v in meta[key].items() if v is not None})
        if "trashed" in (meta or {}):
            f.trashed = bool(meta["trashed"])
        add = [self._resolve(p, subject) for p in (req.arg("addParents") or "").split(",") if p]
        remove = [self._resolve(p, subject) for p in (req.arg("removeParents") or "").split(",") if p]
        for p in add:
            if p not in self.files:
                return d_error(404, "notFound", f"File not found: {p}.", location="fileId")
        f.parents = [p for p in f.parents if p not in remove] + [p for p in add if p not in f.parents]
        f.modified, f.version = _now(), f.version + 1
        self._changed(f)
        return Response.json(f.meta())

    def _delete(self, req: Request, subject: str, fid: str) -> Response:
        f = self._file(fid, subject, req)
        if isinstance(f, Response):
            return f
        del self.files[f.id]
        self._changed(f)
        return Response(204)

    def _start_token(self, req: Request, subject: str) -> Response:
        return Response.json({"kind": "drive#startPageToken", "startPageToken": self._page_token(len(self.log))})

    def _page_token(self, pos: int) -> str:
        return f"{self.epoch}.{pos}"

    def _changes(self, req: Request, subject: str) -> Response:
        token = req.arg("pageToken", "")
        m = re.fullmatch(r"(\d+)\.(\d+)", token)
        if not m or int(m.group(1)) != self.epoch:
            return d_error(400, "invalid", "Invalid Value", location="pageToken")
        pos, size = int(m.group(2)), int(req.arg("pageSize", "100"))
        drive = req.arg("driveId")
        ids: list[str] = []
        end = pos
        for end in range(pos, len(self.log)):
            fid = self.log[end]
            if len(ids) >= size:
                break
            ids.append(fid)
        else:
            end = len(self.log)
        changes = []
        for fid in ids:
            f = self.files.get(fid)
            if f is not None and (f.driveId or None) != (drive or None):
                continue
            change = {"kind": "drive#change", "changeType": "file", "fileId": fid, "time": _now(), "removed": f is None}
            if f is not None:
                change["file"] = f.meta()
            changes.append(change)
        out = {"kind": "drive#changeList", "changes": changes}
        if end < len(self.log):
            out["nextPageToken"] = self._page_token(end)
        else:
            out["newStartPageToken"] = self._page_token(len(self.log))
        return Response.json(out)

    # -- uploads ------------------------------------------------------------------------------------
    def _target(self, req: Request, subject: str, fid: str | None) -> File | Response | None:
        return self._file(fid, subject, req) if fid else None

    def _upload(self, req: Request, subject: str, fid: str | None = None) -> Response:
        kind = req.arg("uploadType")
        target = self._target(req, subject, fid)
        if isinstance(target, Response):
            return target
        if kind == "multipart":
            if not complete(req):
                return d_error(400, "badContent", "incomplete body")
            ctype = req.headers.get("content-type", "")
            m = re.search(r'boundary="?([^";]+)"?', ctype)
            if not ctype.startswith("multipart/related") or not m:
                return d_error(400, "badContent", "multipart/related expected")
            meta_part, media_part = _parts(req.body, m.group(1).encode())[:2]
            meta = json.loads(meta_part.strip() or b"{}")
            media = media_part
            if len(media) > MULTIPART_MAX:
                return d_error(400, "badContent", "multipart uploads are for files of at most 5 MB")
            return self._finish(req, subject, target, meta, media)
        if kind == "resumable":
            meta = req.json() if req.body else {}
            sid = secrets.token_urlsafe(18)
            self.sessions[sid] = {"meta": meta or {}, "blob": None, "received": 0, "target": target.id if target else None,
                                  "epoch": self.session_epoch, "subject": subject,
                                  "total": int(req.headers.get("x-upload-content-length", "-1"))}
            path = req.path
            extra = "&supportsAllDrives=true" if req.arg("supportsAllDrives", "").lower() == "true" else ""
            return Response(200, {"Location": f"{self.url}{path}?uploadType=resumable&upload_id={sid}{extra}", "Content-Length": "0"})
        if kind == "media":
            return self._finish(req, subject, target, {}, req.body)
        return d_error(400, "invalid", "Invalid Value", location="uploadType")

    def _finish(self, req: Request, subject: str, target: File | None, meta: dict, data: bytes) -> Response:
        if target is None:
            meta["parents"] = [self._resolve(p, subject) for p in meta.get("parents") or ["root"]]
            parent = self.files.get(meta["parents"][0])
            if parent is None or not self._visible(parent, req):
                return d_error(404, "notFound", f"File not found: {meta['parents'][0]}.", location="fileId")
            f = self._new_file(meta, data)
        else:
            for key in ("appProperties", "properties"):
                getattr(target, key).update(meta.get(key) or {})
            target.name = meta.get("name", target.name)
            self._store(target, data)
            f = target
        return Response.json(f.meta())

    def _chunk(self, req: Request, subject: str, fid: str | None = None) -> Response:
        sid = req.arg("upload_id", "")
        session = self.sessions.get(sid)
        if session is None or session["epoch"] != self.session_epoch:
            self.sessions.pop(sid, None)
            return d_error(404, "notFound", "Upload session not found or expired")
        if session.get("done"):  # finished: every later request on it answers with the file
            return Response.json(session["done"])
        m = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\d+|\*)", req.headers.get("content-range", "").strip())
        if not m:
            return d_error(400, "badContent", "bad Content-Range")
        total = int(m.group(4)) if m.group(4) != "*" else None

        def state() -> Response:
            headers = {"Content-Length": "0"}
            if session["received"]:
                headers["Range"] = f"bytes=0-{session['received'] - 1}"
            return Response(308, headers)

        if m.group(1) == "*":
            if total is not None and session["received"] == total and session.get("done"):
                return Response.json(session["done"])
            return state()
        if not complete(req):
            return d_error(400, "badContent", "incomplete body")
        start, end = int(m.group(2)), int(m.group(3))
        if start != session["received"]:
            return state()  # tell the client where the session is
        last = total is not None and end + 1 == total
        if not last and len(req.body) % CHUNK:
            return d_error(400, "badContent", "chunks must be multiples of 256 KiB except the last")
        session["blob"] = self.blobs.append(session["blob"], req.body)
        session["received"] = end + 1
        if not last:
            return state()
        data = self.blobs.get(session["blob"])
        self.blobs.drop(session["blob"])
        target = self.files.get(session["target"]) if session["target"] else None
        answer = self._finish(req, session["subject"], target, dict(session["meta"]), data)
        if answer.status == 200:
            session["done"] = json.loads(answer.body)
        return answer
