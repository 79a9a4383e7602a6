"""Exact Online as a source (block `exact-online-source`): the import direction, documents and their
attachments from the accounting system to any connector.

The contract is ../shared/reference/sources.md section 2 (and connectors.md 5 for auth and the
X-RateLimit headers); what it leaves open is decided here and in docs/api-sources.md, and the test
server (tests/fakes/exact_api.py) follows it.

Division. One client is one Exact division: the integration's identifiers[division_identifier]
(default `exact_division`), else the block's `divisions[client]`; neither is a configuration
error naming both. Every call goes to {base}/api/v1/{division}/... with the bearer token of the
block (tasks/oauth.py: refreshed before expiry, rotated refresh tokens saved at once, refreshes
serialised across processes), Accept: application/json.

Scan. Three sync feeds, each with its own Timestamp cursor (rowversions: "Timestamp gt {n}L",
1 on first use, $select always, pages of 1000 followed through __next as given):
sync/Documents/Documents, sync/Documents/DocumentAttachments (a changed attachment is a change of
its document) and sync/Deleted (EntityType 6: documents gone; they leave the retry list). The
documents an attachment change concerns, and the documents that were problems, are read with
bulk/Documents/Documents filtered by ID; an approved document's attachments are listed with
bulk/Documents/DocumentAttachments filtered by Document, 20 documents per call. The cursor is
JSON {"v": 1, "division", "documents", "attachments", "deleted": the highest Timestamps seen,
"retry": problem documents}; another division (the identifier changed) starts again from 1.
A backfill (window.ranged) reads bulk/Documents/Documents by Modified range (Dutch local time, as
Exact wants), and does not touch the cursor.

Approval. `approval` on the block: ProposedEntryStatus 50 (processed), a FinancialTransactionEntryID
(booked), either (the default), or any document on arrival (also when the integration sets
filters.approved_only: false). The approval time is the document's Modified time; Exact's dates are
milliseconds of Dutch local time ("/Date(ms)/"), converted to UTC here.

Reading. Each attachment is downloaded from its Url with Download=1 and the bearer token, streamed
into a spool while hashed. PDFs come first (the main file), then the rest by name. An approved
document without attachments is its permanent problem (it comes back when it changes); one gone
between listing and download a transient one.

Limits. A Pacer per division reads X-RateLimit-Minutely-* and X-RateLimit-* (resets in epoch ms):
the minutely budget is spread until its reset, so no 429 is asked for; the daily one used up
raises BudgetExhaustedError "daily limit reached, resumes at <time>", and the run completes. Exact
has no "exported" flag and nothing is written to it: mark_exported is not offered.
"""

from __future__ import annotations

import json
import mimetypes
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import requests

from tasks.connectors.base import CheckResult
from tasks.documents import (
    APPROVED,
    Candidate,
    Document,
    DocumentFile,
    SourceProblem,
    client_key,
    version_of,
)
from tasks.errors import (
    BudgetExhaustedError,
    CredentialsRefusedError,
    PermanentError,
    RemoteError,
    TransientError,
)
from tasks.http import HttpClient, Pacer
from tasks.oauth import BearerAuth, TokenManager
from tasks.sources.api_files import spool_stream
from tasks.sources.base import Scan, Source, SourceOptions, Window

AMSTERDAM = ZoneInfo("Europe/Amsterdam")  # Exact's dates are this zone's wall time

# -- the mapping from Exact's fields to ours: here and nowhere else ------------------------------------
EXACT_TYPES = {20: "invoice", 10: "sales_invoice"}  # Type ids: 20 purchase invoice [3P]; the rest is [?], see docs
SALES_TYPES = {"sales_invoice", "sales_credit_note", "sales_order"}  # AccountName is then the customer
DOCUMENT_FIELDS = ("ID", "Type", "TypeDescription", "Subject", "Account", "AccountCode", "AccountName", "DocumentDate",
                   "AmountFC", "Currency", "Created", "Modified", "ProposedEntryStatus", "FinancialTransactionEntryID",
                   "SalesInvoiceNumber", "SalesOrderNumber", "Division")
