"""A local Debitoor (SumUp Invoices) for what docroute builds on it (shared/reference/sources.md section 3,
connectors.md section 6), and for what docroute assumes where the public contract is silent [?].

Published (or seen in the official schemas' copies), implemented as described:
- the token in the `x-token` header (or the `token` / `access_token` query parameter); 401
  {"message", "code": "unAuthorized"} otherwise. POST /login/oauth2/access_token exchanges a code for
  {access_token} (no expiry, no refresh token).
- GET /api/expenses/v3 (the list, no filter), GET /api/expenses/{id}/v4, POST /api/expenses/v4[?autonumber=true]
  checked against the expense v4 schema's rules: required date (YYYY-MM-DD) and lines (at least one,
  each with a taxRate 0..100), no unknown property (additionalProperties false), fileId "Must be a file
  id" (412 otherwise), a number required unless autonumber=true; totals computed by the server;
  file {id, url: /api/v1.0/files/{id}, fileName, lastModified, type, sizeBytes, thumbnailsUrl} set from fileId.
- GET /api/v1.0/files/{id}: the file's bytes.
Assumed by docroute [?], and so by this fake: POST /api/v1.0/files with one multipart part "file"
answers {"id", "fileName", "type", "sizeBytes"}.
"""

from __future__ import annotations

import itertools
import re
import secrets
from datetime import datetime, timezone
from decimal import Decimal
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from tests.fakes.base import FakeAPI, Request, Response

EXPENSE_KEYS = {"id", "date", "fileId", "supplierId", "supplierName", "supplierCountry", "supplierCiNumber", "payments",
                "lines", "number", "incomeTaxDeductionAmount", "currency", "totalGrossAmount", "totalNetAmount",
                "totalTaxAmount", "unpaidAmount", "taxGroups", "file", "links", "generated", "createdFromEmail",
                "attachmentOverQuota"}
