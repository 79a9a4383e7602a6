"""GetMyInvoices (accounts API v3) as a source (block `getmyinvoices-source`).

The contract is ../shared/reference/sources.md section 1; what it leaves open is decided here, said
in the block's field descriptions and docs/api-sources.md, and followed by the test server
(tests/fakes/getmyinvoices_api.py).

Listing. GET /documents with updatedOrNewSinceFilter ("Y-m-d H:i:s", in the account's time zone)
from the earlier of the window's start (the last check minus the integration's lookback) and the
cursor's poll start minus OVERLAP; archivedFilter 0 (1 with include_archived); documentTypeFilter
and tagFilter[] only where they cannot lose a document (one GetMyInvoices type; one tag; the
engine filters again); pageNumber paging at perPage 500. Records arrive as a list or as an object
keyed by uid, booleans as true/false or 0/1, and are de-duplicated on documentUid. A listing
whose totalCount changes between pages is read again from page 1 (at most LIST_PASSES times; what
every pass saw is kept): a page that shifted while it was read loses nothing, and the next scan
lists the lookback again anyway.

Approval. There is no approval filter and no approval time in the list. A document is approved when
its workflow is completed: GET /documents/{uid}?includeDocument=false (workflowDetails.isCompleted),
asked for every listed document not already known approved with the same list fingerprint (the
cursor keeps those, for the documents of the current listing only), so a pending document in the
lookback is asked again on each scan: a late approval is found even if GetMyInvoices does not
count it as an update. Its approval time is workflowDetails.completedAt when GetMyInvoices sends it
(an assumption: the 2024 spec names no such field), else the time a scan first saw it completed
(kept in the cursor). An integration with `filters.approved_only: false` (GetMyInvoices' own
approval flag) takes every document on arrival: approved at its creation time, no call per document.

Reading. GET /documents/{uid} answers the file base64 in fileContent: decoded into a spool while
the answer streams (tasks/sources/api_files.py), never held twice. Attachments (GET .../attachments
and each .../attachments/{id}, same shape) are extra files, after the main one. Bad base64 is the
document's permanent problem; a document gone (422 code 106, 404) a transient one (the next run
finds it gone and supersedes it).

Marking. mark_exported archives (PUT {"isArchived": 1}) or adds the export tag (PUT with the full
tag list), per block or per integration (source_options.mark_exported). A locked document (422
code 147) is refused: the engine reports it and does not try again.

Errors (GmiHttpClient): 403 and body codes 403/407/430/431 are refused credentials naming the
source; 429 (or body code 429) is a rate limit: Retry-After honoured, or a daily limit that stops
the run ("daily limit reached, resumes at <midnight in the account's zone>"); 415 and 422 are
permanent, with GetMyInvoices' code; 503 transient. Calls are paced at `calls_per_minute`.
"""

from __future__ import annotations

import json
import mimetypes
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo

import requests

from tasks.connectors.base import CheckResult
from tasks.documents import APPROVED, Candidate, Document, DocumentFile, SourceProblem, client_key, version_of
from tasks.errors import (
    BudgetExhaustedError,
    CredentialsRefusedError,
    PermanentError,
    RemoteError,
    TransientError,
)
from tasks.http import HttpClient, Pacer, parse_retry_after
from tasks.sources.api_files import CorruptContent, Spool, blob, read_json_with_files
from tasks.sources.base import Scan, Source, SourceOptions, Window