ATTACHMENT_FIELDS = ("ID", "Document", "FileName", "FileSize", "Url")
PROCESSED = 50  # ProposedEntryStatus: 0 void, 5 rejected, 20 open, 50 processed
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
DOCUMENTS, ATTACHMENTS = 6, 4  # sync/Deleted EntityType
BATCH = 20  # ids per $filter of a bulk call
MEDIA = {"pdf": "application/pdf", "xml": "application/xml"}
_DATE = re.compile(r"/Date\((-?\d+)(?:[+-]\d{4})?\)/")


class ExactOptions(SourceOptions):
    """An integration's settings for an Exact Online source (source_options)."""

    type_map: dict[int, str] = {}  # Exact Type id -> docroute type, over the block's and the defaults


def exact_time(value: Any) -> datetime | None:
    """An Exact date ("/Date(ms)/", milliseconds of Dutch local time; or ISO text) as UTC."""
    if value in (None, ""):
        return None
    m = _DATE.match(str(value))
    if m:
        wall = datetime(1970, 1, 1) + timedelta(milliseconds=int(m.group(1)))
        return wall.replace(tzinfo=AMSTERDAM).astimezone(timezone.utc)
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=AMSTERDAM)).astimezone(timezone.utc)


def exact_date(value: Any) -> date | None:
    """The calendar date of an Exact date (its Dutch wall date)."""
    when = exact_time(value)
    return when.astimezone(AMSTERDAM).date() if when else None


