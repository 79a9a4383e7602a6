"""Exact Online connector: one Exact document per docroute document, its files as DocumentAttachments
(shared/reference/connectors.md section 5; REST over tasks/http.py, OAuth2 over tasks/oauth.py).

The division is the client's: `identifiers: {exact_division: 123456}` in the client file (the key is
the block's `division_identifier`), or `connection_options: {division: 123456}`; one installed app
serves every client (Banqup's pattern: activated per client with the client's company code).

Delivery:
1. Every file is read and checked against its SHA-256 before anything is sent (a broken source sends nothing).
2. POST /api/v1/{division}/documents/Documents {Subject, Type, Body, Account?, DocumentDate?}: Body holds
   the package's idempotency key ("docroute dr_..."), the field a retry looks the document up by.
3. POST /api/v1/{division}/documents/DocumentAttachments {Document, FileName, Attachment (base64)} per file.
Requests say Accept: application/json (Exact answers Atom XML otherwise) and Prefer: return=representation.

Idempotency: before any retry sends anything (a repeat in this run, the next run after a failure, a
crash between upload and record: lookup(), then remove_partial()) the key is looked up with
`$filter=Body eq '<key>'`; a document found is completed (the attachments it lacks, by name and size,
are added) instead of a second one being made. A 429 means Exact did not process the request: it is
repeated after the rate limit's reset.

Rate limits: the HTTP layer's Pacer reads X-RateLimit-Minutely-* and the daily X-RateLimit-* (resets in
epoch milliseconds) and spreads the calls so no 429 is received; a daily budget used up raises
BudgetExhaustedError (the run ends Completed, the rest waiting). A document is not started unless the
day's budget still holds all its calls, so the budget never leaves a document half made.
"""

from __future__ import annotations

import base64
import math
import threading
from typing import Any

from blocks.exact_online_connection import ONLY_LATEST
from tasks.connectors.api_common import not_processed, read_package, render
from tasks.connectors.base import (
    CheckResult,
    Connector,
    ConnectorOptions,
    Delivery,
    Package,
    PermanentDeliveryError,
)
from tasks.errors import BudgetExhaustedError, RemoteError
from tasks.http import HttpClient, Pacer, parse_rate_limits
from tasks.oauth import BearerAuth, TokenManager

KEY_PREFIX = "docroute "


class ExactOptions(ConnectorOptions):
    """An integration's Exact settings (connection_options)."""

    division: int | None = None  # the client's division, when the client's identifiers do not give it
    subject: str = "{doc_type} {number} {supplier}"  # the Exact document's Subject (a template of the document's values)
    document_type: int | None = None  # Exact document Type id for this integration, over the block's document_types
    account_field: str = "exact_account"  # the mapped field holding the Exact Account (GUID) of the supplier, if any


