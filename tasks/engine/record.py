"""Record: the confirmed results of a chunk into the ledger, then what only a recorded delivery may
trigger (archive after transfer); and later confirmation of submitted deliveries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.connectors.base import Ability, Confirmation, Delivery
from tasks.documents import Candidate, Document
from tasks.engine import states
from tasks.engine.model import Batch, Outcome, RunFailed, Send
from tasks.errors import BudgetExhaustedError, RemoteError
from tasks.ledger import Result

if TYPE_CHECKING:
    from tasks.engine.run import SyncRun

CONFIRM_PER_RUN = 500  # submitted versions a run asks about (oldest first); the confirm flow does the rest


def finish_chunk(run: SyncRun, batches: list[Batch], abandoned: bool = False) -> list[Outcome]:
    """Wait for the chunk's documents and record the confirmed results in one transaction.

    `abandoned` (the run is failing): documents whose send never started are left as they are
    (attempt begun, nothing sent), for the next run."""
    integ, ledger = run.integ, run.ledger
    sends: list[Send] = []
    results: list[Result] = []
    for group, future in batches:
        if abandoned and future.cancelled():
            continue
        sends.extend(group)
        results.extend(future.result())
    statuses = ledger.record(integ.key, results, max_attempts=integ.max_attempts, run=run.run_id)
    outcomes = []
    for s, r in zip(sends, results):
        if r.waiting:
            outcomes.append(s.outcome.but("waiting", remote=s.outcome.remote, error=r.error or ""))
        elif r.error is None:
            if not r.accepted:
                outcomes.append(s.outcome.but(states.SUBMITTED, remote=r.remote_ref or ""))
                continue
            note = mark_exported(run, s.doc) if integ.archive_after_transfer else ""  # only after the delivery is recorded
            status = states.ALREADY_PRESENT if r.already_present else states.DELIVERED
            outcomes.append(s.outcome.but(status, remote=r.remote_ref or "", **({"error": note} if note else {})))
        else:
            run.log.warning("%s", r.error)
            outcomes.append(s.outcome.but(statuses[r.doc_id], remote=s.outcome.remote, error=r.error))
    if run.refused is not None and not abandoned:
        # Every further document would be refused the same way: stop here, recorded, and say what to fix.
        raise RunFailed(
            f"{integ.key}: connection {integ.connection} refused the credentials: {run.refused}. Fix the connection "
            f"block (Prefect UI: Blocks; test it with docroute check {integ.connection}); the next run sends every "
            f"document again, none is parked for this"
        )
    return outcomes


def mark_exported(run: SyncRun, doc: Document) -> str:
    """Mark a recorded delivery exported at the source (archive after transfer). A source that refuses
    (a GetMyInvoices document locked) or cannot answer is reported, not retried: the delivery stands
    and the next runs do not send it again. Returns the note for the run's table ("" when marked)."""
    where = run.source.label
    if run.source_budget is not None:
        reason = run.source_budget
    else:
        try:
            run.source.mark_exported(doc)
            return ""
        except BudgetExhaustedError as exc:
            reason = run.out_of_budget(exc, f"marking {doc.id}")
        except RemoteError as exc:
            reason = str(exc)
    note = f"delivered; not marked exported: {reason}" if where in reason else f"delivered; not marked exported at {where}: {reason}"
    run.log.warning("document %s: %s", doc.id, note)
    return note


def confirm(run: SyncRun, limit: int = CONFIRM_PER_RUN) -> list[Outcome]:
    """Ask the destination about the integration's submitted deliveries (Ability.ASYNC_STATUS) and
    record its verdicts: accepted -> delivered; rejected -> a permanent failure with its reason;
    still pending -> unchanged. One document's status error never stops the others."""
    connector, integ, ledger = run.connector, run.integ, run.ledger
    assert connector is not None
    if Ability.ASYNC_STATUS not in connector.abilities:
        return []
    rows = ledger.submitted(integ.key, limit)
    verdicts = []
    for row in rows:
        try:
            answer: Confirmation = connector.status(Delivery(row.remote_ref or "", detail=row.details, accepted=False))
        except RemoteError as exc:
            run.log.info("document %s: status not known yet: %s", row.doc_id, exc)
            continue
        if answer.state != Confirmation.PENDING or answer.detail is not None:
            verdicts.append((row, answer.state, answer.reason, answer.detail))
    changed = ledger.confirm(integ.key, verdicts, max_attempts=integ.max_attempts, run=run.run_id)
    outcomes = []
    for row, state, reason, _ in verdicts:
        status = changed.get(row.doc_id)
        if status is None or status == states.SUBMITTED:
            continue
        outcome = Outcome(row.doc_id, states.ACCEPTED if status == states.DELIVERED else states.REJECTED,
                          row.number or "", row.supplier or "", row.doc_type or "", row.remote_ref or "")
        if status == states.DELIVERED and reason:  # what the destination said on accepting (a buyer's answer)
            outcome.remote = f"{outcome.remote}; {reason}" if outcome.remote else reason
        if status != states.DELIVERED:
            parked = " (parked: needs attention)" if status == states.NEEDS_ATTENTION else ""
            outcome.error = f"document {row.doc_id}: rejected by the destination: {reason}{parked}"
            run.log.warning("%s", outcome.error)
        elif integ.archive_after_transfer:
            found = run.source.find(row.doc_id, integ.client)
            doc = run.source.fetch(found) if isinstance(found, Candidate) else None
            if isinstance(doc, Document) and doc.version == row.version:
                run.source.mark_exported(doc)  # archive after transfer waits for the acceptance
        outcomes.append(outcome)
    return outcomes
