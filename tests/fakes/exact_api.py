"""A local Exact Online (../shared/reference/sources.md section 2, connectors.md 5): the OAuth2 server and
the REST API of its divisions, on one https server, as Exact's regional site serves both.

- /api/oauth2/auth and /api/oauth2/token: tests/fakes/oauth_server.py's authorization code and
  refresh_token grants, client authentication in the form body; refresh tokens rotate on every use
  and a spent one is invalid_grant and revokes the whole authorisation (`revoke_family_on_reuse`);
  access tokens last `expires_in` (600 s), sent as a string ("600") as Exact does.
- /api/v1/current/Me: {"d": {"results": [{CurrentDivision, FullName, UserName}]}}.
- /api/v1/{division}/sync/Documents/Documents, sync/Documents/DocumentAttachments, sync/Deleted:
  $select required (400 otherwise), $filter only "Timestamp gt {n}L" (400 otherwise), ordered by
  Timestamp, `page_size` rows a page (1000) and __next (an absolute URL with $skiptoken) while more.
  Timestamps are one rowversion counter for the whole server: every change of a row takes the next.
- /api/v1/{division}/bulk/Documents/Documents and bulk/Documents/DocumentAttachments: $select and a
  $filter required: "ID eq guid'..'" / "Document eq guid'..'" joined by "or", or "Modified ge
  datetime'..' and Modified le datetime'..'" (Dutch local time, no zone); 1000 a page, __next with
  $skiptoken=guid'<last ID>' (keyset: a row deleted meanwhile shifts nothing).
- /docs/SysAttachment.aspx?ID=..&_Division_=..&Download=1 with the bearer token: the bytes (404 for
  an attachment gone); without Download=1 an HTML page.
- Accept: application/json, else an Atom XML answer; a bearer token that is not live: 401; a
  division the login has no access to: 403. Errors as {"error": {"code", "message": {"lang", "value"}}}.
- Dates as "/Date(ms)/", milliseconds of Dutch local time (not UTC).
- Rate limits per division: `minutely` calls per clock minute and `daily` calls per UTC day, said in
  X-RateLimit-Minutely-Limit/Remaining/Reset and X-RateLimit-Limit/Remaining/Reset (epoch ms; the
  "minute" is `minute_seconds` long, shorter in tests); beyond
  them 429 (on a minutely 429 only the minutely headers). `refused` counts the 429s answered.

Faults: FakeAPI.fault (a 429 storm: `storm()`), `delete_document()` (and between a listing and a
download), `reuse` of a refresh token (OAuthServer: a spent one is refused), `after()`.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from tests.fakes.base import Fault, Request, Response
from tests.fakes.cloud_common import bearer
from tests.fakes.oauth_server import OAuthServer

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
SYNC = {"Documents/Documents": "documents", "Documents/DocumentAttachments": "attachments", "Deleted": "deleted"}
BULK = {"Documents/Documents": "documents", "Documents/DocumentAttachments": "attachments"}


def exact_date(when: datetime | date | None) -> str | None:
    """'/Date(ms)/' with the milliseconds of Dutch local time, as Exact writes dates."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        wall = datetime(when.year, when.month, when.day)
    else:
        wall = when.astimezone(AMSTERDAM).replace(tzinfo=None)
    return f"/Date({int((wall - datetime(1970, 1, 1)).total_seconds() * 1000)})/"


def odata_error(status: int, text: str, headers: dict | None = None) -> Response:
    return Response.json({"error": {"code": "", "message": {"lang": "", "value": text}}}, status, headers)


@dataclass
class Row:
    values: dict[str, Any]
    timestamp: int
    data: bytes = b""  # an attachment's content


@dataclass
class Division:
    number: int
    documents: dict[str, Row] = field(default_factory=dict)
    attachments: dict[str, Row] = field(default_factory=dict)
    deleted: list[Row] = field(default_factory=list)