class ExactOnlineConnector(Connector):
    options_model = ExactOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._http: HttpClient | None = None
        self._lock = threading.Lock()
        self._tried: set[str] = set()  # idempotency keys this connector has sent (a repeat looks them up first)
        self._known: dict[str, str] = {}  # key -> Exact document id found or made (a retry completes it)
        self._absent: set[str] = set()  # keys just looked up and not found (the retry that follows need not ask again)
        self._daily: tuple[int, float | None] | None = None  # the last answer's daily calls left and reset (epoch s)

    # -- connection --------------------------------------------------------------------------------
    @property
    def http(self) -> HttpClient:
        if self._http is None:
            block = self.connection
            self._http = HttpClient(
                self.label, base_url=block.api_url, hosts=[block.base_url], auth=BearerAuth(TokenManager(block)),
                secrets=block.secret_values(), ca_bundle=block.ca_bundle, verify=block.verify_tls,
                timeout=(15, block.request_timeout), pacer=Pacer(max_wait=block.max_wait),
                headers={"Accept": "application/json", "Prefer": "return=representation"},
            )
            self._http.session.hooks["response"].append(self._note_budget)
        return self._http

    def _note_budget(self, response, *args: Any, **kwargs: Any) -> None:
        for budget in parse_rate_limits(response.headers):
            if budget.name == "X-RateLimit":
                import time

                self._daily = (budget.remaining, time.time() + budget.reset_in if budget.reset_in is not None else None)

    def open(self) -> None:
        self.http.check_tls()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def check(self) -> CheckResult:
        try:
            me = self._results(self.http.get("current/Me", what="connection check",
                                             params={"$select": "CurrentDivision,FullName,UserName"}), "connection check")
        except RemoteError as exc:
            return CheckResult(False, (str(exc) if self.label in str(exc) else f"{self.label}: {exc}") + f". Note: {ONLY_LATEST}")
        user = me[0] if me else {}
        return CheckResult(True, f"{self.label}: connected as {user.get('FullName') or user.get('UserName') or '?'}, current "
                                 f"division {user.get('CurrentDivision', '?')}; each client's documents go to its own division. "
                                 f"Note: {ONLY_LATEST}")

    # -- helpers ------------------------------------------------------------------------------------
    def _results(self, response, what: str) -> list[dict]:
        body = self.http.json(response, what)
        d = body.get("d") if isinstance(body, dict) else None
        if isinstance(d, dict) and "results" in d:
            return list(d["results"])
        return [d] if isinstance(d, dict) else []

    def _division(self, package: Package) -> int:
        options: ExactOptions = self.options
        value = options.division if options.division is not None else package.values.get(self.connection.division_identifier)
        if value in (None, "") and self.connection.division is not None:
            value = self.connection.division
        try:
            return int(str(value).strip())
        except (TypeError, ValueError):
            raise PermanentDeliveryError(
                f"document {package.doc_id}: no Exact division for client {package.client}: set identifiers."
                f"{self.connection.division_identifier} in the client file (the client's Exact division number), or "
                f"connection_options.division") from None

    def _type(self, package: Package) -> int:
        options: ExactOptions = self.options
        if options.document_type is not None:
            return options.document_type
        try:
            return self.connection.document_types[package.document_type]
        except KeyError:
            raise PermanentDeliveryError(
                f"document {package.doc_id}: document type {package.document_type!r} has no Exact document Type id: add it to "
                f"the connection's document_types, or set connection_options.document_type") from None

    @staticmethod
    def key_text(package: Package) -> str:
        return KEY_PREFIX + package.idempotency_key

    def _find(self, division: int, package: Package) -> str | None:
        """The Exact document carrying this package's key, if one exists ($filter on Body)."""
        what = f"document {package.doc_id}: lookup"
        found = self._results(self.http.get(f"{division}/documents/Documents", what=what, params={
            "$filter": f"Body eq '{self.key_text(package)}'", "$select": "ID,Subject,Body"}), what)
        return str(found[0]["ID"]) if found else None

    def _attachments(self, division: int, doc_id: str, package: Package) -> set[tuple[str, int]]:
        what = f"document {package.doc_id}: attachments"
        found = self._results(self.http.get(f"{division}/documents/DocumentAttachments", what=what, params={
            "$filter": f"Document eq guid'{doc_id}'", "$select": "ID,FileName,FileSize"}), what)
        return {(str(a.get("FileName")), int(float(a.get("FileSize") or -1))) for a in found}

    def _reserve(self, package: Package, calls: int) -> None:
        """Do not start a document the day's budget cannot finish (it would stay half made until tomorrow)."""
        daily = self._daily
        if daily is None or daily[0] >= calls:
            return
        from datetime import UTC, datetime

        left, reset = daily
        resumes = datetime.fromtimestamp(math.ceil(reset), UTC) if reset else None
        when = f", resumes at {resumes:%Y-%m-%d %H:%M:%S} UTC" if resumes else ""
        raise BudgetExhaustedError(f"document {package.doc_id}: {self.label}: daily limit reached ({left} calls left today, the "
                                   f"document needs {calls}){when}", resumes_at=resumes)

    # -- delivery -----------------------------------------------------------------------------------
    def deliver(self, package: Package) -> Delivery:
        contents = read_package(package)  # every file verified before anything is sent
        limit = self.connection.max_request_bytes
        for f in package.files:
            if 4 * math.ceil(f.size / 3) + 1024 > limit:
                raise PermanentDeliveryError(f"document {package.doc_id}: {f.name} ({f.size} bytes) does not fit Exact's "
                                             f"request limit of {limit} bytes once base64-encoded")
        division, key = self._division(package), package.idempotency_key
        with self._lock:
            doc_id, repeat = self._known.get(key), key in self._tried and key not in self._absent
            self._tried.add(key)
            self._absent.discard(key)
        if doc_id is None and repeat:
            doc_id = self._find(division, package)
        resumed = doc_id is not None
        have = self._attachments(division, doc_id, package) if resumed else set()
        missing = [f for f in package.files if (f.name, f.size) not in have]
        self._reserve(package, len(missing) + (0 if resumed else 1))
        what = f"document {package.doc_id}"
        if doc_id is None:
            body = {"Subject": render(self.options.subject, package.values)[:200] or package.doc_id,
                    "Type": self._type(package), "Body": self.key_text(package)}
            account = package.fields.get(self.options.account_field)
            if account:
                body["Account"] = str(account)
            issued = package.values.get("issue_date")
            if issued:
                body["DocumentDate"] = str(issued)[:10]
            made = not_processed(lambda: self._results(self.http.post(f"{division}/documents/Documents", what=f"{what}: create",
                                                                      json=body), f"{what}: create"))
            if not made or not made[0].get("ID"):
                raise PermanentDeliveryError(f"{what}: {self.label} answered the new document without its ID")
            doc_id = str(made[0]["ID"])
            with self._lock:
                self._known[key] = doc_id  # exists now: any retry completes it
        for f in missing:
            payload = {"Document": doc_id, "FileName": f.name, "Attachment": base64.b64encode(contents[f.name]).decode("ascii")}
            not_processed(lambda p=payload, name=f.name: self.http.post(
                f"{division}/documents/DocumentAttachments", what=f"{what}: attachment {name}", json=p).close())
        return Delivery(remote_ref=f"exact:{division}/{doc_id}", already_present=resumed and not missing,
                        detail={"division": division, "document": doc_id, "files": [f.name for f in package.files]})

    def lookup(self, package: Package) -> Delivery | None:
        """A crash between upload and record: the document found by its key is the delivery if it holds every file."""
        division = self._division(package)
        doc_id = self._find(division, package)
        with self._lock:
            self._tried.add(package.idempotency_key)
            if doc_id is None:
                self._absent.add(package.idempotency_key)
                return None
            self._known[package.idempotency_key] = doc_id
        have = self._attachments(division, doc_id, package)
        if all((f.name, f.size) in have for f in package.files):
            return Delivery(remote_ref=f"exact:{division}/{doc_id}", already_present=True,
                            detail={"division": division, "document": doc_id, "files": [f.name for f in package.files]})
        return None  # deliver() completes it: never a second document

    def remove_partial(self, package: Package) -> None:
        """Before a retry of a failed attempt (the engine's call): find what the attempt made, so the retry completes
        that document instead of making a second one. Nothing is removed from Exact."""
        division = self._division(package)
        key = package.idempotency_key
        with self._lock:
            settled = key in self._known or key in self._absent
        if not settled:
            found = self._find(division, package)
            with self._lock:
                self._tried.add(key)
                if found is None:
                    self._absent.add(key)
                else:
                    self._known[key] = found
