"""What the engine passes between its steps: the run's options, work items, documents about to be
sent, and each document's outcome (one row of the run's report)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks.connectors.base import Package
from tasks.documents import Candidate, Document, SourceProblem
from tasks.ledger import DocumentRow

# Outcome statuses that mean the document failed in this run (the run ends Failed naming them).
FAILED_OUTCOMES = ("failed", "needs-attention", "rejected")


@dataclass
class Outcome:
    """What happened to one document in this run: one row of the run's table artifact."""

    doc_id: str
    # delivered, already-present, submitted (the destination decides later), accepted, rejected,
    # failed, needs-attention, waiting, would-deliver
    status: str
    number: str = ""
    supplier: str = ""
    doc_type: str = ""
    remote: str = ""
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILED_OUTCOMES

    def but(self, status: str, **changes: str) -> Outcome:
        """This outcome's document with another status (remote and error cleared unless given)."""
        return Outcome(self.doc_id, status, self.number, self.supplier, self.doc_type, **{"remote": "", "error": "", **changes})


class RunFailed(Exception):
    """The run cannot go on, for a reason that is not one document's (a connection that cannot be
    opened, credentials refused): the run ends Failed with this message, the documents stay for the
    next run, none is parked for it."""


@dataclass
class RunOptions:
    """How a sync run was asked for (the flow's parameters)."""

    since: datetime | None = None  # a backfill: approval time from
    until: datetime | None = None  # a backfill: approval time up to
    force: bool = False  # deliver again what was delivered
    dry_run: bool = False  # map and report only
    document_ids: list[str] | None = None  # only these documents
    document_types: list[str] | None = None  # only these types
    missing_ok: bool = False  # a named document no longer in the source is skipped (a re-run of a failed run)

    @property
    def ranged(self) -> bool:
        return bool(self.since or self.until) and not self.document_ids

    @property
    def moves_cursor(self) -> bool:
        """Only a plain scheduled run moves the cursor."""
        return not (self.since or self.until or self.document_ids or self.document_types or self.dry_run)


@dataclass
class WorkItem:
    """A document this run looks at: readable (candidate) or not (problem)."""

    candidate: Candidate | None
    problem: SourceProblem | None = None
    targeted: bool = False  # named by the run (document_ids): parked and discarded ones are tried again
    outside_window: bool = False  # found by a source that lists everything, approved before the window


@dataclass
class Send:
    """A mapped document about to be sent."""

    doc: Document
    package: Package
    prior: DocumentRow | None  # the ledger's row of this version, if any
    info: dict[str, Any]
    outcome: Outcome


Batch = tuple[list[Send], Future]  # documents sent together, and the future of their results


@dataclass
class RunResult:
    """What a run did: every document's outcome, and how the run ends."""

    integration: str
    outcomes: list[Outcome] = field(default_factory=list)
    window: tuple[datetime, datetime] | None = None
    looked_at: int = 0
    stopped: str = ""  # why sending stopped early without failing the run (a daily budget used up)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed]

    @property
    def summary(self) -> str:
        counts = Counter(o.status for o in self.outcomes)
        text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing new"
        return f"{text}; {self.stopped}" if self.stopped else text

    def failure_message(self, limit: int = 10) -> str:
        failed = self.failed
        named = "; ".join(f"{o.doc_id}: {o.error}" for o in failed[:limit])
        more = f" (and {len(failed) - limit} more)" if len(failed) > limit else ""
        return f"{self.integration}: {len(failed)} of {len(self.outcomes)} documents failed: {named}{more}"


def report_rows(outcomes: Sequence[Outcome]) -> list[dict[str, str]]:
    """The run's table: document, status and error first (what an analyst looks for without scrolling),
    failed documents first, then the rest in the order they were handled."""
    ordered = sorted(outcomes, key=lambda o: not o.failed)
    return [
        {"document": o.doc_id, "status": o.status, "error": o.error, "number": o.number, "supplier": o.supplier,
         "type": o.doc_type, "remote path": o.remote}
        for o in ordered
    ]
