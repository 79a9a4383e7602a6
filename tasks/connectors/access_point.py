"""E-invoicing access point connector (Pagero's API, as Business Central's E-Documents connector uses it:
shared/reference/connectors.md section 1), over tasks/http.py and tasks/oauth.py.

Send, per document:
1. Every file of the package is read and checked against its SHA-256; the UBL invoice or credit note
   among them (mapping.ubl made or passed it: tasks/ubl/package.py) is validated again (UBL 2.1,
   EN 16931, Peppol BIS 3.0: tasks/ubl/validate.py; a repeat costs nothing). Invalid: a permanent
   error naming the document and each broken rule; nothing is sent.
2. The access point is asked for an earlier file of this document version (its senderReference is
   docroute's idempotency key) [?]. One that failed is restarted (POST {fileparts}/{id}/action
   {"action": "Restart"}, as BC does) instead of posting a second file; one still in the works is
   the delivery already made (a retry after a crash or a lost answer: nothing sent twice).
3. Otherwise POST {file_api_url}, multipart/form-data: payload (the UBL, with its file name),
   documentType "Invoice" (credit notes too), sendMode Production / Test / Certification from the
   integration's mode, sendingCompanyId, senderReference. Its answer's id is the File ID: the
   delivery is recorded "submitted" with it.

Status (Connector.status, asked by every sync run and the docroute-confirm flow):
GET {file_api_url}/{fileId}/fileparts?Status=AwaitingInteraction,Error: an Error part is a rejection
with its error.description; AwaitingInteraction and Processing keep it waiting (the detail says
which: docroute status shows it); no part left means processed: the document id comes from
GET {document_api_url}?fileId=... Then the buyer's application responses
(GET {document_api_url}?documentType=ApplicationResponse&direction=Received&referenceDocumentIdentifier=<number>...):
RecipientReject is a rejection with its reason, RecipientAccept is recorded with the delivery; they are
marked fetched (POST {document_api_url}/fetch). With `buyer_response_days` the document waits that
long for one before it counts as delivered.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from tasks.connectors.api_common import not_processed, read_package
from tasks.connectors.base import (
    CheckResult,
    Confirmation,
    Connector,
    Delivery,
    Mode,
    Package,
    PermanentDeliveryError,
)
from tasks.errors import RemoteError
from tasks.http import HttpClient
from tasks.oauth import BearerAuth, TokenManager
from tasks.ubl.validate import UblInvalid, check, root_kind
from tasks.xslt import parse_xml

SEND_MODES = {Mode.PRODUCTION: "Production", Mode.TEST: "Test", Mode.CERTIFICATION: "Certification"}
ACCEPT, REJECT = "RecipientAccept", "RecipientReject"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class AccessPointConnector(Connector):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._http: HttpClient | None = None

    # -- connection --------------------------------------------------------------------------------
    @property
    def http(self) -> HttpClient:
        if self._http is None:
            block = self.connection
            auth = BearerAuth(TokenManager(block))
            self._http = HttpClient(self.label, base_url=block.file_api_url, hosts=block.api_urls(), auth=auth,
                                    secrets=block.secret_values(), ca_bundle=block.ca_bundle, verify=block.verify_tls,
                                    timeout=(15, block.request_timeout), headers={"Accept": "application/json"})
        return self._http

    def open(self) -> None:
        self.http.check_tls()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def send_mode(self) -> str:
        return SEND_MODES[self.mode]

    def certification(self) -> str:
        return "sendMode=Certification (the access point's own certification mode, same endpoints)"

    def check(self) -> CheckResult:
        block = self.connection
        try:
            self.http.json(self.http.get(block.document_api_url, what="connection check", params={
                "direction": "Received", "documentType": "Invoice", "companyId": block.company_id, "limit": 1, "offset": 0}),
                "connection check")
        except RemoteError as exc:
            return CheckResult(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        hosts = ", ".join(BearerAuth(TokenManager(block)).allowed_hosts)
        return CheckResult(True, f"{self.label}: token accepted, company {block.company_id} reachable; documents go with "
                                 f"sendMode={self.send_mode}; the token is only sent to {hosts}")

    # -- send ---------------------------------------------------------------------------------------
    def _payload(self, package: Package) -> tuple[str, bytes]:
        contents = read_package(package)  # every file verified before anything is sent
        for f in package.files:
            data = contents[f.name]
            if (f.media_type in ("application/xml", "text/xml") or f.name.lower().endswith(".xml")) and root_kind(data):
                try:
                    check(data, f"document {package.doc_id}, file {f.name}")
                except UblInvalid as exc:
                    raise PermanentDeliveryError(str(exc)) from None
                return f.name, data
        raise PermanentDeliveryError(
            f"document {package.doc_id}: no UBL invoice or credit note among its files ({', '.join(f.name for f in package.files)}); "
            f"{self.label} takes Peppol BIS Billing 3.0 UBL: give the integration mapping.ubl (built from the metadata) "
            f"or a source that delivers UBL")

    def deliver(self, package: Package) -> Delivery:
        name, payload = self._payload(package)
        what = f"document {package.doc_id}"
        earlier = self._earlier_file(package.idempotency_key, what)
        if earlier is not None:
            return self._resume(earlier, package, what)
        block = self.connection
        parts = {
            "payload": (name, payload, "application/xml"),
            "documentType": (None, "Invoice"),  # the access point's type for invoices and credit notes alike
            "sendMode": (None, self.send_mode),
            "sendingCompanyId": (None, block.company_id),
            "senderReference": (None, package.idempotency_key),
        }
        answer = not_processed(lambda: self.http.json(self.http.post(block.file_api_url, what=f"{what}: upload", files=parts),
                                                      f"{what}: upload"))
        file_id = str(answer.get("id") or "")
        if not file_id:
            raise PermanentDeliveryError(f"{what}: {self.label} answered the upload without a file id: {answer!r:.200}")
        return Delivery(remote_ref=file_id, accepted=False, detail=self._detail(file_id, package, payload))

    def _detail(self, file_id: str, package: Package, payload: bytes) -> dict[str, Any]:
        root = parse_xml(payload, f"document {package.doc_id}").getroot()
        number = root.findtext("{urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2}ID") or ""
        return {"file_id": file_id, "number": number, "send_mode": self.send_mode, "state": "Processing",
                "submitted_at": _now().isoformat(timespec="seconds")}

    def _earlier_file(self, key: str, what: str) -> dict | None:
        """The access point's earlier file with this senderReference [?], if any (the newest)."""
        block = self.connection
        answer = self.http.json(self.http.get(block.file_api_url, what=f"{what}: lookup", params={
            "senderReference": key, "sendingCompanyId": block.company_id}), f"{what}: lookup")
        items = [i for i in (answer.get("items") or []) if i.get("senderReference", key) == key and i.get("id")]
        return items[-1] if items else None

    def _parts(self, file_id: str, what: str) -> list[dict]:
        answer = self.http.json(self.http.get(f"{self.connection.file_api_url}/{file_id}/fileparts", what=what,
                                              params={"Status": "AwaitingInteraction,Error"}), what)
        return list(answer.get("items") or [])

    def _resume(self, earlier: dict, package: Package, what: str) -> Delivery:
        file_id = str(earlier["id"])
        failed = [p for p in self._parts(file_id, f"{what}: status") if p.get("status") == "Error"]
        for part in failed:  # as Business Central does: the same file is processed again, never posted twice
            not_processed(lambda p=part: self.http.post(f"{self.connection.fileparts_url}/{p['id']}/action", what=f"{what}: restart",
                                                        json={"action": "Restart"}, idempotent=True).close())
        detail = {"file_id": file_id, "number": earlier.get("number", ""), "send_mode": earlier.get("sendMode", self.send_mode),
                  "state": "Processing", "submitted_at": _now().isoformat(timespec="seconds")}
        if not detail["number"]:
            _, payload = self._payload(package)
            detail["number"] = self._detail(file_id, package, payload)["number"]
        if failed:
            detail["restarted"] = [str(p["id"]) for p in failed]
            return Delivery(remote_ref=file_id, accepted=False, detail=detail)
        return Delivery(remote_ref=file_id, already_present=True, accepted=False, detail=detail)

    def lookup(self, package: Package) -> Delivery | None:
        earlier = self._earlier_file(package.idempotency_key, f"document {package.doc_id}")
        if earlier is None:
            return None
        detail = {"file_id": str(earlier["id"]), "number": earlier.get("number", ""), "send_mode": earlier.get("sendMode", ""),
                  "state": "Processing", "submitted_at": _now().isoformat(timespec="seconds")}
        if not detail["number"]:
            _, payload = self._payload(package)
            detail["number"] = self._detail(detail["file_id"], package, payload)["number"]
        return Delivery(remote_ref=detail["file_id"], already_present=True, accepted=False, detail=detail)

    # -- later confirmation --------------------------------------------------------------------------
    def status(self, delivery: Delivery) -> Confirmation:
        detail = dict(delivery.detail or {})
        file_id = str(detail.get("file_id") or delivery.remote_ref)
        what = f"file {file_id}"
        if detail.get("state") != "awaiting-buyer":
            parts = self._parts(file_id, f"{what}: status")
            errors = [p for p in parts if p.get("status") == "Error"]
            if errors:
                said = "; ".join(_descriptions(p) for p in errors)
                return Confirmation(Confirmation.REJECTED, f"{self.label} rejected {what}: {said}",
                                    {**detail, "state": "Error", "error": said[:2000]})
            waiting = [p for p in parts if p.get("status") in ("AwaitingInteraction", "Processing")]
            if waiting:
                state = "AwaitingInteraction" if any(p.get("status") == "AwaitingInteraction" for p in waiting) else "Processing"
                reason = ("awaiting interaction at the access point (a person must act in its portal)" if state == "AwaitingInteraction"
                          else "processing at the access point")
                return Confirmation(Confirmation.PENDING, f"{what}: {reason}", {**detail, "state": state})
            if not detail.get("document_id"):
                docs = self.http.json(self.http.get(self.connection.document_api_url, what=f"{what}: document id",
                                                    params={"fileId": file_id}), f"{what}: document id")
                items = docs.get("items") or []
                if not items:
                    return Confirmation(Confirmation.PENDING, f"{what}: processed, the document id is not known yet",
                                        {**detail, "state": "Processed"})
                detail.update(document_id=str(items[0].get("id")), accepted_at=_now().isoformat(timespec="seconds"))
        return self._buyer(detail, what)

    def _buyer(self, detail: dict, what: str) -> Confirmation:
        block = self.connection
        accepted = f"accepted by {self.label} (document {detail['document_id']})"
        response = self._buyer_response(detail.get("number", ""), what)
        if response is not None:
            kind, note, response_id = response
            detail.update(state="Delivered", buyer_response=kind, buyer_response_id=response_id)
            if note:
                detail["buyer_note"] = note[:500]
            if kind == REJECT:
                return Confirmation(Confirmation.REJECTED, f"the buyer rejected it ({REJECT}){': ' + note if note else ''}", detail)
            return Confirmation(Confirmation.ACCEPTED, f"{accepted}; the buyer accepted it ({ACCEPT})", detail)
        since = datetime.fromisoformat(detail.get("accepted_at") or _now().isoformat())
        if block.buyer_response_days and _now() - since < timedelta(days=block.buyer_response_days):
            return Confirmation(Confirmation.PENDING, f"{accepted}; waiting for the buyer's response",
                                {**detail, "state": "awaiting-buyer"})
        detail["state"] = "Delivered"
        return Confirmation(Confirmation.ACCEPTED, accepted, detail)

    def _buyer_response(self, number: str, what: str) -> tuple[str, str, str] | None:
        """The newest RecipientAccept or RecipientReject for the invoice number, marked fetched; None if there is none."""
        if not number:
            return None
        block = self.connection
        answer = self.http.json(self.http.get(block.document_api_url, what=f"{what}: buyer response", params={
            "documentType": "ApplicationResponse", "direction": "Received", "showFetchedOnly": "false",
            "referenceDocumentIdentifier": number, "companyId": block.company_id}), f"{what}: buyer response")
        found = [i for i in (answer.get("items") or [])
                 if (i.get("documentInfo") or {}).get("documentSubType") in (ACCEPT, REJECT)]
        if not found:
            return None
        ids = [str(i["id"]) for i in found if i.get("id") is not None]
        if ids:
            self.http.post(f"{block.document_api_url}/fetch", what=f"{what}: mark buyer responses fetched",
                           json={"ids": ids}, idempotent=True).close()
        newest = found[-1]
        info = newest.get("documentInfo") or {}
        return info["documentSubType"], str(info.get("note") or ""), str(newest.get("id") or "")


def _descriptions(part: dict) -> str:
    error = part.get("error") or {}
    said = error.get("description") or []
    if isinstance(said, str):
        said = [said]
    return f"filepart {part.get('id')}: " + ("; ".join(str(s) for s in said) or "Error (no description)")
