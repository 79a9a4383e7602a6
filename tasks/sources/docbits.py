"""Docbits as a source (block `docbits-source`): the pending-export queue of a Docbits tenant.

The contract is ../shared/reference/sources.md section 5: the endpoints are published (path and
method), their bodies are not. What docroute assumes of them is here, in docs/api-sources.md, and
in the test server (tests/fakes/docbits_api.py), and every field of theirs this module reads is
named in the tables below: correcting an assumption is an edit of a table.

Assumed bodies ([?] all of them):

- GET /export/get_pending_watch_export_documents?doc_type=INVOICE: the documents ready for export
  of that type, a JSON array (or an object holding it under "documents", "items" or "data") of
  {doc_id, doc_type, org_id, sub_org_id, status, updated_at}. The queue is the cursor: a document
  stays in it until acknowledged, so the source lists everything on each scan (lists_everything).
- GET /document/{doc_id}: its metadata {doc_id, doc_type, org_id, sub_org_id, status, updated_at,
  approved_at, tags, fields: {invoice_number, supplier_name, ...}, files: [{file_name,
  content_type, size}]} without content; 404 when unknown.
- GET /export/get_data_v1?doc_id=...: the export payload {doc_id, files: [{file_name,
  content_type, content (base64)}]}, the main file first; decoded into spools while it streams.
- GET /document/dashboard?doc_type=..&start_date=YYYY-MM-DD&skip=..&limit=..: the documents of a type
  created since a date, whatever their status (an array, or an object holding it, of the queue's
  entries with their status). Read only to show what still waits for approval: a document of the
  client not in the queue and not in a done status (DONE_STATUSES) is a pending candidate. Since the
  window's start only: the queue itself finds a late approval, however late.
- GET /export/update_pending_watch_export_status?doc_id=...: takes the document out of the queue
  (a GET that changes state, as published); 404: already out of it.
- X-API-KEY; FastAPI answers: 401/403 {detail} for a key refused, 422 {detail: [{loc, msg, type}]}.

A document in the queue is approved (Docbits' workflow put it there); its approval time is
approved_at, else updated_at. Metadata is read once per document version (updated_at) per process.
"""

from __future__ import annotations

import mimetypes
from datetime import datetime, timezone
from typing import Any

import requests

from tasks.connectors.base import CheckResult
from tasks.documents import APPROVED, Candidate, Document, DocumentFile, SourceProblem, client_key, version_of
from tasks.errors import BudgetExhaustedError, CredentialsRefusedError, PermanentError, RemoteError, TransientError
from tasks.http import HttpClient, Pacer
from tasks.sources.api_files import CorruptContent, blob, read_json_with_files
from tasks.sources.base import Scan, Source, SourceOptions, Window

# -- the mapping from Docbits' fields to ours: here and nowhere else (all assumed, see the docstring) -----
DOCBITS_TYPES = {
    "INVOICE": "invoice",
    "CREDIT_NOTE": "credit_note",
    "ORDER_CONFIRMATION": "order_confirmation",
    "DELIVERY_NOTE": "delivery_note",
    "PURCHASE_ORDER": "purchase_order",
}
FIELD_MAP = {  # Docbits metadata field -> ours; fields not named here keep their Docbits name
    "invoice_number": "number",
    "supplier_name": "supplier",
    "supplier_id": "supplier_number",
    "supplier_vat_id": "supplier_vat",
    "customer_name": "customer",
    "customer_number": "customer_number",
    "invoice_date": "issue_date",
    "due_date": "due_date",
    "currency": "currency",
    "net_amount": "net",
    "tax_amount": "tax",
    "total_amount": "total",
    "purchase_order": "po_number",
    "order_number": "order_number",
    "iban": "iban",
    "reference": "reference",
}
ENTRY = {"id": "doc_id", "type": "doc_type", "org": "org_id", "sub_org": "sub_org_id", "updated": "updated_at",
         "approved": "approved_at", "fields": "fields", "files": "files", "tags": "tags"}