class ExactAPI(OAuthServer):
    def __init__(self, *, divisions: tuple[int, ...] = (1001, 1002), minutely: int = 60, daily: int = 5000,
                 page_size: int = 1000, expires_in: float = 600, tls: bool = True, minute_seconds: float = 60,
                 name: str = "fake Exact Online"):
        from tests.fakes.cloud_common import tls as make_tls

        super().__init__(client_secret=f"exact-secret-{uuid.uuid4().hex[:12]}", expires_in=expires_in,
                         redirect_uris=("http://127.0.0.1:8765/callback",), name=name)
        self.ca_bundle: str | None = None
        if tls:
            self.tls, self.ca_bundle = make_tls()
        self.divisions = {d: Division(d) for d in divisions}
        self.current = divisions[0]
        self.minutely, self.daily, self.page_size = minutely, daily, page_size
        self.minute_seconds = minute_seconds  # the "minute" of the minutely budget (shorter in tests)
        self.rowversion = 100
        self.used: Counter[tuple[int | str, int]] = Counter()  # (division, minute) -> calls
        self.used_daily: Counter[tuple[int | str, int]] = Counter()  # (division, day) -> calls
        self.refused = 0
        self.api_calls = 0
        self.deleted_allowed = True  # False: the app lacks "Retrieve deleted records through web services" (403)
        self.hooks: list[list] = []
        self.route("GET", "/api/oauth2/auth")(self._authorize)
        self.route("POST", "/api/oauth2/token")(self._token)
        self.route("GET", "/api/v1/current/Me")(self._me_exact)
        self.route("GET", r"/api/v1/(?P<division>\d+)/sync/(?P<entity>.+)")(self._sync)
        self.route("GET", r"/api/v1/(?P<division>\d+)/bulk/(?P<entity>.+)")(self._bulk)
        self.route("GET", "/docs/SysAttachment.aspx")(self._download)

    @property
    def base_url(self) -> str:
        return self.url

    # -- test helpers -----------------------------------------------------------------------------------
    def _next(self) -> int:
        self.rowversion += 1
        return self.rowversion

    def put_document(self, division: int, *, id: str | None = None, type: int = 20, subject: str = "",
                     account_name: str | None = None, account_code: str | None = None, amount: float | None = None,
                     currency: str | None = None, document_date: date | None = None, status: int = 50,
                     entry_id: str | None = None, sales_invoice_number: str | None = None, modified: datetime | None = None,
                     attachments: list[tuple[str, bytes]] | None = None, keep_attachments: bool = False) -> str:
        """Add or replace a document (its attachments replaced unless keep_attachments); returns its ID."""
        with self.lock:
            div = self.divisions[division]
            doc_id = id or str(uuid.uuid4())
            now = datetime.now(timezone.utc)
            old = div.documents.get(doc_id)
            values = {
                "ID": doc_id, "Division": division, "Type": type, "TypeDescription": {20: "Purchase invoice", 10: "Sales invoice"}.get(type, f"Type {type}"),
                "Subject": subject, "Account": str(uuid.uuid4()) if account_name else None,
                "AccountCode": f"{account_code:>18}" if account_code else None, "AccountName": account_name,
                "DocumentDate": exact_date(document_date), "AmountFC": amount, "Currency": currency,
                "Created": old.values["Created"] if old else exact_date(now), "Modified": exact_date(modified or now),
                "ProposedEntryStatus": status, "EntryStatusDescription": {50: "Processed", 20: "Open"}.get(status),
                "FinancialTransactionEntryID": entry_id, "SalesInvoiceNumber": sales_invoice_number, "SalesOrderNumber": None,
                "DocumentViewUrl": f"{self.url}/docs/DocView.aspx?DocumentID={doc_id}", "HID": 1 + len(div.documents),
            }
            div.documents[doc_id] = Row(values, self._next())
            if attachments is not None or not keep_attachments:
                if not keep_attachments:
                    for att_id in [a for a, r in div.attachments.items() if r.values["Document"] == doc_id]:
                        self._delete_row(div, att_id, 4)
                for name, data in attachments or []:
                    self.add_attachment(division, doc_id, name, data)
            return doc_id

    def add_attachment(self, division: int, doc_id: str, name: str, data: bytes) -> str:
        with self.lock:
            div = self.divisions[division]
            att_id = str(uuid.uuid4())
            url = f"{self.url}/docs/SysAttachment.aspx?ID={att_id}&_Division_={division}"
            div.attachments[att_id] = Row({"ID": att_id, "Document": doc_id, "FileName": name, "FileSize": float(len(data)),
                                           "Attachment": None, "Url": url}, self._next(), data)
            return att_id

    def _delete_row(self, div: Division, key: str, entity_type: int) -> None:
        table = div.documents if entity_type == 6 else div.attachments
        table.pop(key, None)
        div.deleted.append(Row({"ID": str(uuid.uuid4()), "EntityKey": key, "EntityType": entity_type, "Division": div.number,
                                "DeletedBy": str(uuid.uuid4()), "DeletedDate": exact_date(datetime.now(timezone.utc))}, self._next()))

    def delete_document(self, division: int, doc_id: str) -> None:
        with self.lock:
            div = self.divisions[division]
            for att_id in [a for a, r in div.attachments.items() if r.values["Document"] == doc_id]:
                self._delete_row(div, att_id, 4)
            self._delete_row(div, doc_id, 6)

    def set_status(self, division: int, doc_id: str, status: int, modified: datetime | None = None) -> None:
        """An edit of the document (approval, booking): its Timestamp moves."""
        with self.lock:
            row = self.divisions[division].documents[doc_id]
            row.values["ProposedEntryStatus"] = status
            row.values["Modified"] = exact_date(modified or datetime.now(timezone.utc))
            row.timestamp = self._next()

    def storm(self, times: int = 5, retry_after: int | None = None) -> None:
        """The next `times` API calls answer 429 (no Retry-After unless given: Exact says when in the headers)."""
        reset = int((math.floor(time.time() / self.minute_seconds) + 1) * self.minute_seconds * 1000)
        headers = {"X-RateLimit-Minutely-Limit": str(self.minutely), "X-RateLimit-Minutely-Remaining": "0",
                   "X-RateLimit-Minutely-Reset": str(reset), "Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        body = b'{"error":{"code":"","message":{"lang":"","value":"Too many requests"}}}'
        self.fault(Fault(status=429, headers=headers, body=body, times=times, match=r"^GET /(api/v1/\d+|docs)/"))

    def after(self, method: str, path: str, action: Callable[[Request], None], times: int = 1) -> None:
        with self.lock:
            self.hooks.append([method, re.compile(path), action, times])

    def use_up_daily(self, division: int, left: int = 0) -> None:
        """The division's daily budget has only `left` calls."""
        with self.lock:
            self.used_daily[(division, int(time.time() // 86400))] = self.daily - left

    # -- tokens as Exact issues them ----------------------------------------------------------------------
    def _tokens(self, fam, refresh: bool) -> dict:
        out = super()._tokens(fam, refresh)
        out["expires_in"] = str(int(self.expires_in))  # Exact: digits, as a string
        return out

    # -- plumbing ---------------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> Response:
        if not (req.path.startswith("/api/v1/") or req.path.startswith("/docs/")):
            return super()._dispatch(req)  # the OAuth2 endpoints
        if not self.live(bearer(req)):
            return odata_error(401, "Unauthorized", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        m = re.match(r"^/api/v1/(\d+)/", req.path)
        division: int | str = int(m.group(1)) if m else (int(req.arg("_Division_") or 0) if req.path.startswith("/docs/") else "me")
        if isinstance(division, int) and division not in self.divisions:
            return odata_error(403, f"Forbidden: no access to division {division}")
        with self.lock:
            now = time.time()
            minute, day = int(now // self.minute_seconds), int(now // 86400)
            minute_reset = str(int((minute + 1) * self.minute_seconds * 1000))
            day_reset = str((day + 1) * 86400 * 1000)
            if self.used[(division, minute)] >= self.minutely:
                self.refused += 1
                return odata_error(429, "Too many requests: the minutely limit is reached", {
                    "X-RateLimit-Minutely-Limit": str(self.minutely), "X-RateLimit-Minutely-Remaining": "0",
                    "X-RateLimit-Minutely-Reset": minute_reset})
            if self.used_daily[(division, day)] >= self.daily:
                self.refused += 1
                return odata_error(429, "Too many requests: the daily limit is reached", {
                    "X-RateLimit-Limit": str(self.daily), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": day_reset,
                    "X-RateLimit-Minutely-Limit": str(self.minutely),
                    "X-RateLimit-Minutely-Remaining": str(self.minutely - self.used[(division, minute)]),
                    "X-RateLimit-Minutely-Reset": minute_reset})
            self.used[(division, minute)] += 1
            self.used_daily[(division, day)] += 1
            self.api_calls += 1
            headers = {
                "X-RateLimit-Limit": str(self.daily), "X-RateLimit-Remaining": str(self.daily - self.used_daily[(division, day)]),
                "X-RateLimit-Reset": day_reset, "X-RateLimit-Minutely-Limit": str(self.minutely),
                "X-RateLimit-Minutely-Remaining": str(self.minutely - self.used[(division, minute)]),
                "X-RateLimit-Minutely-Reset": minute_reset,
            }
        if req.path.startswith("/api/v1/") and "application/json" not in req.headers.get("accept", ""):
            response = Response(200, {"Content-Type": "application/atom+xml"}, b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"/>')
        else:
            response = super()._dispatch(req)
        response.headers.update(headers)
        with self.lock:
            due = [h for h in self.hooks if h[0] == req.method and h[1].search(req.path) and h[3] > 0]
            for h in due:
                h[3] -= 1
            self.hooks = [h for h in self.hooks if h[3] > 0]
        for h in due:
            h[2](req)
        return response

    def _rows(self, div: Division, table: str) -> list[Row]:
        return {"documents": list(div.documents.values()), "attachments": list(div.attachments.values()),
                "deleted": list(div.deleted)}[table]

    def _select(self, req: Request, row: Row, with_timestamp: bool) -> dict[str, Any] | Response:
        fields = [f.strip() for f in (req.arg("$select") or "").split(",") if f.strip()]
        values = {**row.values, "Timestamp": row.timestamp} if with_timestamp else row.values
        unknown = [f for f in fields if f not in values]
        if unknown:
            return odata_error(400, f"Property {unknown[0]} does not exist")
        return {f: values[f] for f in fields}

    def _page(self, req: Request, rows: list[Row], with_timestamp: bool, division: int, path: str) -> Response:
        if not req.arg("$select"):
            return odata_error(400, "$select is mandatory on this endpoint")
        token = req.arg("$skiptoken")
        if with_timestamp:  # keyset paging: by Timestamp on sync endpoints, by ID on bulk ones (robust to rows going)
            rows = [r for r in sorted(rows, key=lambda r: r.timestamp) if r.timestamp > int(token or 0)]
        else:
            after = token[5:-1] if token and token.startswith("guid'") else None
            rows = [r for r in sorted(rows, key=lambda r: str(r.values["ID"])) if after is None or str(r.values["ID"]) > after]
        page = rows[: self.page_size]
        out = []
        for row in page:
            selected = self._select(req, row, with_timestamp)
            if isinstance(selected, Response):
                return selected
            out.append(selected)
        d: dict[str, Any] = {"results": out}
        if len(rows) > self.page_size:
            nxt = page[-1].timestamp if with_timestamp else f"guid'{page[-1].values['ID']}'"
            query = {k: v[0] for k, v in req.query.items() if k != "$skiptoken"}
            d["__next"] = f"{self.url}{path}?{urlencode({**query, '$skiptoken': nxt}, quote_via=quote)}"
        return Response.json({"d": d})

    def _sync(self, req: Request, division: str, entity: str) -> Response:
        table = SYNC.get(entity)
        if table is None:
            return odata_error(404, f"Resource not found: sync/{entity}")
        if table == "deleted" and not self.deleted_allowed:
            return odata_error(403, "Forbidden: Retrieve deleted records through web services (itgeneor202)")
        m = re.fullmatch(r"\s*Timestamp\s+gt\s+(\d+)L?\s*", req.arg("$filter") or "")
        if m is None:
            return odata_error(400, "Only a filter on Timestamp (Timestamp gt ...) is allowed on sync endpoints")
        since = int(m.group(1))
        with self.lock:
            rows = [r for r in self._rows(self.divisions[int(division)], table) if r.timestamp > since]
        return self._page(req, rows, True, int(division), req.path)

    def _bulk(self, req: Request, division: str, entity: str) -> Response:
        table = BULK.get(entity)
        if table is None:
            return odata_error(404, f"Resource not found: bulk/{entity}")
        filt = req.arg("$filter") or ""
        if not filt:
            return odata_error(400, "A $filter is mandatory on this endpoint")
        with self.lock:
            rows = self._rows(self.divisions[int(division)], table)
        ids = re.findall(r"(ID|Document)\s+eq\s+guid'([^']*)'", filt)
        if ids:
            keys = {(k, v.lower()) for k, v in ids}
            rows = [r for r in rows if any(str(r.values.get(k, "")).lower() == v for k, v in keys)]
        else:
            m = re.fullmatch(r"\s*Modified\s+ge\s+datetime'([^']+)'\s+and\s+Modified\s+le\s+datetime'([^']+)'\s*", filt)
            if m is None:
                return odata_error(400, f"Unsupported $filter: {filt}")
            lo, hi = (exact_date(datetime.fromisoformat(x).replace(tzinfo=AMSTERDAM)) for x in m.groups())
            ms = lambda v: int(re.search(r"-?\d+", v).group(0))  # noqa: E731
            rows = [r for r in rows if r.values.get("Modified") and ms(lo) <= ms(r.values["Modified"]) <= ms(hi)]
        return self._page(req, sorted(rows, key=lambda r: str(r.values["ID"])), False, int(division), req.path)

    def _me_exact(self, req: Request) -> Response:
        return Response.json({"d": {"results": [{"CurrentDivision": self.current, "FullName": "Anna Boekhouder",
                                                 "UserName": "anna@acme.example", "DivisionCustomer": None}]}})

    def _download(self, req: Request) -> Response:
        att_id, division = req.arg("ID") or "", int(req.arg("_Division_") or 0)
        with self.lock:
            row = self.divisions[division].attachments.get(att_id) if division in self.divisions else None
        if row is None:
            return Response.text("The attachment does not exist", 404)
        if req.arg("Download") != "1":
            return Response(200, {"Content-Type": "text/html"}, b"<html><body>attachment viewer</body></html>")
        return Response(200, {"Content-Type": "application/octet-stream",
                              "Content-Disposition": f'attachment; filename="{row.values["FileName"]}"'}, row.data)
