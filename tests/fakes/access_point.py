"""A local e-invoicing access point with Pagero's API as Business Central's connector uses it
(shared/reference/connectors.md section 1), on the rotating-refresh-token OAuth2 server of
tests/fakes/oauth_server.py (/authorize, /token, /revoke).

- POST /file/v1/files, multipart/form-data, checked part by part: exactly the parts payload (a file with a
  name, well-formed XML), documentType (Invoice, PaymentReminder or ApplicationResponse), sendMode
  (Production, Test or Certification, literally), sendingCompanyId (a company of this access point),
  senderReference (not empty). Answers 201 {"id": <File ID>}; the file gets one filepart, Processing.
- GET /file/v1/files?senderReference=..&sendingCompanyId=.. -> {items: [{id, senderReference, sendMode,
  created}], meta} (docroute's assumption [?] for finding an earlier file).
- GET /file/v1/files/{fileId}/fileparts?Status=AwaitingInteraction,Error -> {items: [{id, fileId, status,
  error: {description: [...]}}], meta}: the parts in a listed status, and those still Processing (BC's
  handling reads a Processing part as "keep waiting"); a part processed without error is not listed.
  A part is Processing for `processing_seconds`, then becomes what `outcomes` scripts for its invoice
  number (a list, one entry per processing round): "accept" (the default), "error: <description>",
  or "interaction".
- POST /file/v1/fileparts/{id}/action {"action": "Restart"|"Cancel"}: Restart processes the part again.
- GET /document/v1/documents?fileId=.. -> {items: [{id, fileId}]} once processed; ?documentType=
  ApplicationResponse&direction=Received&referenceDocumentIdentifier=<number>&companyId=.. -> the buyer's
  responses {items: [{id, documentInfo: {documentSubType, referenceDocumentIdentifier, note}, fetched}]};
  ?direction=Received&documentType=Invoice&companyId&limit&offset -> inbound invoices (none).
- POST /document/v1/documents/fetch {"ids": [...]}: marks responses fetched.

Every API call needs a live bearer token of this server (401 otherwise). `respond(number, kind, note)`
adds a buyer response; `buyer` scripts one to appear when a number's document is accepted.
`start_seeded()` starts one on a free port and returns it with the fields an AccessPointConnection needs.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from lxml import etree

from tests.fakes.base import Request, Response
from tests.fakes.oauth_server import OAuthServer

DOCUMENT_TYPES = {"Invoice", "PaymentReminder", "ApplicationResponse"}
SEND_MODES = {"Production", "Test", "Certification"}
PARTS = {"payload", "documentType", "sendMode", "sendingCompanyId", "senderReference"}
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"


@dataclass
class Filepart:
    id: str
    file_id: str
    started: float
    outcome: str = "accept"  # accept | error: ... | interaction
    restarts: int = 0
    cancelled: bool = False


@dataclass
class FileRecord:
    id: str
    sender_reference: str
    send_mode: str
    document_type: str
    company: str
    payload_name: str
    payload: bytes
    number: str
    created: float
    parts: list[Filepart] = field(default_factory=list)
    document_id: str | None = None


class AccessPointAPI(OAuthServer):
    def __init__(self, companies: tuple[str, ...] = ("ACME-AP",), processing_seconds: float = 0.3, **kwargs: Any):
        kwargs.setdefault("client_secret", f"ap-secret-{secrets.token_hex(8)}")
        kwargs.setdefault("name", "access point")
        super().__init__(**kwargs)
        self.companies = set(companies)
        self.processing_seconds = processing_seconds
        self.files: dict[str, FileRecord] = {}
        self.outcomes: dict[str, list[str]] = {}  # invoice number -> outcome per processing round
        self.buyer: dict[str, tuple[str, str]] = {}  # invoice number -> (RecipientAccept|RecipientReject, note) on acceptance
        self.responses: list[dict] = []
        self.refused_parts: list[str] = []  # why uploads were refused (a part missing, a bad value)
        self.restarts: list[str] = []  # filepart ids restarted
        self._ids = itertools.count(1)
        self.route("POST", "/file/v1/files")(self._upload)
        self.route("GET", "/file/v1/files")(self._list_files)
        self.route("GET", r"/file/v1/files/(?P<fid>[^/]+)/fileparts")(self._fileparts)
        self.route("POST", r"/file/v1/fileparts/(?P<pid>[^/]+)/action")(self._action)
        self.route("GET", "/document/v1/documents")(self._documents)
        self.route("POST", "/document/v1/documents/fetch")(self._fetch)

    # -- helpers for tests ---------------------------------------------------------------------------
    def uploads(self, sender_reference: str | None = None) -> list[FileRecord]:
        with self.lock:
            return [f for f in self.files.values() if sender_reference is None or f.sender_reference == sender_reference]

    def by_number(self, number: str) -> list[FileRecord]:
        with self.lock:
            return [f for f in self.files.values() if f.number == number]

    def respond(self, number: str, kind: str, note: str = "") -> None:
        with self.lock:
            self.responses.append({"id": f"AR-{next(self._ids)}", "fetched": False, "documentInfo": {
                "documentSubType": kind, "referenceDocumentIdentifier": number, "note": note}})

    def _bearer(self, req: Request) -> Response | None:
        header = req.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not self.live(token):
            return Response.json({"error": "invalid_token"}, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def _refuse(self, why: str, status: int = 400) -> Response:
        self.refused_parts.append(why)
        return Response.json({"errors": [{"message": why}]}, status)

    # -- FileAPI -------------------------------------------------------------------------------------
    def _upload(self, req: Request) -> Response:
        if (denied := self._bearer(req)) is not None:
            return denied
        ctype = req.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return self._refuse(f"Content-Type must be multipart/form-data, not {ctype!r}", 415)
        message = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + req.body)
        parts: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name in parts:
                return self._refuse(f"part {name!r} given twice")
            parts[name] = part
        if set(parts) != PARTS:
            return self._refuse(f"parts must be exactly {sorted(PARTS)}, got {sorted(p for p in parts if p)}")
        payload = parts["payload"]
        filename = payload.get_filename()
        if not filename:
            return self._refuse("the payload part must carry a file name")
        data = payload.get_payload(decode=True) or b""
        try:
            number = etree.fromstring(data).findtext(f"{{{CBC}}}ID") or ""
        except etree.XMLSyntaxError:
            return self._refuse("the payload is not well-formed XML")
        values = {k: (parts[k].get_payload(decode=True) or b"").decode() for k in PARTS - {"payload"}}
        if values["documentType"] not in DOCUMENT_TYPES:
            return self._refuse(f"documentType {values['documentType']!r} is not one of {sorted(DOCUMENT_TYPES)}")
        if values["sendMode"] not in SEND_MODES:
            return self._refuse(f"sendMode {values['sendMode']!r} is not one of {sorted(SEND_MODES)}")
        if values["sendingCompanyId"] not in self.companies:
            return self._refuse(f"sendingCompanyId {values['sendingCompanyId']!r} is not a company of this account", 403)
        if not values["senderReference"]:
            return self._refuse("senderReference must not be empty")
        with self.lock:
            fid = str(uuid.uuid4())
            rec = FileRecord(fid, values["senderReference"], values["sendMode"], values["documentType"],
                             values["sendingCompanyId"], filename, data, number, time.time())
            rec.parts.append(Filepart(f"FP-{next(self._ids)}", fid, time.time(), self._next_outcome(number)))
            self.files[fid] = rec
        return Response.json({"id": fid}, 201)

    def _next_outcome(self, number: str) -> str:
        script = self.outcomes.get(number)
        if script:
            return script.pop(0) if len(script) > 1 else script[0]
        return "accept"

    def _list_files(self, req: Request) -> Response:
        if (denied := self._bearer(req)) is not None:
            return denied
        ref, company = req.arg("senderReference"), req.arg("sendingCompanyId")
        with self.lock:
            items = [{"id": f.id, "senderReference": f.sender_reference, "sendMode": f.send_mode, "created": f.created}
                     for f in self.files.values()
                     if (ref is None or f.sender_reference == ref) and (company is None or f.company == company)]
        return Response.json({"items": items, "meta": {"count": len(items)}})

    def _state(self, part: Filepart) -> str:
        if part.cancelled:
            return "Cancelled"
        if time.time() - part.started < self.processing_seconds:
            return "Processing"
        if part.outcome.startswith("error"):
            return "Error"
        if part.outcome == "interaction":
            return "AwaitingInteraction"
        return "Done"

    def _settle(self, rec: FileRecord) -> None:
        """A file whose parts are all done gets its document (and a scripted buyer response)."""
        if rec.document_id is None and rec.parts and all(self._state(p) == "Done" for p in rec.parts):
            rec.document_id = f"DOC-{next(self._ids)}"
            if rec.number in self.buyer:
                kind, note = self.buyer.pop(rec.number)
                self.responses.append({"id": f"AR-{next(self._ids)}", "fetched": False, "documentInfo": {
                    "documentSubType": kind, "referenceDocumentIdentifier": rec.number, "note": note}})

    def _fileparts(self, req: Request, fid: str) -> Response:
        if (denied := self._bearer(req)) is not None:
            return denied
        wanted = set(filter(None, (req.arg("Status") or "").split(","))) or {"Processing", "AwaitingInteraction", "Error", "Done"}
        with self.lock:
            rec = self.files.get(fid)
            if rec is None:
                return Response.json({"errors": [{"message": f"file {fid} not found"}]}, 404)
            self._settle(rec)
            items = []
            for p in rec.parts:
                state = self._state(p)
                if state in wanted or state == "Processing":
                    item: dict[str, Any] = {"id": p.id, "fileId": fid, "status": state}
                    if state == "Error":
                        item["error"] = {"description": [p.outcome.partition(":")[2].strip() or "error"]}
                    items.append(item)
        return Response.json({"items": items, "meta": {"count": len(items)}})

    def _action(self, req: Request, pid: str) -> Response:
        if (denied := self._bearer(req)) is not None:
            return denied
        action = (req.json() or {}).get("action")
        with self.lock:
            part = next((p for f in self.files.values() for p in f.parts if p.id == pid), None)
            if part is None:
                return Response.json({"errors": [{"message": f"filepart {pid} not found"}]}, 404)
            if action == "Restart":
                rec = self.files[part.file_id]
                part.started, part.restarts = time.time(), part.restarts + 1
                part.outcome = self._next_outcome(rec.number)
                self.restarts.append(pid)
            elif action == "Cancel":
                part.cancelled = True
            else:
                return self._refuse(f"action {action!r} is not Restart or Cancel")
        return Response(204)

    # -- DocumentAPI ---------------------------------------------------------------------------------
    def _documents(self, req: Request) -> Response:
        if (denied := self._bearer(req)) is not None:
            return denied
        with self.lock:
            if req.arg("fileId") is not None:
                rec = self.files.get(req.arg("fileId") or "")
                if rec is not None:
                    self._settle(rec)
                items = [{"id": rec.document_id, "fileId": rec.id}] if rec is not None and rec.document_id else []
            elif req.arg("documentType") == "ApplicationResponse":
                if req.arg("companyId") not in self.companies:
                    return Response.json({"errors": [{"message": "unknown companyId"}]}, 403)
                ref = req.arg("referenceDocumentIdentifier")
                fetched_too = req.arg("showFetchedOnly", "false") == "false"
                items = [dict(r) for r in self.responses
                         if r["documentInfo"]["referenceDocumentIdentifier"] == ref and (fetched_too or not r["fetched"])]
            else:
                if req.arg("companyId") not in self.companies:
                    return Response.json({"errors": [{"message": "unknown companyId"}]}, 403)
                items = []
        return Response.json({"items": items, "meta": {"count": len(items)}})

    def _fetch(self, req: Request) -> Response:
        if (denied := self._bearer(req)) is not None:
            return denied
        ids = set((req.json() or {}).get("ids") or [])
        with self.lock:
            for r in self.responses:
                if r["id"] in ids:
                    r["fetched"] = True
        return Response(200, {"Content-Type": "application/json"}, json.dumps({"fetched": len(ids)}).encode())


def block_fields(fake: AccessPointAPI, company: str | None = None) -> dict[str, Any]:
    """What an AccessPointConnection needs to use the fake: its endpoints, a client, a refresh token (as after
    `docroute connect`), and the allow-list naming the fake's host."""
    tokens = fake.issue()
    base = fake.url
    return {
        "client_id": fake.client_id, "client_secret": fake.client_secret, "refresh_token": tokens["refresh_token"],
        "token_url": f"{base}/token", "authorize_url": f"{base}/authorize", "revoke_url": f"{base}/revoke",
        "file_api_url": f"{base}/file/v1/files", "fileparts_url": f"{base}/file/v1/fileparts",
        "document_api_url": f"{base}/document/v1/documents", "company_id": company or sorted(fake.companies)[0],
        "api_hosts": ["127.0.0.1"], "request_timeout": 10,
    }


def start_seeded(company: str = "ACME-CERT", processing_seconds: float = 2.0,
                 buyer: dict[str, tuple[str, str]] | None = None) -> tuple[AccessPointAPI, dict[str, Any]]:
    """A running access point on a free port of 127.0.0.1 (the demo's certification client), and the fields of
    an AccessPointConnection pointing at it: `AccessPointConnection(**fields).save(name)`. Its documents are
    processed after `processing_seconds`; `buyer` scripts buyer responses by invoice number. Stop it with
    `fake.stop()`."""
    fake = AccessPointAPI(companies=(company,), processing_seconds=processing_seconds).start()
    fake.buyer.update(buyer or {})
    return fake, block_fields(fake, company)
