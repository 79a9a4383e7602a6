"""Prepare: read, check and map one document into the package a connector delivers."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from tasks.documents import SourceProblem
from tasks.engine import states
from tasks.engine.model import Outcome, RunFailed, Send, WorkItem
from tasks.engine.plan import wanted
from tasks.errors import BudgetExhaustedError, CredentialsRefusedError
from tasks.ledger import UNREADABLE
from tasks.mapping import MappingError, map_document

if TYPE_CHECKING:
    from tasks.engine.run import SyncRun


def prepare(run: SyncRun, item: WorkItem) -> Outcome | Send | None:
    """An Outcome when nothing is to be sent, a Send to deliver, None to skip silently."""
    integ, ledger, run_id, dry = run.integ, run.ledger, run.run_id, run.options.dry_run
    if item.problem is not None:
        p = item.problem
        if dry:
            return Outcome(p.doc_id, "waiting" if p.transient else "failed", error=p.message)
        parked = [r for r in run.known.get(p.doc_id, []) if r.version == UNREADABLE and r.status in states.PARKED]
        if parked and not item.targeted:
            return None  # reported when it was parked; comes back when the document changes or a run names it
        if p.transient:
            ledger.note_waiting(integ.key, p.doc_id, UNREADABLE, p.message, run_id)
            return Outcome(p.doc_id, "waiting", error=p.message)
        status = ledger.mark_failed(integ.key, p.doc_id, UNREADABLE, p.message, permanent=True, max_attempts=integ.max_attempts, run=run_id)
        run.log.warning("%s", p.message)
        return Outcome(p.doc_id, status, error=p.message)
    cand = item.candidate
    assert cand is not None
    if not wanted(run, cand):
        for row in run.known.get(cand.doc_id, []):
            if row.status in states.OPEN and not dry:
                ledger.supersede(integ.key, cand.doc_id, row.version, "no longer matches the integration's filters", run_id)
        return None
    rows = run.known.get(cand.doc_id, [])
    same = [r for r in rows if r.fingerprint == cand.fingerprint]
    if same and not run.options.force and states.settled(same[0], item.targeted, rows):
        return None  # unchanged since it was delivered (or parked): no need to read the files again
    base = Outcome(cand.doc_id, "", str(cand.fields.get("number", "")), str(cand.fields.get("supplier", "")), cand.type)
    if run.source_budget is not None:  # the source's call budget is used up: nothing more is read this run
        return base.but("waiting", error=f"document {cand.doc_id}: not read: {run.source_budget}")
    try:
        doc = run.source.fetch(cand)
    except BudgetExhaustedError as exc:  # the source's call budget: this and the rest wait for the next run
        return base.but("waiting", error=f"document {cand.doc_id}: not read: {run.out_of_budget(exc, f'reading {cand.doc_id}')}")
    except CredentialsRefusedError as exc:  # the source's fault, not the document's: stop, park nothing
        raise RunFailed(f"{integ.key}: source {integ.source} refused the credentials: {exc}. Fix the source block "
                        f"(Prefect UI: Blocks; test it with docroute check {integ.source}); the next run reads every "
                        f"document again, none is parked for this") from None
    if isinstance(doc, SourceProblem):  # the files could not be read
        return prepare(run, WorkItem(None, doc, item.targeted))
    prior = next((r for r in rows if r.version == doc.version), None)
    if prior and not run.options.force and states.settled(prior, item.targeted, rows):
        return None
    if prior and states.replaced(prior, rows):
        run.log.info("document %s: the source holds version %s again, which was replaced at the destination by a "
                     "later version: delivered again", doc.id, doc.version)
    if item.outside_window:
        run.log.info("document %s: approved %s, before this run's window (%s): found because %s lists every document",
                     doc.id, doc.approved_at.isoformat() if doc.approved_at else "?", run.window.start.isoformat(), run.source.label)
    if doc.approved_at is not None and doc.approved_at > datetime.now(timezone.utc):
        message = (f"document {doc.id}: approved_at {doc.approved_at.isoformat()} is in the future (the capture "
                   f"system's clock or time zone?); it is exported once that time has passed or the time is corrected")
        if not dry:
            ledger.note_waiting(integ.key, doc.id, doc.version, message, run_id)
        run.log.warning("%s", message)
        return base.but("waiting", error=message)
    info = {
        "approved_at": doc.approved_at,
        "fingerprint": cand.fingerprint,
        "doc_type": doc.type,
        "number": base.number[:200],
        "supplier": base.supplier[:300],
    }
    try:
        package = map_document(doc, integ, run.lookups)
    except MappingError as exc:
        if dry:
            return base.but("failed", error=str(exc))
        status = ledger.mark_failed(integ.key, doc.id, doc.version, str(exc), permanent=True, max_attempts=integ.max_attempts, info=info, run=run_id)
        run.log.warning("%s", exc)
        return base.but(status, error=str(exc))
    remote = package.path_of(package.main)
    holder = run.claim(remote, doc.id)
    if holder is not None:
        error = (f"document {doc.id}: maps to {remote}, which document {holder} already holds at {integ.connection}; "
                 f"it is not written over it. Make mapping.filename (or mapping.folder) unique per document, e.g. "
                 f"with {{doc_id}}")
        if dry:
            return base.but("failed", remote=remote, error=error)
        status = ledger.mark_failed(integ.key, doc.id, doc.version, error, permanent=True, max_attempts=integ.max_attempts, info=info, run=run_id)
        run.log.warning("%s", error)
        return base.but(status, remote=remote, error=error)
    info["remote_path"] = remote
    if dry:
        return base.but("would-deliver", remote=remote)
    return Send(doc, package, prior, info, base.but("", remote=remote))