# -- the mapping from GetMyInvoices' fields to ours: here and nowhere else -----------------------------
GMI_TYPES = {
    "INCOMING_INVOICE": "invoice",
    "CREDIT_NOTE": "credit_note",
    "SALES_INVOICE": "sales_invoice",
    "ORDER_CONFIRMATION": "order_confirmation",
    "DELIVERY_NOTE": "delivery_note",
    "RECEIPT": "receipt",
    "PAYMENT_RECEIPT": "payment_receipt",
    "EXPENSE_REIMBURSEMENT": "expense_reimbursement",
    "TRAVEL_EXPENSES": "travel_expenses",
    "STATEMENT": "statement",
    "REMINDER": "reminder",
    "PAYROLL": "payroll",
    "COMPANY_REGISTRATION_DOCUMENT": "company_registration",
    "MISC": "misc",
}
FIELDS = (  # (our metadata field, GetMyInvoices record key, kind)
    ("number", "documentNumber", "text"),
    ("supplier", "companyName", "text"),
    ("supplier_vat", "vat_id", "text"),
    ("issue_date", "documentDate", "date"),
    ("due_date", "documentDueDate", "date"),
    ("currency", "currency", "text"),
    ("net", "netAmount", "amount"),
    ("tax", "vat", "amount"),
    ("total", "grossAmount", "amount"),
    ("order_number", "orderNumber", "text"),
    ("payment_status", "paymentStatus", "text"),
)
APPROVAL_TIME_KEY = "completedAt"  # in workflowDetails: assumed (docs/api-sources.md); absent, the first time seen completed
MEDIA = {"pdf": "application/pdf", "xml": "application/xml", "eml": "message/rfc822"}

FINGERPRINT_KEYS = ("filename", "fileSize", "documentType", "documentNumber", "documentDate", "grossAmount", "netAmount",
                    "currency", "companyName", "isArchived", "isLocked", "isOcrCompleted")
OVERLAP = timedelta(minutes=10)  # before the cursor's poll start: clocks and the zone of updatedOrNewSinceFilter
LIST_PASSES = 3
GONE_CODES = {106}  # "invalid document UID"
LOCKED = 147
CREDENTIAL_CODES = {403, 407, 430, 431}  # key does not exist, blocked, no permission, account cancelled


class GmiOptions(SourceOptions):
    """An integration's settings for a GetMyInvoices source (source_options)."""

    type_map: dict[str, str] = {}  # GetMyInvoices documentType -> docroute type, over the block's and the defaults
    mark_exported: Literal["archive", "tag"] | None = None  # None: the block's
    export_tag: str | None = None  # None: the block's


def _bool(value: Any) -> bool:
    """GetMyInvoices' booleans: true/false, 0/1, "0"/"1"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _amount(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        try:
            return f"{Decimal(str(value)):.2f}"
        except InvalidOperation:
            return str(value)
    return str(value)


def _date(value: Any) -> date | None:
    text = str(value or "").strip()[:10]
    if not text or text.startswith("0000"):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def record_fields(rec: dict[str, Any]) -> dict[str, Any]:
    """Our metadata fields of a GetMyInvoices record (only those it holds)."""
    out: dict[str, Any] = {}
    for ours, theirs, kind in FIELDS:
        value = rec.get(theirs)
        if value is None or value == "":
            continue
        if kind == "amount":
            out[ours] = _amount(value)
        elif kind == "date":
            d = _date(value)
            if d is not None:
                out[ours] = d.isoformat()
        else:
            out[ours] = str(value)
    return out


def _records(data: Any) -> list[dict[str, Any]]:
    """A list answer's records: an array, or an object keyed by uid (GetMyInvoices sends both)."""
    records = data.get("records") if isinstance(data, dict) else None
    if isinstance(records, dict):
        records = list(records.values())
    return [r for r in records or [] if isinstance(r, dict)]


