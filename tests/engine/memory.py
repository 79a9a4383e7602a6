"""An in-memory source and connectors for engine tests: the engine runs on them without a Prefect server.

They implement the real interfaces (tasks/sources/base.py, tasks/connectors/base.py) over dicts,
so the engine's plan, prepare, send, record and confirm steps are exercised for real; only the
remote systems are replaced. `LaterConnector` is an access point that decides later (submitted,
then accepted or rejected), the way the Pagero-style connector will.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from deployments.config import Config
from deployments.schema import Integration
from tasks.connectors.base import (
    CheckResult,
    Confirmation,
    Connector,
    Delivery,
    Package,
)
from tasks.documents import Candidate, Document, DocumentFile, SourceProblem, version_of
from tasks.errors import RemoteError
from tasks.sources.base import Scan, Source, Window


class FakeBlock:
    """Stands in for a block: a label and the secrets to keep out of messages."""

    def __init__(self, name: str, secrets: tuple[str, ...] = ()):
        self.name = name
        self.secrets = secrets

    def label(self) -> str:
        return self.name

    def secret_values(self) -> list[str]:
        return list(self.secrets)


@dataclass
class MemoryDocument:
    doc_id: str
    client: str = "acme"
    type: str = "invoice"
    status: str = "approved"
    approved_at: datetime | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    pdf: bytes = b"%PDF-1.7\n"
    revision: int = 1
    problem: str | None = None  # the source cannot read it (a transient one when it starts with "~")


class MemorySource(Source):
    """A source holding documents in a dict; lists them all (like a capture inbox)."""

    lists_everything = True

    def __init__(self, name: str = "memory inbox"):
        super().__init__(FakeBlock(name))
        self.docs: dict[str, MemoryDocument] = {}
        self.exported: list[str] = []
        self.scans = 0
        self.fetches = 0

    def put(self, doc_id: str, **kw: Any) -> MemoryDocument:
        old = self.docs.get(doc_id)
        doc = MemoryDocument(doc_id, **kw)
        doc.revision = old.revision + 1 if old else 1
        self.docs[doc_id] = doc
        return doc

    def _candidate(self, d: MemoryDocument) -> Candidate | SourceProblem:
        cand = Candidate(d.doc_id, d.client, d.type, d.status, d.approved_at, f"r{d.revision}:{len(d.pdf)}",
                         fields=dict(d.fields), handle=d.doc_id)
        if d.problem:
            return SourceProblem(d.doc_id, d.client, f"document {d.doc_id}: {d.problem.lstrip('~')}", d.problem.startswith("~"), cand)
        return cand

    def scan(self, client: str, cursor: str | None, window: Window) -> Scan:
        self.scans += 1
        found = [self._candidate(d) for d in self.docs.values() if d.client == client and d.doc_id not in self.exported]
        return Scan([c for c in found if isinstance(c, Candidate)], [p for p in found if isinstance(p, SourceProblem)],
                    cursor=f"scan-{self.scans}")

    def find(self, doc_id: str, client: str) -> Candidate | SourceProblem | None:
        d = self.docs.get(doc_id)
        if d is None or d.client != client or doc_id in self.exported:
            return None
        return self._candidate(d)

    def fetch(self, candidate: Candidate) -> Document | SourceProblem:
        self.fetches += 1
        d = self.docs.get(candidate.doc_id)
        if d is None:
            return SourceProblem(candidate.doc_id, candidate.client, f"document {candidate.doc_id}: gone from {self.label}", True, candidate)
        data = d.pdf
        f = DocumentFile(name=f"{d.doc_id}.pdf", media_type="application/pdf", size=len(data),
                         sha256=hashlib.sha256(data).hexdigest()).with_opener(lambda: io.BytesIO(data))
        return Document(id=d.doc_id, client=d.client, type=d.type, status=d.status, approved_at=d.approved_at,
                        fields=dict(d.fields), files=[f], version=version_of([f]))

    def check(self) -> CheckResult:
        return CheckResult(True, f"{self.label}: {len(self.docs)} documents")

    def mark_exported(self, document: Document) -> None:
        if document.id not in self.exported:
            self.exported.append(document.id)


class MemoryConnector(Connector):
    """A destination holding what it received in a dict keyed by the idempotency key.

    `fail[doc_id]` is a list of errors to raise on that document's next deliveries (one per try);
    `crash_after` raises SystemExit after that many deliveries were stored (a process killed
    between send and record). `lookup` finds an earlier delivery by its key."""

    def __init__(self, name: str = "memory destination", **kw: Any):
        super().__init__(FakeBlock(name), **kw)
        self.store: dict[str, Package] = {}
        self.sent: list[str] = []  # doc ids, in the order they were sent
        self.holds: dict[str, bytes] = {}  # doc id -> the main file's content the destination holds now
        self.fail: dict[str, list[RemoteError]] = {}
        self.crash_after: int | None = None
        self.opened = 0
        self.lock = threading.Lock()

    def open(self) -> None:
        self.opened += 1

    def check(self) -> CheckResult:
        return CheckResult(True, f"{self.label}: reachable")

    def deliver(self, package: Package) -> Delivery:
        with self.lock:
            errors = self.fail.get(package.doc_id)
            if errors:
                raise errors.pop(0)
            self.sent.append(package.doc_id)
            self.store[package.idempotency_key] = package
            with package.main.open() as fh:
                self.holds[package.doc_id] = fh.read()
            if self.crash_after is not None and len(self.sent) >= self.crash_after:
                raise SystemExit("killed between send and record")
        return self._delivery(package)

    def _delivery(self, package: Package, present: bool = False) -> Delivery:
        return Delivery(remote_ref=f"mem://{package.doc_id}/{package.version}", already_present=present)

    def lookup(self, package: Package) -> Delivery | None:
        return self._delivery(package, present=True) if package.idempotency_key in self.store else None


class LaterConnector(MemoryConnector):
    """An access point that takes a document, then decides: `verdicts[doc_id]` is the list of answers
    status() gives on successive polls ("pending", "accepted", "rejected: <reason>")."""

    def __init__(self, name: str = "memory access point", **kw: Any):
        super().__init__(name, **kw)
        self.verdicts: dict[str, list[str]] = {}
        self.polls: list[str] = []

    def _delivery(self, package: Package, present: bool = False) -> Delivery:
        return Delivery(remote_ref=f"file-{package.doc_id}-{package.version[:6]}", already_present=present,
                        detail={"file_id": f"file-{package.doc_id}", "doc_id": package.doc_id}, accepted=False)

    def status(self, delivery: Delivery) -> Confirmation:
        doc_id = delivery.detail["doc_id"]
        self.polls.append(doc_id)
        answers = self.verdicts.get(doc_id) or ["pending"]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer.startswith("rejected"):
            return Confirmation(Confirmation.REJECTED, answer.partition(": ")[2])
        return Confirmation(answer)


def integration(name: str = "invoices", client: str = "acme", **kw: Any) -> tuple[Integration, Config]:
    """An integration (validated like a client file's) and a configuration holding it."""
    spec = {"name": name, "client": client, "source": "memory/inbox", "connection": "memory/out",
            "activated_at": "2026-01-01T00:00:00Z", "retry_delay": 0.01, "mapping": {"folder": "{client}", "filename": "{doc_id}.{ext}"}}
    integ = Integration.model_validate({**spec, **kw})
    return integ, Config(Path("."), {integ.key: integ}, {})