FILE = {"name": "file_name", "media": "content_type", "size": "size", "content": "content"}
LIST_KEYS = ("documents", "items", "data", "results")
DONE_STATUSES = {"export", "exported", "completed", "error", "export error", "rejected", "deleted"}  # not waiting: left out
STATUS = "status"
PAGE = 100  # dashboard rows per call
PENDING = "/export/get_pending_watch_export_documents"
DASHBOARD = "/document/dashboard"
METADATA = "/document/{doc_id}"
PAYLOAD = "/export/get_data_v1"
ACK = "/export/update_pending_watch_export_status"
MEDIA = {"pdf": "application/pdf", "xml": "application/xml"}

_SEEN: dict[tuple[str, str, str], dict[str, Any]] = {}  # (source, doc_id, updated_at) -> metadata, per process
_SEEN_MAX = 50_000


class DocbitsOptions(SourceOptions):
    """An integration's settings for a Docbits source (source_options)."""

    type_map: dict[str, str] = {}  # Docbits document type -> docroute type, over the block's and the defaults


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _items(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        data = next((data[k] for k in LIST_KEYS if isinstance(data.get(k), list)), [])
    return [d for d in data or [] if isinstance(d, dict)] if isinstance(data, list) else []


def _media(name: str, declared: Any = None) -> str:
    if declared:
        return str(declared).split(";")[0].strip()
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return MEDIA.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def metadata_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """Our metadata fields of a Docbits document."""
    out: dict[str, Any] = {}
    for theirs, value in (meta.get(ENTRY["fields"]) or {}).items():
        if value is None or value == "":
            continue
        out[FIELD_MAP.get(theirs, theirs)] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return out


class DocbitsSource(Source):
    """Documents of a Docbits tenant's pending-export queues; see the module docstring."""

    lists_everything = True  # the queue holds every document not yet acknowledged
    options_model = DocbitsOptions

    def __init__(self, block):
        super().__init__(block)
        self._client: HttpClient | None = None

    @property
    def client(self) -> HttpClient:
        if self._client is None:
            b = self.block
            self._client = HttpClient(
                self.label, base_url=b.base_url, verify=b.verify_tls, ca_bundle=b.ca_bundle, timeout=b.request_timeout,
                headers={"X-API-KEY": b.api_key.get_secret_value(), "Accept": "application/json"},
                secrets=b.secret_values(), credential_statuses=(401, 403),
                notes={401: "API key refused", 403: "API key refused"},
                pacer=Pacer(b.calls_per_minute, 60.0) if b.calls_per_minute else Pacer(),
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def type_map(self) -> dict[str, str]:
        return {**DOCBITS_TYPES, **self.block.type_map, **self.options.type_map}

    def _ours(self, theirs: str) -> str:
        return self.type_map().get(theirs, theirs.lower() or "unknown")

    def _whose(self, entry: dict[str, Any]) -> str:
        org = entry.get(ENTRY["org"])
        if org is not None and str(org) in self.block.org_clients:
            return client_key(self.block.org_clients[str(org)])
        return client_key(self.block.client) if self.block.client else ""

    def _types(self) -> list[str]:
        """The queues to read: the block's types, narrowed to what the integration takes."""
        types = list(self.block.document_types)
        integ = self.integration
        if integ is not None and integ.filters.document_types:
            types = [t for t in types if self._ours(t) in integ.filters.document_types]
        return types

    # -- listing ----------------------------------------------------------------------------------------
    def _pending(self, doc_type: str) -> list[dict[str, Any]]:
        what = f"pending exports of type {doc_type}"
        return _items(self.client.json(self.client.get(PENDING, params={"doc_type": doc_type}, what=what), what=what))

    def _dashboard(self, doc_type: str, since: datetime) -> list[dict[str, Any]]:
        """Documents of a type created since `since`, any status, page by page (skip/limit)."""
        rows: list[dict[str, Any]] = []
        what = f"documents of type {doc_type}"
        while True:
            params = {"doc_type": doc_type, "start_date": since.astimezone(timezone.utc).date().isoformat(),
                      "skip": len(rows), "limit": PAGE}
            page = _items(self.client.json(self.client.get(DASHBOARD, params=params, what=what), what=what))
            rows.extend(page)
            if len(page) < PAGE:
                return rows

    def _metadata(self, doc_id: str, updated: Any = None) -> dict[str, Any] | None:
        key = (self.label, doc_id, str(updated))
        if updated is not None and key in _SEEN:
            return _SEEN[key]
        what = f"document {doc_id}"
        try:
            meta = self.client.json(self.client.get(METADATA.format(doc_id=doc_id), what=what), what=what)
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(meta, dict):
            raise PermanentError(f"{what}: {self.label} answered metadata that is not an object")
        if updated is not None and str(meta.get(ENTRY["updated"])) == str(updated):
            if len(_SEEN) >= _SEEN_MAX:
                _SEEN.clear()
            _SEEN[key] = meta
        return meta

    def _candidate(self, client: str, entry: dict[str, Any], meta: dict[str, Any]) -> Candidate | SourceProblem:
        doc_id = str(entry.get(ENTRY["id"]) or meta.get(ENTRY["id"]))
        theirs = str(meta.get(ENTRY["type"]) or entry.get(ENTRY["type"]) or "")
        files = [f for f in meta.get(ENTRY["files"]) or [] if isinstance(f, dict)]
        approved_at = _time(meta.get(ENTRY["approved"])) or _time(meta.get(ENTRY["updated"])) or _time(entry.get(ENTRY["updated"]))
        sub = meta.get(ENTRY["sub_org"], entry.get(ENTRY["sub_org"]))
        cand = Candidate(
            doc_id=doc_id, client=client, type=self._ours(theirs), status=APPROVED, approved_at=approved_at,
            fingerprint="|".join([str(meta.get(ENTRY["updated"])), *(f"{f.get(FILE['name'])}:{f.get(FILE['size'])}" for f in files)]),
            sub_organisation=str(sub) if sub not in (None, "") else None,
            tags=[str(t) for t in meta.get(ENTRY["tags"]) or []], fields=metadata_fields(meta),
            handle={"doc_type": theirs},
        )
        if not files:
            return SourceProblem(doc_id, client, f"document {doc_id}: {self.label} holds no file for it (metadata without "
                                 f"file); fix it in Docbits (restart its export)", False, cand)
        if approved_at is None:
            return SourceProblem(doc_id, client, f"document {doc_id}: {self.label} gave no approval or update time for it",
                                 False, cand)
        return cand

    def scan(self, client: str, cursor: str | None, window: Window) -> Scan:
        found: list[Candidate] = []
        problems: list[SourceProblem] = []
        seen: set[str] = set()
        for doc_type in self._types():
            for entry in self._pending(doc_type):
                doc_id = str(entry.get(ENTRY["id"]) or "")
                if not doc_id or doc_id in seen or self._whose(entry) != client_key(client):
                    continue
                seen.add(doc_id)
                meta = self._metadata(doc_id, entry.get(ENTRY["updated"]))
                if meta is None:
                    continue  # gone since it was listed
                result = self._candidate(client, entry, {**entry, **meta})
                (problems if isinstance(result, SourceProblem) else found).append(result)
            for entry in self._dashboard(doc_type, window.start):  # what still waits for approval (or validation)
                doc_id = str(entry.get(ENTRY["id"]) or "")
                status = str(entry.get(STATUS) or "")
                if not doc_id or doc_id in seen or status.strip().lower() in DONE_STATUSES or self._whose(entry) != client_key(client):
                    continue
                seen.add(doc_id)
                found.append(Candidate(
                    doc_id=doc_id, client=client, type=self._ours(str(entry.get(ENTRY["type"]) or doc_type)), status="pending",
                    approved_at=None, fingerprint=f"{entry.get(ENTRY['updated'])}|{status}", fields=metadata_fields(entry),
                    sub_organisation=str(entry[ENTRY["sub_org"]]) if entry.get(ENTRY["sub_org"]) else None,
                    handle={"doc_type": entry.get(ENTRY["type"]) or doc_type, "status": status},
                ))
        found.sort(key=lambda c: c.doc_id)
        problems.sort(key=lambda p: p.doc_id)
        return Scan(found, problems, cursor=window.end.isoformat())

    def find(self, doc_id: str, client: str) -> Candidate | SourceProblem | None:
        meta = self._metadata(doc_id)
        if meta is None or self._whose(meta) != client_key(client):
            return None
        theirs = str(meta.get(ENTRY["type"]) or "")
        if not any(str(e.get(ENTRY["id"])) == doc_id for e in self._pending(theirs)):
            return None  # not (or no longer) in the export queue: exported, or not ready
        return self._candidate(client, meta, meta)

    # -- reading ----------------------------------------------------------------------------------------
    def fetch(self, candidate: Candidate) -> Document | SourceProblem:
        doc_id = candidate.doc_id
        what = f"export payload of document {doc_id}"
        try:
            response = self.client.get(PAYLOAD, params={"doc_id": doc_id}, what=what, stream=True)
            try:
                data, spools = read_json_with_files(response.iter_content(256 * 1024), {FILE["content"]}, what)
            except (requests.RequestException, OSError) as exc:
                raise TransientError(f"{what}: {self.label}: the answer was cut off ({type(exc).__name__})") from None
            except CorruptContent:
                raise
            except ValueError as exc:
                raise TransientError(f"{what}: {self.label} answered JSON that does not parse: {exc}") from None
            finally:
                response.close()
                files: list[DocumentFile] = []
            for i, f in enumerate(d for d in (data.get(ENTRY["files"]) if isinstance(data, dict) else None) or [] if isinstance(d, dict)):
                spool = blob(f.get(FILE["content"]), spools)
                name = str(f.get(FILE["name"]) or f"{doc_id}-{i + 1}")
                if spool is None or spool.size == 0:
                    return SourceProblem(doc_id, candidate.client, f"document {doc_id}: {name} is empty in {self.label}", False, candidate)
                media = _media(name, f.get(FILE["media"]))
                if i == 0 and media == "application/pdf" and not spool.head.startswith(b"%PDF-"):
                    return SourceProblem(doc_id, candidate.client, f"document {doc_id}: {name} is not a PDF (no %PDF- header)",
                                         False, candidate)
                files.append(spool.document_file(name, media))
            if not files:
                return SourceProblem(doc_id, candidate.client, f"document {doc_id}: {self.label} sent no file for it", False, candidate)
        except CorruptContent as exc:
            return SourceProblem(doc_id, candidate.client, f"document {doc_id}: its file from {self.label} is corrupt: {exc}",
                                 False, candidate)
        except (CredentialsRefusedError, BudgetExhaustedError):
            raise
        except PermanentError as exc:
            if exc.status == 404:
                return SourceProblem(doc_id, candidate.client, f"document {doc_id}: no longer in {self.label} (deleted since it "
                                     f"was listed)", True, candidate)
            return SourceProblem(doc_id, candidate.client, f"document {doc_id}: {exc}", False, candidate)
        except TransientError as exc:
            return SourceProblem(doc_id, candidate.client, f"document {doc_id}: cannot read it yet: {exc}", True, candidate)
        return Document(
            id=doc_id, client=candidate.client, type=candidate.type, sub_organisation=candidate.sub_organisation,
            tags=list(candidate.tags), status=candidate.status, approved_at=candidate.approved_at,
            fields=dict(candidate.fields), files=files, version=version_of(files), handle=candidate.handle,
        )

    # -- marking ----------------------------------------------------------------------------------------
    def mark_exported(self, document: Document) -> None:
        """Acknowledge the export: the document leaves the queue. Idempotent (404: already out of it)."""
        try:
            self.client.get(ACK, params={"doc_id": document.id}, what=f"export acknowledgement of document {document.id}").close()
        except PermanentError as exc:
            if exc.status != 404:
                raise

    # -- check ------------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        counts = []
        try:
            for doc_type in self.block.document_types:
                counts.append(f"{len(self._pending(doc_type))} {doc_type}")
        except RemoteError as exc:
            return CheckResult(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        return CheckResult(True, f"{self.label}: reachable; pending exports: {', '.join(counts)}")