LINE_KEYS = {"description", "categoryId", "categoryType", "grossAmount", "netAmount", "taxAmount", "taxRate",
             "priceDisplayType", "incomeTaxDeductionAmount", "assetLifetime", "assetSalvageValue", "assetDepreciation",
             "reverseCharge"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DebitoorAPI(FakeAPI):
    def __init__(self, **kwargs: Any):
        super().__init__(name=kwargs.pop("name", "Debitoor"), **kwargs)
        self.tokens: set[str] = set()
        self.codes: dict[str, str] = {}
        self.client_id, self.client_secret = "debitoor-app", f"dbt-secret-{secrets.token_hex(8)}"
        self.expenses: dict[str, dict] = {}
        self.files: dict[str, tuple[str, str, bytes]] = {}  # id -> (name, type, data)
        self._numbers = itertools.count(1)
        self.route("POST", "/login/oauth2/access_token")(self._token)
        self.route("GET", "/api/expenses/v3")(self._list)
        self.route("GET", r"/api/expenses/(?P<eid>[0-9a-f]{24})/v4")(self._get)
        self.route("POST", "/api/expenses/v4")(self._create)
        self.route("POST", "/api/v1.0/files")(self._upload)
        self.route("GET", r"/api/v1.0/files/(?P<fid>[0-9a-f]{24})")(self._download)

    # -- helpers for tests -----------------------------------------------------------------------------
    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens.add(token)
        return token

    def new_id(self) -> str:
        return secrets.token_hex(12)

    def add_file(self, name: str, data: bytes, media_type: str = "application/pdf") -> str:
        fid = self.new_id()
        with self.lock:
            self.files[fid] = (name, media_type, data)
        return fid

    def add_expense(self, *, number: int | None = None, supplier: str = "Globex BV", vat: str | None = "NL812345678B01",
                    date: str = "2026-03-02", net: float = 100.0, rate: float = 21.0, file: tuple[str, bytes] | None = None,
                    modified: str | None = None) -> str:
        eid = self.new_id()
        fid = self.add_file(file[0], file[1]) if file else None
        body = {"date": date, "supplierName": supplier, "lines": [{"description": "capture", "netAmount": net, "taxRate": rate}]}
        if vat:
            body["supplierCiNumber"] = vat
        if fid:
            body["fileId"] = fid
        with self.lock:
            self.expenses[eid] = self._expense(eid, body, number)
            if modified:
                self.expenses[eid]["lastModifiedDate"] = modified
        return eid

    def replace_file(self, eid: str, name: str, data: bytes) -> None:
        fid = self.add_file(name, data)
        with self.lock:
            self.expenses[eid].update(fileId=fid, file=self._file_info(fid), lastModifiedDate=_now())

    def book(self, eid: str, number: int | None = None) -> None:
        with self.lock:
            self.expenses[eid].update(number=number or next(self._numbers) + 1000, lastModifiedDate=_now())

    def delete(self, eid: str) -> None:
        with self.lock:
            self.expenses[eid]["deletedDate"] = _now()

    def with_marker(self, marker: str) -> list[dict]:
        with self.lock:
            return [e for e in self.expenses.values() if any(marker in (ln.get("description") or "") for ln in e["lines"])]

    # -- plumbing ----------------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> Response:
        if req.path.startswith("/api/"):
            token = req.headers.get("x-token") or req.arg("token") or req.arg("access_token") or ""
            if token not in self.tokens:
                return Response.json({"message": "Unauthorized", "code": "unAuthorized"}, 401)
        return super()._dispatch(req)

    @staticmethod
    def _error(status: int, message: str, code: str = "validation") -> Response:
        return Response.json({"message": message, "code": code}, status)

    def _file_info(self, fid: str) -> dict:
        name, media, data = self.files[fid]
        return {"id": fid, "url": f"/api/v1.0/files/{fid}", "fileName": name, "lastModified": _now(), "type": media,
                "sizeBytes": len(data), "thumbnailsUrl": f"/api/v1.0/files/{fid}/thumbnails"}

    def _expense(self, eid: str, body: dict, number: int | None) -> dict:
        nets = [Decimal(str(ln.get("netAmount") if ln.get("netAmount") is not None else
                            Decimal(str(ln.get("grossAmount") or 0)) / (1 + Decimal(str(ln["taxRate"])) / 100)))
                for ln in body["lines"]]
        taxes = [n * Decimal(str(ln["taxRate"])) / 100 for n, ln in zip(nets, body["lines"])]
        net, tax = sum(nets, Decimal(0)), sum(taxes, Decimal(0))
        expense = {**body, "id": eid, "number": number, "currency": "EUR", "totalNetAmount": float(round(net, 2)),
                   "totalTaxAmount": float(round(tax, 2)), "totalGrossAmount": float(round(net + tax, 2)),
                   "unpaidAmount": float(round(net + tax, 2)), "createdDate": _now(), "lastModifiedDate": _now(),
                   "deletedDate": None, "file": self._file_info(body["fileId"]) if body.get("fileId") else None}
        return expense

    # -- endpoints ---------------------------------------------------------------------------------------
    def _token(self, req: Request) -> Response:
        form = req.form()
        if form.get("client_secret") != self.client_secret or form.get("code") not in self.codes:
            return self._error(400, "invalid code or client", "invalid_grant")
        token = self.codes.pop(form["code"])
        return Response.json({"access_token": token})

    def _list(self, req: Request) -> Response:
        with self.lock:
            return Response.json([dict(e) for e in self.expenses.values()])

    def _get(self, req: Request, eid: str) -> Response:
        with self.lock:
            e = self.expenses.get(eid)
            return Response.json(dict(e)) if e is not None else self._error(404, f"expense {eid} not found", "notFound")

    def _create(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return self._error(400, "body is not JSON")
        if not isinstance(body, dict):
            return self._error(400, "an expense object is required")
        unknown = set(body) - EXPENSE_KEYS
        if unknown:
            return self._error(400, f"unknown properties {sorted(unknown)} (additionalProperties false)")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(body.get("date") or "")):
            return self._error(400, "date is required, format date")
        lines = body.get("lines")
        if not isinstance(lines, list) or not lines:
            return self._error(400, "lines is required (minItems 1)")
        for ln in lines:
            if not isinstance(ln, dict) or set(ln) - LINE_KEYS:
                return self._error(400, f"a line has unknown properties {sorted(set(ln) - LINE_KEYS) if isinstance(ln, dict) else ln}")
            rate = ln.get("taxRate")
            if not isinstance(rate, (int, float)) or not 0 <= rate <= 100:
                return self._error(400, "taxRate is required on every line (0..100)")
            if ln.get("priceDisplayType") == "gross" and ln.get("grossAmount") is None:
                return self._error(400, "grossAmount is required when priceDisplayType is gross")
            if ln.get("priceDisplayType") in (None, "net") and ln.get("netAmount") is None and ln.get("grossAmount") is None:
                return self._error(400, "netAmount is required when priceDisplayType is net")
        fid = body.get("fileId")
        with self.lock:
            if fid is not None and fid not in self.files:
                return self._error(412, "fileId: Must be a file id", "invalidFileId")
            autonumber = req.arg("autonumber") == "true"
            if body.get("number") is None and not autonumber:
                return self._error(400, "number is required unless ?autonumber=true")
            number = body.get("number") or next(self._numbers)
            eid = self.new_id()
            self.expenses[eid] = self._expense(eid, body, number)
            return Response.json(dict(self.expenses[eid]))

    def _upload(self, req: Request) -> Response:
        ctype = req.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return self._error(400, "multipart/form-data expected")
        message = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + req.body)
        parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
        if set(parts) != {"file"} or not parts["file"].get_filename():
            return self._error(400, "one part 'file' with a file name expected")
        part = parts["file"]
        fid = self.add_file(part.get_filename(), part.get_payload(decode=True) or b"", part.get_content_type())
        name, media, data = self.files[fid]
        return Response.json({"id": fid, "fileName": name, "type": media, "sizeBytes": len(data)})

    def _download(self, req: Request, fid: str) -> Response:
        with self.lock:
            found = self.files.get(fid)
        if found is None:
            return self._error(404, f"file {fid} not found", "notFound")
        name, media, data = found
        return Response(200, {"Content-Type": media, "Content-Disposition": f'attachment; filename="{name}"'}, data)


def debitoor_fields(fake: DebitoorAPI, **over: Any) -> dict[str, Any]:
    """What a DebitoorConnection needs to use the fake: its URLs and a token (as after `docroute connect`)."""
    return {"client_id": fake.client_id, "client_secret": fake.client_secret, "access_token": fake.issue_token(),
            "token_url": f"{fake.url}/login/oauth2/access_token", "authorize_url": f"{fake.url}/login/oauth2/authorize",
            "api_url": f"{fake.url}/api", "files_url": f"{fake.url}/api/v1.0/files", "request_timeout": 10, **over}