def _amount(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return f"{Decimal(str(value)):.2f}"
        except InvalidOperation:
            pass
    return str(value)


def record_fields(rec: dict[str, Any], doc_type: str) -> dict[str, Any]:
    """Our metadata fields of an Exact document (only those it holds)."""
    out: dict[str, Any] = {}
    invoice_number = str(rec.get("SalesInvoiceNumber") or "").strip()
    subject = str(rec.get("Subject") or "").strip()
    if invoice_number and invoice_number != "0":
        out["number"] = invoice_number
        if subject:
            out["subject"] = subject
    elif subject:
        out["number"] = subject  # a purchase document's Subject is its number, in practice
    party = "customer" if doc_type in SALES_TYPES else "supplier"
    if rec.get("AccountName"):
        out[party] = str(rec["AccountName"]).strip()
    if str(rec.get("AccountCode") or "").strip():
        out[f"{party}_number"] = str(rec["AccountCode"]).strip()  # Exact pads account codes with spaces
    issued = exact_date(rec.get("DocumentDate"))
    if issued:
        out["issue_date"] = issued.isoformat()
    if rec.get("Currency"):
        out["currency"] = str(rec["Currency"])
    if rec.get("AmountFC") is not None:
        out["total"] = _amount(rec["AmountFC"])
    if rec.get("SalesOrderNumber"):
        out["order_number"] = str(rec["SalesOrderNumber"])
    entry = str(rec.get("FinancialTransactionEntryID") or "")
    if entry and entry != EMPTY_GUID:
        out["entry_id"] = entry
    return out


def _results(data: Any) -> tuple[list[dict[str, Any]], str | None]:
    """(rows, the __next URL) of an OData answer: {"d": {"results": [...], "__next": url}} or {"d": [...]}."""
    d = data.get("d") if isinstance(data, dict) else None
    if isinstance(d, list):
        return [r for r in d if isinstance(r, dict)], None
    if isinstance(d, dict):
        if "results" in d:
            return [r for r in d.get("results") or [] if isinstance(r, dict)], d.get("__next")
        return [d], None  # a single entity
    return [], None


def _guid(value: str) -> str:
    return "guid'" + str(value).replace("'", "''") + "'"


def _media(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return MEDIA.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


class ExactHttpClient(HttpClient):
    """HttpClient with Exact's OData error body ({"error": {"message": {"value": ...}}}) in its messages."""

    def status_error(self, response: requests.Response, what: str = "") -> RemoteError | None:
        error = super().status_error(response, what)
        if error is None:
            return None
        try:
            body = response.json()
            text = body["error"]["message"]["value"] if isinstance(body["error"]["message"], dict) else body["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return error
        message, raw = str(error), self.answer(response)
        plain = message.replace(raw, str(text)) if raw and raw in message else f"{message} ({text})"  # the OData body in words
        return self._error(type(error), plain, response, retry_after=error.retry_after, status=error.status)


class ExactOnlineSource(Source):
    """Documents of Exact Online divisions; see the module docstring."""

    lists_everything = False  # the sync API's changes since the cursor
    options_model = ExactOptions

    def __init__(self, block):
        super().__init__(block)
        self._auth = None
        self._clients: dict[int | str, HttpClient] = {}

    # -- plumbing ---------------------------------------------------------------------------------------
    def auth(self):
        if self._auth is None:
            self._auth = BearerAuth(TokenManager(self.block))
        return self._auth

    def http(self, division: int | None) -> HttpClient:
        """The HTTP client of a division (its own pacer: Exact's budgets are per division); None: current/Me."""
        key = division if division is not None else "me"
        if key not in self._clients:
            b = self.block
            base = f"{b.base_url}/api/v1" + (f"/{division}" if division is not None else "")
            self._clients[key] = ExactHttpClient(
                f"{self.label}" + (f" division {division}" if division is not None else ""), base_url=base,
                verify=b.verify_tls, ca_bundle=b.ca_bundle, timeout=b.request_timeout, auth=self.auth(),
                headers={"Accept": "application/json", "Prefer": "return=representation"},
                secrets=b.secret_values(), pacer=Pacer(max_wait=b.max_wait),
            )
        return self._clients[key]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def division(self, client: str) -> int:
        """The client's Exact division: its identifiers (the integration's), else the block's `divisions`."""
        key = self.block.division_identifier
        integ = self.integration
        raw = None
        if integ is not None and client_key(integ.client) == client_key(client):
            raw = integ.identifiers.get(key)
        if raw is None:
            raw = next((v for c, v in self.block.divisions.items() if client_key(c) == client_key(client)), None)
        if raw is None:
            raise PermanentError(f"{self.label}: no Exact Online division for client {client}: set identifiers.{key} in the "
                                 f"client's file (or divisions on the source block)")
        try:
            return int(str(raw).strip())
        except ValueError:
            raise PermanentError(f"{self.label}: client {client}: identifiers.{key} {raw!r} is not a division number") from None

    @classmethod
    def config_problems(cls, block, integration, where: str) -> list[str]:
        problems = super().config_problems(block, integration, where)
        key = getattr(block, "division_identifier", "exact_division")
        raw = integration.identifiers.get(key)
        mapped = any(client_key(c) == client_key(integration.client) for c in getattr(block, "divisions", {}) or {})
        if raw is None and not mapped:
            problems.append(f"{where}: identifiers.{key}: the client's Exact Online division is missing; add "
                            f"identifiers: {{{key}: <division number>}} (docroute check {integration.source} lists it)")
        elif raw is not None and not str(raw).strip().isdigit():
            problems.append(f"{where}: identifiers.{key}: {raw!r} is not an Exact division number")
        return problems

    def type_map(self) -> dict[int, str]:
        return {**EXACT_TYPES, **{int(k): v for k, v in self.block.type_map.items()},
                **{int(k): v for k, v in self.options.type_map.items()}}

    def _get_all(self, client: HttpClient, path: str, params: dict[str, str], what: str) -> list[dict[str, Any]]:
        """Every row of an OData listing, following __next as given."""
        rows: list[dict[str, Any]] = []
        url, query = path, params
        page = 1
        while url:
            data = client.json(client.get(url, params=query, what=f"{what}, page {page}"), what=what)
            found, url = _results(data)
            rows.extend(found)
            query, page = None, page + 1
        return rows

    def _sync(self, client: HttpClient, entity: str, fields: tuple[str, ...], since: int, what: str) -> list[dict[str, Any]]:
        return self._get_all(client, f"/sync/{entity}", {"$select": ",".join(fields), "$filter": f"Timestamp gt {since}L"}, what)

    def _bulk(self, client: HttpClient, entity: str, fields: tuple[str, ...], filt: str, what: str) -> list[dict[str, Any]]:
        return self._get_all(client, f"/bulk/{entity}", {"$select": ",".join(fields), "$filter": filt}, what)

    def _documents(self, client: HttpClient, ids: list[str]) -> list[dict[str, Any]]:
        out = []
        for i in range(0, len(ids), BATCH):
            filt = " or ".join(f"ID eq {_guid(d)}" for d in ids[i : i + BATCH])
            out += self._bulk(client, "Documents/Documents", DOCUMENT_FIELDS, filt, "documents")
        return out

    def _attachments(self, client: HttpClient, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {d: [] for d in ids}
        for i in range(0, len(ids), BATCH):
            filt = " or ".join(f"Document eq {_guid(d)}" for d in ids[i : i + BATCH])
            for row in self._bulk(client, "Documents/DocumentAttachments", ATTACHMENT_FIELDS, filt, "attachments"):
                out.setdefault(str(row.get("Document")), []).append(row)
        return out

    # -- mapping --------------------------------------------------------------------------------------
    def _approved(self, rec: dict[str, Any]) -> bool:
        rule = self.block.approval
        if rule == "any" or (self.integration is not None and not self.integration.filters.approved_only):
            return True
        processed = rec.get("ProposedEntryStatus") == PROCESSED
        entry = str(rec.get("FinancialTransactionEntryID") or "")
        booked = bool(entry) and entry != EMPTY_GUID
        return {"processed": processed, "booked": booked}.get(rule, processed or booked)

    def _candidate(self, client: str, division: int, rec: dict[str, Any],
                   attachments: list[dict[str, Any]] | None) -> Candidate | SourceProblem:
        doc_id = str(rec["ID"])
        try:
            kind = int(rec.get("Type"))
        except (TypeError, ValueError):
            kind = -1
        doc_type = self.type_map().get(kind, f"exact-type-{kind}")
        approved = self._approved(rec)
        modified = exact_time(rec.get("Modified")) or exact_time(rec.get("Created"))
        files = sorted(attachments or [], key=lambda a: (_media(str(a.get("FileName") or "")) != "application/pdf",
                                                         str(a.get("FileName") or ""), str(a.get("ID"))))
        fp = "|".join([str(rec.get("Modified")), str(rec.get("ProposedEntryStatus")), str(rec.get("FinancialTransactionEntryID")),
                       ",".join(f"{a.get('ID')}:{a.get('FileSize')}:{a.get('FileName')}" for a in files)])
        cand = Candidate(
            doc_id=doc_id, client=client, type=doc_type, status=APPROVED if approved else "pending",
            approved_at=modified if approved else None, fingerprint=fp, fields=record_fields(rec, doc_type),
            handle={"division": division, "attachments": files if attachments is not None else None},
        )
        if approved and attachments is not None and not files:
            return SourceProblem(doc_id, client, f"document {doc_id}: it has no attachment in {self.label} division "
                                 f"{division}: nothing to export (attach its PDF in Exact Online)", False, cand)
        return cand

    # -- scanning ---------------------------------------------------------------------------------------
    def scan(self, client: str, cursor: str | None, window: Window) -> Scan:
        division = self.division(client)
        http = self.http(division)
        state = _state(cursor, division)
        if window.ranged:
            start = window.start.astimezone(AMSTERDAM).replace(tzinfo=None).isoformat(timespec="seconds")
            end = window.end.astimezone(AMSTERDAM).replace(tzinfo=None).isoformat(timespec="seconds")
            filt = f"Modified ge datetime'{start}' and Modified le datetime'{end}'"
            docs = self._bulk(http, "Documents/Documents", DOCUMENT_FIELDS, filt, f"documents of division {division} by Modified")
            return self._candidates(client, division, http, {str(d["ID"]): d for d in docs}, cursor)
        marks = dict(state)
        docs = self._sync(http, "Documents/Documents", ("Timestamp",) + DOCUMENT_FIELDS, state["documents"],
                          f"changed documents of division {division}")
        atts = self._sync(http, "Documents/DocumentAttachments", ("Timestamp",) + ATTACHMENT_FIELDS, state["attachments"],
                          f"changed attachments of division {division}")
        gone: list[dict[str, Any]] = []
        if state["deleted"] >= 0:
            try:
                gone = self._sync(http, "Deleted", ("Timestamp", "EntityKey", "EntityType", "DeletedDate", "Division", "ID"),
                                  state["deleted"], f"deletions of division {division}")
            except PermanentError as exc:
                if exc.status != 403:
                    raise
                # the app lacks "Retrieve deleted records through web services": not asked again (each refused
                # call counts towards the 10 errors an hour that block the key); deletions are then found by reading
                marks["deleted"] = -1
        for name, rows in (("documents", docs), ("attachments", atts), ("deleted", gone)):
            if marks.get(name) != -1:
                marks[name] = max([state[name]] + [int(r["Timestamp"]) for r in rows if r.get("Timestamp") is not None])
        deleted = {str(r.get("EntityKey")).lower() for r in gone if r.get("EntityType") == DOCUMENTS}
        records: dict[str, dict[str, Any]] = {}
        for rec in sorted(docs, key=lambda r: int(r.get("Timestamp") or 0)):
            records[str(rec["ID"])] = rec  # the latest change of a document wins
        wanted = {str(a.get("Document")) for a in atts} | set(state["retry"])
        missing = sorted(d for d in wanted - set(records) if d.lower() not in deleted)
        for rec in self._documents(http, missing) if missing else []:
            records[str(rec["ID"])] = rec
        records = {k: v for k, v in records.items() if k.lower() not in deleted}
        result = self._candidates(client, division, http, records, None)
        # problems, and documents approved after the window's end (the engine leaves them to the next run,
        # but the Timestamp cursor moves past them), are read again on the next scan
        later = {c.doc_id for c in result.candidates if c.approved and c.approved_at > window.end}
        marks["retry"] = sorted({p.doc_id for p in result.problems} | later)
        marks["division"] = division
        result.cursor = json.dumps({"v": 1, **marks}, separators=(",", ":"))
        return result

    def _candidates(self, client: str, division: int, http: HttpClient, records: dict[str, dict[str, Any]],
                    cursor: str | None) -> Scan:
        approved = [d for d, rec in records.items() if self._approved(rec)]
        attachments = self._attachments(http, approved) if approved else {}
        bare = [d for d in approved if not attachments.get(d)]
        if bare:  # no attachment: still there (a problem to report), or deleted while we read (nothing to take)?
            still = {str(r["ID"]) for r in self._documents(http, bare)}
            records = {d: rec for d, rec in records.items() if d not in bare or d in still}
        found: list[Candidate] = []
        problems: list[SourceProblem] = []
        for doc_id in sorted(records):
            result = self._candidate(client, division, records[doc_id], attachments.get(doc_id) if doc_id in attachments else None)
            (problems if isinstance(result, SourceProblem) else found).append(result)
        return Scan(found, problems, cursor)

    def find(self, doc_id: str, client: str) -> Candidate | SourceProblem | None:
        try:
            division = self.division(client)
        except PermanentError:
            return None  # no division for this client here: not its document
        http = self.http(division)
        rows = self._documents(http, [doc_id])
        if not rows:
            return None
        rec = rows[0]
        attachments = self._attachments(http, [str(rec["ID"])]).get(str(rec["ID"]), []) if self._approved(rec) else None
        return self._candidate(client, division, rec, attachments)

    def deleted(self, client: str, cursor: str | None) -> list[str]:
        """Documents of the client's division deleted since the cursor (sync/Deleted, EntityType 6)."""
        division = self.division(client)
        state = _state(cursor, division)
        if state["deleted"] < 0:
            return []  # the app may not read deletions (see scan)
        rows = self._sync(self.http(division), "Deleted", ("Timestamp", "EntityKey", "EntityType", "Division"),
                          state["deleted"], f"deletions of division {division}")
        return sorted({str(r.get("EntityKey")) for r in rows if r.get("EntityType") == DOCUMENTS})

    # -- reading ----------------------------------------------------------------------------------------
    def fetch(self, candidate: Candidate) -> Document | SourceProblem:
        doc_id, division = candidate.doc_id, candidate.handle["division"]
        http = self.http(division)
        attachments = candidate.handle.get("attachments")
        try:
            if attachments is None:
                attachments = self._attachments(http, [doc_id]).get(doc_id, [])
            if not attachments:
                return SourceProblem(doc_id, candidate.client, f"document {doc_id}: it has no attachment in {self.label} "
                                     f"division {division}: nothing to export", False, candidate)
            files: list[DocumentFile] = []
            heads: list[bytes] = []
            for att in attachments:
                name = str(att.get("FileName") or f"{att.get('ID')}")
                url = str(att.get("Url") or "")
                if not url:
                    return SourceProblem(doc_id, candidate.client, f"document {doc_id}: attachment {name} has no Url", False, candidate)
                link = url + ("&" if "?" in url else "?") + "Download=1"
                response = http.get(link, what=f"attachment {name} of document {doc_id}", stream=True)
                try:
                    spool = spool_stream(response.iter_content(256 * 1024))
                except (requests.RequestException, OSError) as exc:
                    raise TransientError(f"attachment {name} of document {doc_id}: {self.label}: the download was cut off "
                                         f"({type(exc).__name__})") from None
                finally:
                    response.close()
                if spool.size == 0:
                    return SourceProblem(doc_id, candidate.client, f"document {doc_id}: attachment {name} is empty (0 bytes)",
                                         False, candidate)
                files.append(spool.document_file(name, _media(name)))
                heads.append(spool.head)
            if files[0].media_type == "application/pdf" and not heads[0].startswith(b"%PDF-"):
                return SourceProblem(doc_id, candidate.client, f"document {doc_id}: {files[0].name} is not a PDF (no %PDF- header)",
                                     False, candidate)
        except (CredentialsRefusedError, BudgetExhaustedError):
            raise
        except PermanentError as exc:
            if exc.status == 404:
                return SourceProblem(doc_id, candidate.client, f"document {doc_id}: no longer in {self.label} division "
                                     f"{division} (deleted since it was listed)", True, candidate)
            return SourceProblem(doc_id, candidate.client, f"document {doc_id}: {exc}", False, candidate)
        except TransientError as exc:
            return SourceProblem(doc_id, candidate.client, f"document {doc_id}: cannot read it yet: {exc}", True, candidate)
        return Document(
            id=doc_id, client=candidate.client, type=candidate.type, sub_organisation=candidate.sub_organisation,
            tags=list(candidate.tags), status=candidate.status, approved_at=candidate.approved_at,
            fields=dict(candidate.fields), files=files, version=version_of(files), handle=candidate.handle,
        )

    # -- check ------------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            http = self.http(None)
            me = _results(http.json(http.get("/current/Me", params={"$select": "CurrentDivision,FullName,UserName"},
                                              what="connection check"), what="connection check"))[0]
        except RemoteError as exc:
            return CheckResult(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        user = me[0] if me else {}
        who = user.get("FullName") or user.get("UserName") or "?"
        known = ", ".join(f"{c}: {d}" for c, d in sorted(self.block.divisions.items()))
        return CheckResult(True, f"{self.label}: signed in as {who}, current division {user.get('CurrentDivision', '?')}"
                                 + (f"; divisions {known}" if known else ""))


def _state(cursor: str | None, division: int) -> dict[str, Any]:
    """The cursor of `division` (another division's, or none: from the start, Timestamp 1)."""
    fresh = {"documents": 1, "attachments": 1, "deleted": 1, "retry": []}
    if not cursor:
        return fresh
    try:
        state = json.loads(cursor)
    except ValueError:
        return fresh
    if not isinstance(state, dict) or state.get("v") != 1 or state.get("division") != division:
        return fresh
    return {k: state.get(k, v) for k, v in fresh.items()}
