"""A local Exact Online for the Exact connector (documents in, shared/reference/connectors.md section 5 and
sources.md section 2), on the rotating-refresh-token OAuth2 server of tests/fakes/oauth_server.py (Exact
rotates the refresh token on every use; reusing an old one revokes the authorisation).

- GET /api/v1/current/Me -> {"d": {"results": [{CurrentDivision, FullName, UserName}]}}.
- POST /api/v1/{division}/documents/Documents {Subject, Type, Body, Account?, DocumentDate?} -> 201 {"d": {ID, ...}}
  (Prefer: return=representation); Type must be one of `types`.
- POST /api/v1/{division}/documents/DocumentAttachments {Document, FileName, Attachment (base64)} -> 201 {"d": {ID,
  Document, FileName, FileSize}}; the Document must exist in the division.
- GET of both with $filter (`Body eq '...'`, `Document eq guid'...'`) and $select, {"d": {"results": [...]}}; a
  plain listing without $filter is refused (Exact's mandatory filtering).
- Answers are JSON only with Accept: application/json (otherwise Atom XML, as Exact's default); errors carry the
  OData body {"error": {"code", "message": {"lang", "value"}}}; request bodies over 10 MB are refused (413).
- Rate limits per division: `minutely` calls per `window` seconds (a minute at Exact; shorter in tests) and
  `daily` calls a day, said on every answer in X-RateLimit-Minutely-Limit/Remaining/Reset and the daily
  X-RateLimit-Limit/Remaining/Reset (resets in epoch milliseconds); a call beyond either is answered 429 with
  only the exhausted budget's headers. `refused` counts 429s.
Every API call needs a live bearer token (401 otherwise).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import Request, Response
from tests.fakes.oauth_server import OAuthServer

FILTER_BODY = re.compile(r"^Body eq '(?P<v>(?:[^']|'')*)'$")
FILTER_DOCUMENT = re.compile(r"^Document eq guid'(?P<v>[0-9a-fA-F-]{36})'$")
MAX_BODY = 10 * 1024 * 1024


@dataclass
class ExactDocument:
    ID: str
    Division: int
    Subject: str
    Type: int
    Body: str
    Account: str | None
    DocumentDate: str | None
    Created: float = field(default_factory=time.time)


@dataclass
class ExactAttachment:
    ID: str
    Document: str
    FileName: str
    data: bytes


class ExactAPI(OAuthServer):
    def __init__(self, divisions: tuple[int, ...] = (123456,), minutely: int = 60, window: float = 60.0, daily: int = 5000,
                 types: tuple[int, ...] = (10, 20, 55), **kwargs: Any):
        kwargs.setdefault("client_secret", f"exact-secret-{uuid.uuid4().hex[:12]}")
        kwargs.setdefault("name", "Exact Online")
        super().__init__(**kwargs)
        self.divisions = set(divisions)
        self.minutely, self.window, self.daily = minutely, window, daily
        self.types = set(types)
        self.documents: dict[str, ExactDocument] = {}
        self.attachments: dict[str, ExactAttachment] = {}
        self.used: Counter[tuple[int, int]] = Counter()  # (division, window number) -> calls
        self.used_today: Counter[int] = Counter()  # division -> calls today
        self.refused = 0  # 429s answered
        self.route("GET", "/api/v1/current/Me")(self._me)
        self.route("GET", r"/api/v1/(?P<division>\d+)/documents/Documents")(self._list_documents)
        self.route("POST", r"/api/v1/(?P<division>\d+)/documents/Documents")(self._create_document)
        self.route("GET", r"/api/v1/(?P<division>\d+)/documents/DocumentAttachments")(self._list_attachments)
        self.route("POST", r"/api/v1/(?P<division>\d+)/documents/DocumentAttachments")(self._create_attachment)

    # -- test helpers -----------------------------------------------------------------------------------
    def documents_with(self, body: str) -> list[ExactDocument]:
        with self.lock:
            return [d for d in self.documents.values() if d.Body == body]

    def files_of(self, doc_id: str) -> dict[str, list[bytes]]:
        with self.lock:
            out: dict[str, list[bytes]] = {}
            for a in self.attachments.values():
                if a.Document == doc_id:
                    out.setdefault(a.FileName, []).append(a.data)
            return out

    # -- plumbing ---------------------------------------------------------------------------------------
    @staticmethod
    def _odata_error(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
        return Response.json({"error": {"code": "", "message": {"lang": "", "value": text}}}, status, headers)

    def _dispatch(self, req: Request) -> Response:
        if not req.path.startswith("/api/v1/"):
            return super()._dispatch(req)  # the token endpoints
        header = req.headers.get("authorization", "")
        if not (header.lower().startswith("bearer ") and self.live(header[7:])):
            return self._odata_error(401, "Unauthorized", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        m = re.match(r"^/api/v1/(\d+)/", req.path)
        division = int(m.group(1)) if m else 0
        if m and division not in self.divisions:
            return self._odata_error(403, f"Forbidden: no access to division {division}")
        limited = self._count(division)
        if isinstance(limited, Response):
            return limited
        if len(req.body) > MAX_BODY:
            response = self._odata_error(413, "Request body too large")
        elif "application/json" not in req.headers.get("accept", ""):
            response = Response(200, {"Content-Type": "application/atom+xml;type=feed;charset=utf-8"},
                                b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"/>')
        else:
            response = super()._dispatch(req)
        response.headers.update(limited)
        return response

    def _count(self, division: int) -> dict[str, str] | Response:
        now = time.time()
        n = int(now // self.window)
        midnight = (math.floor(now / 86400) + 1) * 86400
        reset_minute = str(int((n + 1) * self.window * 1000))
        with self.lock:
            minute_left = self.minutely - self.used[(division, n)]
            day_left = self.daily - self.used_today[division]
            if day_left <= 0:
                self.refused += 1
                return self._odata_error(429, "API rate limit exceeded: daily limit", {
                    "X-RateLimit-Limit": str(self.daily), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(midnight * 1000)})
            if minute_left <= 0:
                self.refused += 1
                return self._odata_error(429, "API rate limit exceeded: minutely limit", {
                    "X-RateLimit-Minutely-Limit": str(self.minutely), "X-RateLimit-Minutely-Remaining": "0",
                    "X-RateLimit-Minutely-Reset": reset_minute})
            self.used[(division, n)] += 1
            self.used_today[division] += 1
        return {"X-RateLimit-Limit": str(self.daily), "X-RateLimit-Remaining": str(day_left - 1),
                "X-RateLimit-Reset": str(midnight * 1000), "X-RateLimit-Minutely-Limit": str(self.minutely),
                "X-RateLimit-Minutely-Remaining": str(minute_left - 1), "X-RateLimit-Minutely-Reset": reset_minute}

    @staticmethod
    def _results(rows: list[dict], select: str | None) -> Response:
        if select:
            keep = [s.strip() for s in select.split(",")]
            rows = [{k: r.get(k) for k in keep} for r in rows]
        return Response.json({"d": {"results": rows}})

    # -- endpoints --------------------------------------------------------------------------------------
    def _me(self, req: Request) -> Response:
        return self._results([{"CurrentDivision": sorted(self.divisions)[0], "FullName": "Docroute Test",
                               "UserName": "docroute@example.test"}], req.arg("$select"))

    def _list_documents(self, req: Request, division: str) -> Response:
        flt = req.arg("$filter")
        m = FILTER_BODY.match(flt or "")
        if m is None:
            return self._odata_error(400, f"$filter is required and must be Body eq '...' here (got {flt!r})")
        wanted = m.group("v").replace("''", "'")
        with self.lock:
            rows = [{"ID": d.ID, "Subject": d.Subject, "Body": d.Body, "Type": d.Type, "Division": d.Division}
                    for d in self.documents.values() if d.Division == int(division) and d.Body == wanted]
        return self._results(rows, req.arg("$select"))

    def _create_document(self, req: Request, division: str) -> Response:
        try:
            body = req.json()
        except json.JSONDecodeError:
            return self._odata_error(400, "The request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("Type"), int) or body["Type"] not in self.types:
            return self._odata_error(400, f"Type is required and must be one of {sorted(self.types)}")
        unknown = set(body) - {"Subject", "Type", "Body", "Account", "DocumentDate"}
        if unknown:
            return self._odata_error(400, f"unknown properties {sorted(unknown)}")
        if body.get("Account") is not None and not re.fullmatch(r"[0-9a-fA-F-]{36}", str(body["Account"])):
            return self._odata_error(400, "Account must be a GUID")
        doc = ExactDocument(str(uuid.uuid4()), int(division), str(body.get("Subject") or ""), body["Type"],
                            str(body.get("Body") or ""), body.get("Account"), body.get("DocumentDate"))
        with self.lock:
            self.documents[doc.ID] = doc
        return Response.json({"d": {"ID": doc.ID, "Subject": doc.Subject, "Type": doc.Type, "Body": doc.Body,
                                    "Division": doc.Division}}, 201)

    def _list_attachments(self, req: Request, division: str) -> Response:
        m = FILTER_DOCUMENT.match(req.arg("$filter") or "")
        if m is None:
            return self._odata_error(400, "$filter is required and must be Document eq guid'...' here")
        with self.lock:
            rows = [{"ID": a.ID, "Document": a.Document, "FileName": a.FileName, "FileSize": float(len(a.data)),
                     "Attachment": None} for a in self.attachments.values()
                    if a.Document == m.group("v") and self.documents[a.Document].Division == int(division)]
        return self._results(rows, req.arg("$select"))

    def _create_attachment(self, req: Request, division: str) -> Response:
        try:
            body = req.json()
            data = base64.b64decode(body["Attachment"], validate=True)
        except (json.JSONDecodeError, KeyError, TypeError, binascii.Error):
            return self._odata_error(400, "Attachment must be base64 in a JSON body")
        with self.lock:
            doc = self.documents.get(str(body.get("Document")))
            if doc is None or doc.Division != int(division):
                return self._odata_error(400, "Document does not exist in this division")
            if not body.get("FileName"):
                return self._odata_error(400, "FileName is required")
            att = ExactAttachment(str(uuid.uuid4()), doc.ID, str(body["FileName"]), data)
            self.attachments[att.ID] = att
        return Response.json({"d": {"ID": att.ID, "Document": att.Document, "FileName": att.FileName,
                                    "FileSize": float(len(data))}}, 201)


def exact_fields(fake: ExactAPI) -> dict[str, Any]:
    """What an ExactOnlineConnection needs to use the fake: its site, a client and a refresh token (as after
    `docroute connect`)."""
    tokens = fake.issue()
    return {"client_id": fake.client_id, "client_secret": fake.client_secret, "refresh_token": tokens["refresh_token"],
            "base_url": fake.url, "token_url": f"{fake.url}/token", "authorize_url": f"{fake.url}/authorize",
            "request_timeout": 10}
