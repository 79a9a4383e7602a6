"""A local GetMyInvoices accounts API v3 (../shared/reference/sources.md section 1), over https.

What it implements, as the reference says (and, where it says [?], as docs/api-sources.md decides):

- Every route under /accounts/v3; X-API-KEY on every call (unknown key: 403 {code 403, "API Key does not
  exist"}; a blocked one: 403 code 407); Content-Type: application/json on every call, else 415;
  parameters in the query string or the JSON body (arrays as name[]=a&name[]=b).
- GET /apiStatus, GET /account {name, accountId, timezone}.
- GET /documents: companyFilter, archivedFilter (0 not archived, 1 any, 2 archived; default 1),
  documentTypeFilter, tagFilter[] (a document with any of them), startDateFilter/endDateFilter
  (document date, Y-m-d, else 422 code 104), updatedOrNewSinceFilter (Y-m-d H:i:s in the account's
  zone, else 422 code 140: created or updated after it), documentUidStartFilter, perPage (1-500),
  pageNumber; newest first (documentUid descending); {records, totalCount, maxPages, maxAmount,
  offset}; records as a list, or an object keyed by uid (`records_as="object"`); booleans as
  true/false, or 0/1 (`booleans="int"`). Records carry no modified time.
- GET /documents/{uid}: {meta_data (+ attachments count, workflowDetails unless documentApproval=false),
  fileContent (base64; not with includeDocument=false)}; unknown uid: 422 code 106. PHP-style
  escaped slashes ("\\/") in the JSON, as json_encode writes them.
- workflowDetails {currentWorkflow, currentWorkflowStep, isCompleted, completedAt}: completedAt
  ("Y-m-d H:i:s") is docroute's assumption (`send_completed_at=False` leaves it out). Completing a
  workflow is not an update (updatedOrNewSinceFilter does not see it): the worst case.
- PUT /documents/{uid}: isArchived (0/1, else 422 code 133), tags (replaced, not merged); a locked
  document: 422 code 147; nothing to update: 422 code 136. Updates count as updates.
- POST /documents (fileName, documentType, fileContent: 422 code 146 for a bad type),
  GET /documents/{uid}/attachments, GET /documents/{uid}/attachments/{attachmentUid}.
- Rate limits: `per_minute` calls per 60 s (a sliding window; None: off) answered 429 {code 429,
  "Per-minute API limit reached"} with Retry-After; `daily` calls a day answered 429 "Daily API
  limit reached" with Retry-After to midnight in the account's zone.

Faults on demand, besides FakeAPI.fault (a 429 storm: `storm()`): `expire_key()`, `lock(uid)`,
`corrupt(uid)` (fileContent that is not base64), `delete(uid)`, `after(method, path, action)` (run
an action after a matching request: a document deleted between list and fetch, a page that changes
while it is being read: `add_while_listing()`).

`start_demo(docs)` starts a seeded server on a free port and returns (url, api key, server).
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
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakes.base import FakeAPI, Fault, Request, Response

PREFIX = "/accounts/v3"
TYPES = ("INCOMING_INVOICE", "RECEIPT", "PAYMENT_RECEIPT", "EXPENSE_REIMBURSEMENT", "SALES_INVOICE", "CREDIT_NOTE",
         "STATEMENT", "DELIVERY_NOTE", "ORDER_CONFIRMATION", "PAYROLL", "COMPANY_REGISTRATION_DOCUMENT", "MISC",
         "TRAVEL_EXPENSES", "REMINDER")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Attachment:
    uid: int
    name: str
    data: bytes
    attached_at: datetime


@dataclass
class Doc:
    uid: Any  # an int as GetMyInvoices gives; tests may choose a name (the conformance suite's ids)
    document_type: str
    filename: str | None
    data: bytes
    created: datetime
    updated: datetime
    fields: dict[str, Any] = field(default_factory=dict)  # documentNumber, companyName, grossAmount, ... as GetMyInvoices names them
    tags: list[str] = field(default_factory=list)
    archived: bool = False
    locked: bool = False
    workflow: dict[str, Any] | None = None  # {"name", "step", "completed": bool, "completed_at": datetime | None}
    attachments: list[Attachment] = field(default_factory=list)
    corrupt: bool = False


def _error(status: int, code: int, detail: str, headers: dict | None = None) -> Response:
    return Response.json({"success": False, "code": code, "error_code": code, "detail": detail}, status, headers)


class GetMyInvoicesAPI(FakeAPI):
    def __init__(self, *, api_key: str | None = None, tls: bool = True, per_minute: int | None = None,
                 daily: int | None = None, zone: str = "Europe/Berlin", records_as: str = "list", booleans: str = "bool",
                 send_completed_at: bool = True, name: str = "fake GetMyInvoices"):
        ctx = None
        self.ca_bundle: str | None = None
        if tls:
            from tests.fakes.cloud_common import tls as make_tls

            ctx, self.ca_bundle = make_tls()
        super().__init__(tls=ctx, name=name)
        self.api_key = api_key or f"gmi-{secrets.token_urlsafe(18)}"
        self.keys: dict[str, str] = {self.api_key: "ok"}  # key -> ok | blocked
        self.zone = ZoneInfo(zone)
        self.per_minute, self.daily = per_minute, daily
        self.records_as, self.booleans, self.send_completed_at = records_as, booleans, send_completed_at
        self.docs: dict[str, Doc] = {}
        self._next_uid = 1000
        self._next_att = 1
        self._calls: deque[float] = deque()  # accepted calls of the last 60 s (sliding window)
        self.daily_used = 0
        self.accepted = 0
        self.refused_429 = 0
        self.hooks: list[list] = []  # [method, regex, action, times]
        self.route("GET", f"{PREFIX}/apiStatus")(lambda req: Response.json({"success": True}))
        self.route("GET", f"{PREFIX}/account")(self._account)
        self.route("GET", f"{PREFIX}/documents")(self._list)
        self.route("POST", f"{PREFIX}/documents")(self._upload)
        self.route("GET", f"{PREFIX}/documents/(?P<uid>[^/]+)")(self._get)
        self.route("PUT", f"{PREFIX}/documents/(?P<uid>[^/]+)")(self._put)
        self.route("GET", f"{PREFIX}/documents/(?P<uid>[^/]+)/attachments")(self._attachments)
        self.route("GET", f"{PREFIX}/documents/(?P<uid>[^/]+)/attachments/(?P<att>[^/]+)")(self._attachment)

    @property
    def base_url(self) -> str:
        return f"{self.url}{PREFIX}"

    # -- test helpers -----------------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def add(self, *, uid: Any = None, document_type: str = "INCOMING_INVOICE", data: bytes = b"%PDF-1.4\n%%EOF\n",
            filename: str | None = None, fields: dict[str, Any] | None = None, tags: list[str] | None = None,
            approved: bool | None = True, completed_at: datetime | None = None, created: datetime | None = None,
            attachments: list[tuple[str, bytes]] | None = None) -> Doc:
        """Add (or replace: an update) a document. approved None: no workflow; False: a workflow not completed."""
        with self.lock:
            if uid is None:
                self._next_uid += 1
                uid = self._next_uid
            now = self.now()
            old = self.docs.get(str(uid))
            workflow = None
            if approved is not None:
                workflow = {"name": "Freigabe", "step": "Buchhaltung" if not approved else "Fertig", "completed": bool(approved),
                            "completed_at": (completed_at or now) if approved else None}
            doc = Doc(uid, document_type, filename if filename is not None else f"{uid}.pdf", data,
                      old.created if old else (created or now), now, dict(fields or {}), list(tags or []), workflow=workflow)
            for name, content in attachments or []:
                doc.attachments.append(Attachment(self._next_att, name, content, now))
                self._next_att += 1
            if old is not None and (old.data, old.fields, old.tags, old.filename, [a.data for a in old.attachments],
                                    old.document_type) == (doc.data, doc.fields, doc.tags, doc.filename,
                                                           [a.data for a in doc.attachments], doc.document_type):
                old.workflow = workflow  # only the approval changed: not an update
                return old
            if old is not None:
                doc.archived, doc.locked = old.archived, old.locked
            self.docs[str(uid)] = doc
            return doc

    def complete(self, uid: Any, at: datetime | None = None) -> None:
        """The document's workflow completes (an approval: not an update, as docroute assumes the worst)."""
        with self.lock:
            doc = self.docs[str(uid)]
            doc.workflow = {"name": "Freigabe", "step": "Fertig", "completed": True, "completed_at": at or self.now()}

    def delete(self, uid: Any) -> None:
        with self.lock:
            self.docs.pop(str(uid), None)

    def lock_document(self, uid: Any) -> None:
        with self.lock:
            self.docs[str(uid)].locked = True

    def corrupt(self, uid: Any) -> None:
        with self.lock:
            self.docs[str(uid)].corrupt = True

    def expire_key(self, key: str | None = None) -> None:
        with self.lock:
            self.keys.pop(key or self.api_key, None)

    def block_key(self, key: str | None = None) -> None:
        with self.lock:
            self.keys[key or self.api_key] = "blocked"

    def storm(self, times: int = 5, retry_after: int = 1) -> None:
        """The next `times` calls answer 429 with Retry-After."""
        body = json.dumps({"success": False, "code": 429, "detail": "Per-minute API limit reached"}).encode()
        self.fault(Fault(status=429, headers={"Retry-After": str(retry_after), "Content-Type": "application/json"}, body=body,
                         times=times))

    def after(self, method: str, path: str, action: Callable[[Request], None], times: int = 1) -> None:
        """Run `action` after the next `times` requests of `method` whose path matches `path` were answered."""
        with self.lock:
            self.hooks.append([method, re.compile(path), action, times])

    def add_while_listing(self, count: int = 3, **kw: Any) -> None:
        """After the first listing page is served, `count` new documents arrive (they come first: the pages shift)."""
        self.after("GET", f"^{PREFIX}/documents$", lambda req: [self.add(**kw) for _ in range(count)])

    def doc(self, uid: Any) -> Doc | None:
        return self.docs.get(str(uid))

    # -- plumbing ---------------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> Response:
        key = req.headers.get("x-api-key", "")
        with self.lock:
            state = self.keys.get(key)
        if state is None:
            return _error(403, 403, "API Key does not exist")
        if state == "blocked":
            return _error(403, 407, "API Key is blocked")
        if not req.headers.get("content-type", "").split(";")[0].strip() == "application/json":
            return Response.json({"code": 415, "detail": "Request content-type is not valid."}, 415)
        limited = self._limit()
        if limited is not None:
            return limited
        response = super()._dispatch(req)
        with self.lock:
            due = [h for h in self.hooks if h[0] == req.method and h[1].search(req.path) and h[3] > 0]
            for h in due:
                h[3] -= 1
            self.hooks = [h for h in self.hooks if h[3] > 0]
        for h in due:
            h[2](req)
        return response

    def _limit(self) -> Response | None:
        with self.lock:
            now = time.time()
            if self.daily is not None and self.daily_used >= self.daily:
                local = datetime.now(self.zone)
                midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), self.zone)
                self.refused_429 += 1
                return _error(429, 429, "Daily API limit reached", {"Retry-After": str(int(midnight.timestamp() - now) + 1)})
            if self.per_minute is not None:
                while self._calls and self._calls[0] <= now - 60:
                    self._calls.popleft()
                if len(self._calls) >= self.per_minute:
                    self.refused_429 += 1
                    wait = max(1, int(self._calls[0] + 60 - now) + 1)
                    return _error(429, 429, "Per-minute API limit reached", {"Retry-After": str(wait)})
                self._calls.append(now)
            self.daily_used += 1
            self.accepted += 1
        return None

    def _params(self, req: Request) -> dict[str, Any]:
        """Parameters from the query string and the JSON body (arrays as name[])."""
        out: dict[str, Any] = {}
        for k, values in req.query.items():
            if k.endswith("[]"):
                out[k[:-2]] = list(values)
            else:
                out[k] = values[0]
        if req.body:
            try:
                body = json.loads(req.body)
            except ValueError:
                body = None
            if isinstance(body, dict):
                out.update(body)
        return out

    def _b(self, value: bool) -> Any:
        return int(value) if self.booleans == "int" else bool(value)

    def _stamp(self, when: datetime | None) -> str | None:
        return when.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S") if when else None

    def _record(self, d: Doc) -> dict[str, Any]:
        rec = {
            "documentUid": d.uid, "documentType": d.document_type, "createdAt": d.created.astimezone(self.zone).date().isoformat(),
            "dateTimeCreatedAt": self._stamp(d.created), "filename": d.filename, "fileSize": len(d.data) if d.filename else 0,
            "tags": list(d.tags), "isArchived": self._b(d.archived), "isLocked": self._b(d.locked), "isOcrCompleted": 1,
            "companyUid": None, "companyName": None, "documentNumber": None, "documentDate": None, "documentDueDate": None,
            "netAmount": None, "vat": None, "grossAmount": None, "currency": None, "note": None, "source": "api",
        }
        rec.update(d.fields)
        return rec

    @staticmethod
    def _json(data: Any) -> Response:
        body = json.dumps(data).replace("/", "\\/").encode()  # PHP's json_encode escapes slashes
        return Response(200, {"Content-Type": "application/json"}, body)

    # -- routes -----------------------------------------------------------------------------------------
    def _account(self, req: Request) -> Response:
        return self._json({"name": "Acme Testkonto", "accountId": "G-20707-0", "profileImage": None, "organization": "Acme GmbH",
                           "email": "api@acme.example", "apiKeyType": "full", "currency": "EUR", "timezone": str(self.zone)})

    def _list(self, req: Request) -> Response:
        p = self._params(req)
        try:
            per_page = int(p.get("perPage", 500))
            page = int(p.get("pageNumber", 1))
            archived = int(p.get("archivedFilter", 1))
        except ValueError:
            return _error(400, 400, "Invalid parameters")
        if not 1 <= per_page <= 500 or page < 1 or archived not in (0, 1, 2):
            return _error(400, 400, "Invalid parameters")
        since = p.get("updatedOrNewSinceFilter")
        if since is not None and not STAMP.match(str(since)):
            return _error(422, 140, "updatedOrNewSinceFilter must have the format Y-m-d H:i:s")
        for name in ("startDateFilter", "endDateFilter"):
            if p.get(name) is not None and not DAY.match(str(p[name])):
                return _error(422, 104, f"{name} must have the format Y-m-d")
        since_at = datetime.strptime(since, "%Y-%m-%d %H:%M:%S").replace(tzinfo=self.zone) if since else None
        with self.lock:
            docs = list(self.docs.values())
        out = []
        for d in docs:
            if archived == 0 and d.archived or archived == 2 and not d.archived:
                continue
            if p.get("documentTypeFilter") and d.document_type != p["documentTypeFilter"]:
                continue
            tags = p.get("tagFilter")
            if tags and not set([tags] if isinstance(tags, str) else tags) & set(d.tags):
                continue
            if since_at is not None and d.updated < since_at and d.created < since_at:
                continue
            day = d.fields.get("documentDate")
            if p.get("startDateFilter") and (not day or day < p["startDateFilter"]):
                continue
            if p.get("endDateFilter") and (not day or day > p["endDateFilter"]):
                continue
            if p.get("documentUidStartFilter") is not None:
                try:
                    if int(d.uid) <= int(p["documentUidStartFilter"]):
                        continue
                except (TypeError, ValueError):
                    continue
            out.append(d)
        out.sort(key=lambda d: (isinstance(d.uid, int), d.uid if isinstance(d.uid, int) else 0, str(d.uid)), reverse=True)
        total = len(out)
        chunk = out[(page - 1) * per_page : page * per_page]
        records: Any = [self._record(d) for d in chunk]
        if self.records_as == "object":
            records = {str(r["documentUid"]): r for r in records}
        return self._json({"records": records, "totalCount": total, "maxPages": -(-total // per_page),
                           "maxAmount": per_page, "offset": (page - 1) * per_page})

    def _find(self, uid: str) -> Doc | None:
        with self.lock:
            return self.docs.get(uid)

    def _get(self, req: Request, uid: str) -> Response:
        d = self._find(uid)
        if d is None:
            return _error(422, 106, "Invalid document UID")
        p = self._params(req)
        meta = {**self._record(d), "sourceUser": "api", "attachments": len(d.attachments), "lineItems": [],
                "transactions": {"totalCount": 0, "records": []}}
        if str(p.get("documentApproval", "true")).lower() not in ("false", "0"):
            w = d.workflow
            meta["workflowDetails"] = {
                "currentWorkflow": {"name": w["name"], "id": 7} if w else None,
                "currentWorkflowStep": {"name": w["step"], "id": 2} if w else None,
                "isCompleted": self._b(bool(w and w["completed"])),
                **({"completedAt": self._stamp(w["completed_at"]) if w else None} if self.send_completed_at else {}),
            }
        out: dict[str, Any] = {"meta_data": meta}
        if str(p.get("includeDocument", "true")).lower() not in ("false", "0"):
            out["fileContent"] = self._content(d.data, d.corrupt)
        return self._json(out)

    @staticmethod
    def _content(data: bytes, corrupt: bool) -> str:
        text = base64.b64encode(data).decode()
        return text[: len(text) // 2] + "!?*" + text[len(text) // 2 :] if corrupt else text

    def _put(self, req: Request, uid: str) -> Response:
        d = self._find(uid)
        if d is None:
            return _error(422, 106, "Invalid document UID")
        p = self._params(req)
        changes = {k: v for k, v in p.items() if k in ("isArchived", "tags", "note", "documentNumber", "documentType")}
        if not changes:
            return _error(422, 136, "No metadata to update")
        if d.locked:
            return _error(422, 147, "Document is locked")
        with self.lock:
            if "isArchived" in changes:
                if changes["isArchived"] not in (0, 1, "0", "1"):
                    return _error(422, 133, "isArchived must be 0 or 1")
                d.archived = str(changes["isArchived"]) == "1"
            if "tags" in changes:
                d.tags = [str(t) for t in changes["tags"]]  # replaced
            if "documentType" in changes:
                if changes["documentType"] not in TYPES:
                    return _error(422, 146, "Invalid documentType")
                d.document_type = changes["documentType"]
            for k in ("note", "documentNumber"):
                if k in changes:
                    d.fields[k] = changes[k]
            d.updated = self.now()
        return self._json({"success": True, "documentUid": d.uid})

    def _upload(self, req: Request) -> Response:
        p = self._params(req)
        if not p.get("fileName") or not p.get("fileContent") or not p.get("documentType"):
            return _error(422, 101, "fileName, documentType and fileContent are required")
        if p["documentType"] not in TYPES:
            return _error(422, 146, "Invalid documentType")
        try:
            data = base64.b64decode(p["fileContent"], validate=True)
        except ValueError:
            return _error(422, 102, "fileContent is not base64")
        fields = {k: p[k] for k in ("documentNumber", "documentDate", "documentDueDate", "netAmount", "grossAmount",
                                    "currency", "note") if k in p}
        doc = self.add(document_type=p["documentType"], data=data, filename=p["fileName"], fields=fields,
                       tags=[str(t) for t in p.get("tags") or []], approved=None)
        return self._json({"success": True, "documentUid": doc.uid})

    def _attachments(self, req: Request, uid: str) -> Response:
        d = self._find(uid)
        if d is None:
            return _error(422, 106, "Invalid document UID")
        return self._json({"totalCount": len(d.attachments), "records": [
            {"attachmentUid": a.uid, "fileName": a.name, "description": None, "attachedAt": self._stamp(a.attached_at)}
            for a in d.attachments]})

    def _attachment(self, req: Request, uid: str, att: str) -> Response:
        d = self._find(uid)
        if d is None:
            return _error(422, 106, "Invalid document UID")
        a = next((a for a in d.attachments if str(a.uid) == att), None)
        if a is None:
            return _error(422, 150, "Invalid attachment UID")
        return self._json({"meta_data": {"attachmentUid": a.uid, "filename": a.name, "description": None,
                                         "attachedAt": self._stamp(a.attached_at)},
                           "fileContent": self._content(a.data, d.corrupt)})


def ubl(number: str, total: str = "121.00") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">'
            f"<cbc:ID xmlns:cbc=\"urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2\">{number}</cbc:ID>"
            f"<LegalMonetaryTotal><PayableAmount currencyID=\"EUR\">{total}</PayableAmount></LegalMonetaryTotal></Invoice>").encode()


def seed(api: GetMyInvoicesAPI, docs: int = 6, size: int = 20_000, days: int = 3) -> list[Doc]:
    """Documents of a GetMyInvoices account: invoices and credit notes from a few suppliers, approved
    over the last `days` (their workflow completed), one with its UBL XML as an attachment, one still
    waiting for approval."""
    from tasks.sources.seed import SUPPLIERS, pdf_bytes

    out = []
    now = datetime.now(timezone.utc)
    for i in range(docs):
        _, supplier, vat = SUPPLIERS[i % len(SUPPLIERS)]
        number = f"GMI-{2001 + i}"
        kind = "CREDIT_NOTE" if i % 5 == 4 else "INCOMING_INVOICE"
        issued = (now - timedelta(days=days + 5 - i % 5)).date()
        total = f"{100 + 17.5 * i:.2f}"
        out.append(api.add(
            document_type=kind, data=pdf_bytes(f"{kind} {number} {supplier}", size), filename=f"{number}.pdf",
            fields={"documentNumber": number, "companyName": supplier, "vat_id": vat, "documentDate": issued.isoformat(),
                    "documentDueDate": (issued + timedelta(days=30)).isoformat(), "grossAmount": total, "currency": "EUR"},
            tags=["eingang"], approved=i != docs - 1 or docs == 1, completed_at=now - timedelta(hours=days * 24 * (docs - i) / max(docs, 1)),
            attachments=[(f"{number}.xml", ubl(number, total))] if i == 1 else None,
        ))
    return out


def start_demo(docs: int = 6, size: int = 20_000, tls: bool = False) -> tuple[str, str, GetMyInvoicesAPI]:
    """A seeded GetMyInvoices-compatible server on a free port of 127.0.0.1: (base URL for the block's
    base_url, its API key, the server: stop() it when done). Plain http by default, so a block needs no CA."""
    api = GetMyInvoicesAPI(tls=tls).start()
    seed(api, docs, size)
    return api.base_url, api.api_key, api