def _media(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return MEDIA.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


class GmiHttpClient(HttpClient):
    """HttpClient with GetMyInvoices' answers classified by status and by the code in the body."""

    def __init__(self, *args: Any, zone: ZoneInfo | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.zone = zone or ZoneInfo("UTC")

    def status_error(self, response: requests.Response, what: str = "") -> RemoteError | None:
        status = response.status_code
        if 200 <= status < 300:
            return None
        code, detail = _code(response)
        who = f"{what}: " if what else ""
        said = f"{detail} (code {code})" if code is not None else (detail or response.reason or "")
        if status == 429 or code == 429:
            if "day" in (detail or "").lower() or "daily" in (detail or "").lower():
                now = datetime.now(self.zone)
                midnight = datetime.combine(now.date() + timedelta(days=1), time(0), self.zone).astimezone(timezone.utc)
                retry = parse_retry_after(response.headers.get("Retry-After"))
                resumes = datetime.now(timezone.utc) + timedelta(seconds=retry) if retry else midnight
                return BudgetExhaustedError(f"{who}{self.label}: daily limit reached, resumes at {resumes:%Y-%m-%d %H:%M:%S} UTC "
                                            f"({said})", resumes_at=resumes)
            retry = parse_retry_after(response.headers.get("Retry-After"))
            return TransientError(f"{who}{self.label} answered {status}: rate limit ({said})"
                                  + (f" (Retry-After {retry:g} s)" if retry is not None else ""),
                                  retry_after=retry if retry is not None else 60.0, status=status)
        if status == 403 or (status in (400, 401) and code in CREDENTIAL_CODES) or code in CREDENTIAL_CODES:
            return self._error(CredentialsRefusedError, f"{who}{self.label} refused the API key: {said}; set a valid "
                               f"api_key on the source block (GetMyInvoices: Profile > API Access)", response, status=status)
        if status == 415:
            return self._error(PermanentError, f"{who}{self.label} answered 415: {said} (the request's content type)",
                               response, status=status)
        if status == 422:
            error = self._error(PermanentError, f"{who}{self.label} answered 422: {said}", response, status=status)
            error.code = code  # type: ignore[attr-defined]
            return error
        return super().status_error(response, what)


def _code(response: requests.Response) -> tuple[int | None, str]:
    """GetMyInvoices' error code and detail: {code, detail}, {error_code, detail} or {errors: [{code, detail}]}."""
    try:
        body = json.loads(response.content[:65536] or b"null")
    except ValueError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    raw = body.get("error_code", body.get("code", first.get("code")))
    try:
        code = int(raw) if raw is not None else None
    except (TypeError, ValueError):
        code = None
    detail = body.get("detail") or body.get("message") or first.get("detail") or ""
    return code, str(detail)[:300]


def error_code(exc: BaseException) -> int | None:
    return getattr(exc, "code", None)


class GetMyInvoicesSource(Source):
    """Documents of a GetMyInvoices account; see the module docstring."""

    lists_everything = False  # a window from the cursor: the lookback bounds how late an approval is found
    options_model = GmiOptions

    def __init__(self, block):
        super().__init__(block)
        self._client: GmiHttpClient | None = None
        self._zone: ZoneInfo | None = ZoneInfo(block.timezone) if block.timezone else None

    # -- plumbing ---------------------------------------------------------------------------------------
    @property
    def client(self) -> GmiHttpClient:
        if self._client is None:
            b = self.block
            pacer = Pacer(b.calls_per_minute, 60.0) if b.calls_per_minute else Pacer()
            self._client = GmiHttpClient(
                self.label, base_url=b.base_url, verify=b.verify_tls, ca_bundle=b.ca_bundle, timeout=b.request_timeout,
                headers={"X-API-KEY": b.api_key.get_secret_value(), "Content-Type": "application/json",
                         "Accept": "application/json", "x-application": "docroute"},
                secrets=b.secret_values(), pacer=pacer, zone=self._zone,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def zone(self) -> ZoneInfo:
        """The account's time zone: the block's, else GET /account's (asked once), else UTC."""
        if self._zone is None:
            named = None
            try:
                account = self.client.json(self.client.get("/account", what="account"), what="account")
                named = account.get("timezone") if isinstance(account, dict) else None
                self._zone = ZoneInfo(named) if named else ZoneInfo("UTC")
            except (RemoteError, ValueError, KeyError):
                if named is None:
                    raise
                self._zone = ZoneInfo("UTC")
            self.client.zone = self._zone
        return self._zone

    def _time(self, value: Any) -> datetime | None:
        """A GetMyInvoices date-time ("Y-m-d H:i:s", or a date) in the account's zone, as UTC."""
        text = str(value or "").strip()
        if not text or text.startswith("0000"):
            return None
        try:
            when = datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone())
        return when.astimezone(timezone.utc)

    def _stamp(self, when: datetime) -> str:
        return when.astimezone(self.zone()).strftime("%Y-%m-%d %H:%M:%S")

    def type_map(self) -> dict[str, str]:
        return {**GMI_TYPES, **self.block.type_map, **self.options.type_map}

    def _mark_mode(self) -> tuple[str, str]:
        return (self.options.mark_exported or self.block.mark_exported, self.options.export_tag or self.block.export_tag)

    def _whose(self, rec: dict[str, Any]) -> str:
        """The client a record belongs to (as compared: trimmed, case-folded); "" when none."""
        prefix = self.block.client_tag_prefix
        if prefix:
            for tag in rec.get("tags") or []:
                if isinstance(tag, str) and tag.startswith(prefix) and tag[len(prefix):].strip():
                    return client_key(tag[len(prefix):])
        return client_key(self.block.client) if self.block.client else ""

    def _serves(self, client: str) -> bool:
        return bool(self.block.client_tag_prefix) or client_key(self.block.client) == client_key(client)

    def _exported(self, rec: dict[str, Any]) -> bool:
        mode, tag = self._mark_mode()
        if mode == "archive":
            return _bool(rec.get("isArchived")) and not self.block.include_archived
        return tag in (rec.get("tags") or [])

    def _on_arrival(self) -> bool:
        return self.integration is not None and not self.integration.filters.approved_only

    # -- listing ----------------------------------------------------------------------------------------
    def _filters(self, client: str) -> dict[str, Any]:
        params: dict[str, Any] = {"archivedFilter": 1 if self.block.include_archived else 0, "perPage": self.block.page_size}
        tags: list[str] = []
        if self.block.client_tag_prefix:
            tags.append(f"{self.block.client_tag_prefix}{client}")
        integ = self.integration
        if integ is not None:
            wanted = set(integ.filters.document_types)
            theirs = sorted(t for t, ours in self.type_map().items() if ours in wanted)
            if wanted and len(theirs) == 1 and all(any(o == w for o in self.type_map().values()) for w in wanted):
                params["documentTypeFilter"] = theirs[0]  # one GetMyInvoices type: the server filters
            if not tags and len(integ.filters.tags) == 1:
                tags.append(integ.filters.tags[0])  # one tag: "any of" and "all of" mean the same
        if tags:
            params["tagFilter[]"] = tags
        return params

    def _list(self, params: dict[str, Any], what: str) -> list[dict[str, Any]]:
        """Every record of a listing, de-duplicated on documentUid; read again when it changed under us."""
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(LIST_PASSES):
            total, page, shifted = None, 1, False
            while True:
                data = self.client.json(self.client.get("/documents", params={**params, "pageNumber": page},
                                                        what=f"{what}, page {page}"), what=what)
                if not isinstance(data, dict):
                    raise PermanentError(f"{what}: {self.label} answered a listing that is not an object")
                count = data.get("totalCount")
                if total is None:
                    total = count
                elif count != total:
                    shifted = True  # documents came or went while we paged: read it again
                    break
                records = _records(data)
                for rec in records:
                    if rec.get("documentUid") is not None:
                        seen[str(rec["documentUid"])] = rec
                pages = data.get("maxPages")
                try:
                    pages = int(pages) if pages is not None else -(-int(total or 0) // self.block.page_size)
                except (TypeError, ValueError):
                    pages = None
                if not records or (pages is not None and page >= pages):
                    break
                page += 1
            if not shifted:
                break
        return list(seen.values())

    def _fingerprint(self, rec: dict[str, Any]) -> str:
        """Changes when the listed record does (it has no modified time): file, metadata, tags, flags."""
        parts = [str(rec.get(k)) for k in FINGERPRINT_KEYS] + [",".join(sorted(str(t) for t in rec.get("tags") or []))]
        return "|".join(parts)

    def scan(self, client: str, cursor: str | None, window: Window) -> Scan:
        """New and changed documents since the cursor, the pending ones that got approved, and the problems.

        The cursor (JSON) keeps the poll's start time, the list fingerprints of the approved documents
        the last listing saw (a document listed again unchanged, in the overlap, is not brought twice),
        the documents still pending (asked again each scan until approved, gone or older than the
        window's start: the lookback bounds a late approval), and the problems and the documents
        approved after the window's end (read again each scan: never dropped; the engine leaves a
        document approved while its run runs to the next run). A backfill (window.ranged) lists by
        document date instead."""
        if not self._serves(client):
            return Scan([], [], cursor)
        state = _state(cursor)
        started = datetime.now(timezone.utc)
        params = self._filters(client)
        if window.ranged:  # a backfill: by document date (GetMyInvoices' own "period")
            params["startDateFilter"] = window.start.astimezone(timezone.utc).date().isoformat()
            params["endDateFilter"] = window.end.astimezone(timezone.utc).date().isoformat()
        else:
            since = window.start if not state.get("since") else datetime.fromisoformat(state["since"])
            params["updatedOrNewSinceFilter"] = self._stamp(since - OVERLAP)
        records = self._list(params, f"listing of {client}'s documents")
        known: dict[str, list] = state.get("known") or {}
        pending: dict[str, str] = dict(state.get("pending") or {})
        retry: list[str] = list(state.get("retry") or [])
        kept: dict[str, list] = {}
        still: dict[str, str] = {}
        later: set[str] = set()
        found: list[Candidate] = []
        problems: list[SourceProblem] = []

        def take(uid: str, result: Candidate | SourceProblem, fp: str | None) -> None:
            cand = result.candidate if isinstance(result, SourceProblem) else result
            if isinstance(result, SourceProblem):
                problems.append(result)
            elif not result.approved and uid in pending and not window.ranged:
                still[uid] = pending[uid]  # still waiting for approval: nothing new to say
                return
            else:
                found.append(result)
            if cand is not None and not cand.approved:
                still[uid] = pending.get(uid) or started.isoformat()
            elif cand is not None and cand.approved_at > window.end and not window.ranged:
                later.add(uid)  # approved after the window: the next run's (the engine may leave it), so read it again
            elif cand is not None and fp is not None:
                kept[uid] = [fp, cand.approved_at.isoformat()]

        listed = set()
        for rec in sorted(records, key=lambda r: str(r.get("documentUid"))):
            uid = str(rec.get("documentUid"))
            listed.add(uid)
            if self._whose(rec) != client_key(client) or self._exported(rec):
                continue
            fp = self._fingerprint(rec)
            prior = known.get(uid)
            unchanged = prior is not None and prior[0] == fp and uid not in retry
            if unchanged and not window.ranged:
                kept[uid] = prior  # listed again in the overlap, as it was: the engine has it
                continue
            if self._on_arrival():
                take(uid, self._candidate(client, rec, None, None), fp)
            elif unchanged:
                take(uid, self._candidate(client, rec, None, datetime.fromisoformat(prior[1])), fp)
            else:
                meta = self._meta(uid)
                if meta is not None:  # else gone since the listing
                    take(uid, self._candidate(client, {**rec, **meta}, meta.get("workflowDetails") or {},
                                              datetime.fromisoformat(prior[1]) if prior else started), fp)
        if not window.ranged:
            for uid in sorted(set(pending) | set(retry)):
                if uid in listed or (uid in pending and uid not in retry and datetime.fromisoformat(pending[uid]) < window.start):
                    continue  # listed above; or pending for longer than the lookback: no longer asked
                result = self.find(uid, client)
                if result is not None:
                    take(uid, result, self._fingerprint(result.handle["record"]) if isinstance(result, Candidate) else None)
        if window.ranged:
            return Scan(found, problems, cursor)
        cursor_out = {"v": 1, "since": started.isoformat(), "known": kept, "pending": still,
                      "retry": sorted({p.doc_id for p in problems} | later)}
        return Scan(found, problems, json.dumps(cursor_out, separators=(",", ":")))

    def _meta(self, uid: str) -> dict[str, Any] | None:
        """One document's metadata with its workflow, without the file; None when it is gone."""
        try:
            data = self.client.json(self.client.get(f"/documents/{uid}", params={"includeDocument": "false", "documentApproval": "true"},
                                                    what=f"document {uid}"), what=f"document {uid}")
        except PermanentError as exc:
            if exc.status == 404 or error_code(exc) in GONE_CODES:
                return None
            raise
        meta = data.get("meta_data") if isinstance(data, dict) else None
        return meta if isinstance(meta, dict) else {}

    def _candidate(self, client: str, rec: dict[str, Any], workflow: dict[str, Any] | None,
                   first_seen: datetime | None) -> Candidate | SourceProblem:
        """Map a record (with its workflow, when read) to a Candidate; a record without a file is a problem."""
        uid = str(rec["documentUid"])
        theirs = str(rec.get("documentType") or "")
        doc_type = self.type_map().get(theirs, theirs.lower() or "unknown")
        created = self._time(rec.get("dateTimeCreatedAt")) or self._time(rec.get("createdAt"))
        if self._on_arrival():
            status, approved_at = APPROVED, created
        elif workflow is None:  # known approved with this fingerprint: its approval time from the cursor
            status, approved_at = APPROVED, first_seen
        elif _bool(workflow.get("isCompleted")):
            status, approved_at = APPROVED, self._time(workflow.get(APPROVAL_TIME_KEY)) or first_seen
        else:
            status, approved_at = "pending", None
        tags = [str(t) for t in rec.get("tags") or []]
        cand = Candidate(
            doc_id=uid, client=client, type=doc_type, status=status, approved_at=approved_at,
            fingerprint=f"{self._fingerprint(rec)}|{status}", tags=tags, fields=record_fields(rec),
            handle={"uid": uid, "attachments": rec.get("attachments"), "document_date": str(_date(rec.get("documentDate")) or ""),
                    "filename": rec.get("filename"), "record": {k: rec.get(k) for k in FINGERPRINT_KEYS + ("tags",)}},
        )
        if not rec.get("filename") or str(rec.get("fileSize", "1")) in ("0", ""):
            return SourceProblem(uid, client, f"document {uid}: GetMyInvoices holds no file for it (fileSize 0); "
                                 f"upload its file in GetMyInvoices", False, cand)
        return cand

    def find(self, doc_id: str, client: str) -> Candidate | SourceProblem | None:
        if not self._serves(client):
            return None
        meta = self._meta(doc_id)
        if meta is None or not meta or self._whose(meta) != client_key(client) or self._exported(meta):
            return None
        meta.setdefault("documentUid", doc_id)
        return self._candidate(client, meta, meta.get("workflowDetails") or {}, datetime.now(timezone.utc))

    def in_range(self, candidate: Candidate, window: Window) -> bool:
        """A backfill selects by document date (GetMyInvoices' period), in whole days."""
        d = _date((candidate.handle or {}).get("document_date"))
        if d is None:
            return window.holds(candidate.approved_at)
        return window.start.astimezone(timezone.utc).date() <= d <= window.end.astimezone(timezone.utc).date()

    # -- reading ----------------------------------------------------------------------------------------
    def fetch(self, candidate: Candidate) -> Document | SourceProblem:
        uid = candidate.doc_id
        try:
            meta, main = self._download(f"/documents/{uid}", {"includeDocument": "true", "documentApproval": "false"},
                                        f"document {uid}")
            if meta is None:
                return SourceProblem(uid, candidate.client, f"document {uid}: no longer in {self.label} (deleted since it "
                                     f"was listed)", True, candidate)
            if main is None:
                return SourceProblem(uid, candidate.client, f"document {uid}: {self.label} sent no file for it", False, candidate)
            name = str(meta.get("filename") or candidate.handle.get("filename") or f"{uid}.pdf")
            files = [main.document_file(name, _media(name))]
            if main.size == 0:
                return SourceProblem(uid, candidate.client, f"document {uid}: {name} is empty (0 bytes)", False, candidate)
            if files[0].media_type == "application/pdf" and not main.head.startswith(b"%PDF-"):
                return SourceProblem(uid, candidate.client, f"document {uid}: {name} is not a PDF (no %PDF- header)", False, candidate)
            count = meta.get("attachments", candidate.handle.get("attachments"))
            if count is None or str(count) not in ("0", "False", "false"):
                files += self._attachments(uid)
        except CorruptContent as exc:
            return SourceProblem(uid, candidate.client, f"document {uid}: its file from {self.label} is corrupt: {exc}", False, candidate)
        except (CredentialsRefusedError, BudgetExhaustedError):
            raise
        except PermanentError as exc:
            if exc.status == 404 or error_code(exc) in GONE_CODES:
                return SourceProblem(uid, candidate.client, f"document {uid}: no longer in {self.label} (deleted since it "
                                     f"was listed)", True, candidate)
            return SourceProblem(uid, candidate.client, f"document {uid}: {exc}", False, candidate)
        except TransientError as exc:
            return SourceProblem(uid, candidate.client, f"document {uid}: cannot read it yet: {exc}", True, candidate)
        tags = [str(t) for t in meta.get("tags") or candidate.tags]
        return Document(
            id=uid, client=candidate.client, type=candidate.type, sub_organisation=candidate.sub_organisation,
            tags=tags, status=candidate.status, approved_at=candidate.approved_at, fields=dict(candidate.fields),
            files=files, version=version_of(files), handle={"uid": uid, "tags": tags},
        )

    def _download(self, path: str, params: dict[str, str], what: str) -> tuple[dict[str, Any] | None, Spool | None]:
        """(meta_data, the file's spool) of an answer carrying fileContent, decoded while it streams."""
        response = self.client.get(path, params=params, what=what, stream=True)
        try:
            data, spools = read_json_with_files(response.iter_content(256 * 1024), {"fileContent"}, what)
        except (requests.RequestException, OSError) as exc:
            raise TransientError(f"{what}: {self.label}: the answer was cut off ({type(exc).__name__})") from None
        except CorruptContent:
            raise
        except ValueError as exc:
            raise TransientError(f"{what}: {self.label} answered JSON that does not parse: {exc}") from None
        finally:
            response.close()
        if not isinstance(data, dict):
            return {}, None
        meta = data.get("meta_data") if isinstance(data.get("meta_data"), dict) else {}
        return meta, blob(data.get("fileContent"), spools)

    def _attachments(self, uid: str) -> list[DocumentFile]:
        listing = self.client.json(self.client.get(f"/documents/{uid}/attachments", what=f"attachments of document {uid}"),
                                   what=f"attachments of document {uid}")
        files = []
        for rec in _records(listing):
            att = str(rec.get("attachmentUid"))
            what = f"attachment {att} of document {uid}"
            meta, spool = self._download(f"/documents/{uid}/attachments/{att}", {}, what)
            if spool is None:
                raise PermanentError(f"{what}: {self.label} sent no content for it")
            name = str((meta or {}).get("filename") or rec.get("fileName") or f"{uid}-{att}")
            files.append(spool.document_file(name, _media(name)))
        return files

    # -- marking ----------------------------------------------------------------------------------------
    def mark_exported(self, document: Document) -> None:
        uid = document.id
        mode, tag = self._mark_mode()
        if mode == "archive":
            body: dict[str, Any] = {"isArchived": 1}
        else:
            tags = list((document.handle or {}).get("tags") or document.tags)
            if tag in tags:
                return
            body = {"tags": tags + [tag]}  # the full list: GetMyInvoices may replace the tags rather than merge them
        try:
            self.client.request("PUT", f"/documents/{uid}", json=body, idempotent=True, what=f"document {uid}")
        except PermanentError as exc:
            if error_code(exc) == LOCKED:
                raise PermanentError(f"document {uid}: {self.label} refused to {'archive' if mode == 'archive' else 'tag'} it: "
                                     f"the document is locked (code 147, e.g. exported to accounting); it was delivered; "
                                     f"{'archive' if mode == 'archive' else 'tag'} it in GetMyInvoices by hand if needed",
                                     status=422) from None
            if exc.status == 404 or error_code(exc) in GONE_CODES:
                return  # deleted at the source meanwhile: nothing left to mark
            raise
        if mode == "tag":
            document.handle = {**(document.handle or {}), "tags": body["tags"]}

    # -- check ------------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            status = self.client.json(self.client.get("/apiStatus", what="connection check"), what="connection check")
            if not (isinstance(status, dict) and _bool(status.get("success"))):
                return CheckResult(False, f"{self.label}: /apiStatus did not answer success: {str(status)[:200]}")
            account = self.client.json(self.client.get("/account", what="connection check"), what="connection check")
        except RemoteError as exc:
            return CheckResult(False, f"{self.label}: {exc}" if self.label not in str(exc) else str(exc))
        name = account.get("name") if isinstance(account, dict) else None
        ident = account.get("accountId") if isinstance(account, dict) else None
        zone = account.get("timezone") if isinstance(account, dict) else None
        return CheckResult(True, f"{self.label}: API reachable, account {name or '?'} ({ident or '?'})"
                                 + (f", time zone {zone}" if zone else ""))


def _state(cursor: str | None) -> dict[str, Any]:
    """The cursor: {"v": 1, "since": the last poll's start, "known": {uid: [list fingerprint, approved at]}}."""
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        return {}
    return state if isinstance(state, dict) and state.get("v") == 1 else {}
