"""A local Docbits API (../shared/reference/sources.md section 5), over https: the pending-export queue.

Docbits publishes the endpoints (path and method) but not their bodies; this server answers the
bodies docroute assumes (tasks/sources/docbits.py, docs/api-sources.md), FastAPI-style:

- X-API-KEY on every call: missing 403 {"detail": "Not authenticated"}, unknown 401 {"detail": "Invalid API key"}.
- GET /export/get_pending_watch_export_documents?doc_type=: a JSON array of {doc_id, doc_type, org_id,
  sub_org_id, status: "Export", updated_at} (doc_type missing: 422 {detail: [{loc, msg, type}]}).
- GET /document/{doc_id}: metadata {doc_id, doc_type, org_id, sub_org_id, status, created_at, updated_at,
  approved_at, tags, fields, files: [{file_name, content_type, size}]}; unknown: 404 {"detail": "Document not found"}.
- GET /export/get_data_v1?doc_id=: {doc_id, doc_type, fields, files: [{file_name, content_type, content (base64)}]}.
- GET /document/dashboard?doc_type=&start_date=YYYY-MM-DD&skip=&limit=: the documents of that type created
  on or after the date, any status, as the queue's entries with their status, oldest first.
- GET /export/update_pending_watch_export_status?doc_id=: out of the queue, status "Exported"
  ({"success": true}); a document not in the queue: 404.
- `per_minute` calls per 60 s (None: off), beyond them 429 {"detail": "Too Many Requests"} with Retry-After.

Faults: FakeAPI.fault (a 429 storm: `storm()`), `expire_key()`, `corrupt(doc_id)`, `delete(doc_id)`, `after()`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.fakes.base import FakeAPI, Fault, Request, Response


@dataclass
class Doc:
    doc_id: str
    doc_type: str
    org_id: str
    sub_org_id: str | None
    fields: dict[str, Any]
    files: list[tuple[str, str, bytes]]  # (file_name, content_type, content), main first
    created_at: datetime
    updated_at: datetime
    approved_at: datetime | None
    tags: list[str] = field(default_factory=list)
    status: str = "Export"
    pending: bool = True
    corrupt: bool = False


class DocbitsAPI(FakeAPI):
    def __init__(self, *, api_key: str | None = None, tls: bool = True, per_minute: int | None = None, name: str = "fake Docbits"):
        ctx = None
        self.ca_bundle: str | None = None
        if tls:
            from tests.fakes.cloud_common import tls as make_tls

            ctx, self.ca_bundle = make_tls()
        super().__init__(tls=ctx, name=name)
        self.api_key = api_key or f"dbk-{secrets.token_urlsafe(18)}"
        self.keys = {self.api_key}
        self.per_minute = per_minute
        self._calls: deque[float] = deque()
        self.refused_429 = 0
        self.docs: dict[str, Doc] = {}
        self.hooks: list[list] = []
        self.route("GET", "/export/get_pending_watch_export_documents")(self._pending)
        self.route("GET", "/document/dashboard")(self._dashboard)
        self.route("GET", r"/document/(?P<doc_id>[^/]+)")(self._document)
        self.route("GET", "/export/get_data_v1")(self._data)
        self.route("GET", "/export/update_pending_watch_export_status")(self._ack)

    # -- test helpers -----------------------------------------------------------------------------------
    def add(self, doc_id: str, *, doc_type: str = "INVOICE", org_id: str = "ORG-1", sub_org_id: str | None = None,
            fields: dict[str, Any] | None = None, files: list[tuple[str, bytes]] | None = None, approved_at: datetime | None = None,
            pending: bool = True, tags: list[str] | None = None) -> Doc:
        """Add or replace a document (in the export queue unless pending=False: not approved yet)."""
        now = datetime.now(timezone.utc)
        with self.lock:
            old = self.docs.get(doc_id)
            typed = [(n, "application/pdf" if n.lower().endswith(".pdf") else "application/xml" if n.lower().endswith(".xml")
                      else "application/octet-stream", d) for n, d in (files if files is not None else [(f"{doc_id}.pdf", b"%PDF-1.4\n%%EOF\n")])]
            doc = Doc(doc_id, doc_type, org_id, sub_org_id, dict(fields or {}), typed, old.created_at if old else now, now,
                      approved_at if pending else None, list(tags or []), "Export" if pending else "Pending approval", pending)
            self.docs[doc_id] = doc
            return doc

    def delete(self, doc_id: str) -> None:
        with self.lock:
            self.docs.pop(doc_id, None)

    def corrupt(self, doc_id: str) -> None:
        with self.lock:
            self.docs[doc_id].corrupt = True

    def expire_key(self) -> None:
        with self.lock:
            self.keys.discard(self.api_key)

    def storm(self, times: int = 5, retry_after: int = 1) -> None:
        self.fault(Fault(status=429, headers={"Retry-After": str(retry_after), "Content-Type": "application/json"},
                         body=b'{"detail": "Too Many Requests"}', times=times))

    def after(self, method: str, path: str, action: Callable[[Request], None], times: int = 1) -> None:
        with self.lock:
            self.hooks.append([method, re.compile(path), action, times])

    # -- plumbing ---------------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> Response:
        key = req.headers.get("x-api-key")
        if not key:
            return Response.json({"detail": "Not authenticated"}, 403)
        with self.lock:
            known = key in self.keys
        if not known:
            return Response.json({"detail": "Invalid API key"}, 401)
        if self.per_minute is not None:
            with self.lock:
                now = time.time()
                while self._calls and self._calls[0] <= now - 60:
                    self._calls.popleft()
                if len(self._calls) >= self.per_minute:
                    self.refused_429 += 1
                    return Response.json({"detail": "Too Many Requests"}, 429, {"Retry-After": str(max(1, int(self._calls[0] + 60 - now) + 1))})
                self._calls.append(now)
        response = super()._dispatch(req)
        with self.lock:
            due = [h for h in self.hooks if h[0] == req.method and h[1].search(req.path) and h[3] > 0]
            for h in due:
                h[3] -= 1
            self.hooks = [h for h in self.hooks if h[3] > 0]
        for h in due:
            h[2](req)
        return response

    @staticmethod
    def _missing(name: str) -> Response:
        return Response.json({"detail": [{"loc": ["query", name], "msg": "field required", "type": "value_error.missing"}]}, 422)

    @staticmethod
    def _iso(when: datetime | None) -> str | None:
        return when.isoformat() if when else None

    def _meta(self, d: Doc) -> dict[str, Any]:
        return {"doc_id": d.doc_id, "doc_type": d.doc_type, "org_id": d.org_id, "sub_org_id": d.sub_org_id, "status": d.status,
                "created_at": self._iso(d.created_at), "updated_at": self._iso(d.updated_at), "approved_at": self._iso(d.approved_at),
                "tags": list(d.tags), "fields": dict(d.fields),
                "files": [{"file_name": n, "content_type": t, "size": len(c)} for n, t, c in d.files]}

    # -- routes -----------------------------------------------------------------------------------------
    def _pending(self, req: Request) -> Response:
        doc_type = req.arg("doc_type")
        if not doc_type:
            return self._missing("doc_type")
        with self.lock:
            docs = sorted((d for d in self.docs.values() if d.pending and d.doc_type == doc_type), key=lambda d: d.updated_at)
            return Response.json([{"doc_id": d.doc_id, "doc_type": d.doc_type, "org_id": d.org_id, "sub_org_id": d.sub_org_id,
                                   "status": d.status, "updated_at": self._iso(d.updated_at)} for d in docs])

    def _dashboard(self, req: Request) -> Response:
        try:
            skip, limit = int(req.arg("skip") or 0), int(req.arg("limit") or 100)
            since = datetime.fromisoformat(req.arg("start_date")).date() if req.arg("start_date") else None
        except ValueError:
            return Response.json({"detail": [{"loc": ["query", "start_date"], "msg": "invalid", "type": "value_error"}]}, 422)
        with self.lock:
            docs = sorted((d for d in self.docs.values()
                           if (not req.arg("doc_type") or d.doc_type == req.arg("doc_type"))
                           and (not req.arg("status") or d.status == req.arg("status"))
                           and (since is None or d.created_at.date() >= since)), key=lambda d: (d.created_at, d.doc_id))
            page = docs[skip : skip + limit]
            return Response.json([{"doc_id": d.doc_id, "doc_type": d.doc_type, "org_id": d.org_id, "sub_org_id": d.sub_org_id,
                                   "status": d.status, "created_at": self._iso(d.created_at), "updated_at": self._iso(d.updated_at)}
                                  for d in page])

    def _document(self, req: Request, doc_id: str) -> Response:
        with self.lock:
            d = self.docs.get(doc_id)
            return Response.json(self._meta(d)) if d else Response.json({"detail": "Document not found"}, 404)

    def _data(self, req: Request) -> Response:
        doc_id = req.arg("doc_id")
        if not doc_id:
            return self._missing("doc_id")
        with self.lock:
            d = self.docs.get(doc_id)
            if d is None:
                return Response.json({"detail": "Document not found"}, 404)
            files = []
            for n, t, c in d.files:
                text = base64.b64encode(c).decode()
                if d.corrupt:
                    text = text[:10] + "#~" + text[10:]
                files.append({"file_name": n, "content_type": t, "content": text})
            body = {"doc_id": d.doc_id, "doc_type": d.doc_type, "fields": d.fields, "files": files}
        return Response(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def _ack(self, req: Request) -> Response:
        doc_id = req.arg("doc_id")
        if not doc_id:
            return self._missing("doc_id")
        with self.lock:
            d = self.docs.get(doc_id)
            if d is None or not d.pending:
                return Response.json({"detail": "Document is not pending export"}, 404)
            d.pending, d.status = False, "Exported"
        return Response.json({"success": True})
