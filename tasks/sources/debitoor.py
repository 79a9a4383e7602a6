"""Debitoor (SumUp Invoices) expenses as a source (block `debitoor-expenses`): GetMyInvoices' Debitoor sync,
the import way (shared/reference/sources.md section 3).

One Debitoor account is one client's. Each scan reads the expense list (GET /api/expenses/v3: no filter
is published, so the whole list: the source lists everything, and a late booking or a replaced file is
found by its fingerprint, lastModifiedDate and fileId). An expense is a document of the block's
client and type: number, supplier, supplier_vat, issue_date, currency, net, tax and total from its
fields; approved once booked (it has a number) with lastModifiedDate as the approval time. Its file is
read with GET /api/expenses/{id}/v4 and downloaded from the file.url it names (/api/v1.0/files/{id}),
streamed into a spool while hashed. An expense without a file is a problem (transient: a receipt may
still be attached), reported on every scan. Deleted expenses (deletedDate) are left out. Nothing is
written to Debitoor: no way to mark an expense exported is published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tasks.connectors.base import CheckResult
from tasks.debitoor_api import DebitoorClient
from tasks.documents import Candidate, Document, SourceProblem, client_key, version_of
from tasks.errors import RemoteError, TransientError
from tasks.sources.api_files import spool_stream
from tasks.sources.base import Scan, Source, Window

FIELDS = (("number", "number"), ("supplier", "supplierName"), ("supplier_vat", "supplierCiNumber"), ("issue_date", "date"),
          ("currency", "currency"), ("net", "totalNetAmount"), ("tax", "totalTaxAmount"), ("total", "totalGrossAmount"))


def _when(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


class DebitoorExpensesSource(Source):
    lists_everything = True

    def __init__(self, block: Any):
        super().__init__(block)
        self._api: DebitoorClient | None = None

    @property
    def api(self) -> DebitoorClient:
        if self._api is None:
            self._api = DebitoorClient(self.block.connection, self.label)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    def _ours(self, client: str) -> bool:
        return client_key(client) == client_key(self.block.client)

    def _candidate(self, e: dict) -> Candidate | SourceProblem:
        fields = {ours: (str(e[theirs]) if not isinstance(e[theirs], str) else e[theirs])
                  for ours, theirs in FIELDS if e.get(theirs) not in (None, "")}
        booked = e.get("number") not in (None, "")
        approved = self.block.approval == "any" or booked
        when = _when(e.get("lastModifiedDate")) or _when(e.get("createdDate"))
        file_id = e.get("fileId") or (e.get("file") or {}).get("id")
        cand = Candidate(str(e["id"]), self.block.client, self.block.document_type, "approved" if approved else "pending",
                         when if approved else None, f"{e.get('lastModifiedDate') or e.get('createdDate')}|{file_id}",
                         tags=["debitoor"], fields=fields, handle=str(e["id"]))
        if not file_id:
            return SourceProblem(cand.doc_id, cand.client, f"document {cand.doc_id}: the Debitoor expense has no file attached "
                                 f"(attach the receipt in Debitoor; it is read on the next run)", True, cand)
        return cand

    def scan(self, client: str, cursor: str | None, window: Window) -> Scan:
        if not self._ours(client):
            return Scan([], [], None)
        found = [self._candidate(e) for e in self.api.expenses() if e.get("id") and not e.get("deletedDate")]
        return Scan([c for c in found if isinstance(c, Candidate)], [p for p in found if isinstance(p, SourceProblem)], None)

    def find(self, doc_id: str, client: str) -> Candidate | SourceProblem | None:
        if not self._ours(client):
            return None
        e = self.api.expense(doc_id, f"document {doc_id}")
        if e is None or e.get("deletedDate"):
            return None
        return self._candidate(e)

    def fetch(self, candidate: Candidate) -> Document | SourceProblem:
        what = f"document {candidate.doc_id}"
        try:
            e = self.api.expense(candidate.doc_id, what)
        except TransientError as exc:
            return SourceProblem(candidate.doc_id, candidate.client, f"{what}: {exc}", True, candidate)
        if e is None or e.get("deletedDate"):
            return SourceProblem(candidate.doc_id, candidate.client, f"{what}: gone from {self.label}", True, candidate)
        info = e.get("file") or {}
        url = info.get("url") or (f"/api/v1.0/files/{e['fileId']}" if e.get("fileId") else None)
        if not url:
            return SourceProblem(candidate.doc_id, candidate.client, f"{what}: the Debitoor expense has no file attached", True,
                                 candidate)
        response = self.api.download(url, f"{what}: file")
        if response is None:
            return SourceProblem(candidate.doc_id, candidate.client, f"{what}: its file {url} is gone from {self.label}", True, candidate)
        try:
            spool = spool_stream(response.iter_content(256 * 1024))
        except (OSError, RemoteError) as exc:
            return SourceProblem(candidate.doc_id, candidate.client, f"{what}: file download cut: {exc}", True, candidate)
        finally:
            response.close()
        media_type = info.get("type") or response.headers.get("Content-Type", "application/pdf").split(";")[0]
        name = info.get("fileName") or f"{candidate.doc_id}.pdf"
        f = spool.document_file(name, media_type)
        if info.get("sizeBytes") not in (None, "") and int(float(info["sizeBytes"])) != spool.size:
            return SourceProblem(candidate.doc_id, candidate.client, f"{what}: file {name} arrived with {spool.size} bytes, "
                                 f"the expense says {info['sizeBytes']}", True, candidate)
        fresh = self._candidate(e)
        fields = fresh.fields if isinstance(fresh, Candidate) else candidate.fields
        return Document(id=candidate.doc_id, client=candidate.client, type=candidate.type, status=candidate.status,
                        approved_at=candidate.approved_at, tags=list(candidate.tags), fields=fields, files=[f],
                        version=version_of([f]))

    def check(self) -> CheckResult:
        try:
            count = len(self.api.expenses("connection check"))
        except RemoteError as exc:
            return CheckResult(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        return CheckResult(True, f"{self.label}: {count} expenses listed")
