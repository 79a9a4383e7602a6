"""Plan: the documents a run looks at. New and changed ones from the scan, earlier failures, named ones."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from tasks.documents import Candidate, SourceProblem
from tasks.engine import states
from tasks.engine.model import RunFailed, WorkItem
from tasks.errors import BudgetExhaustedError, RemoteError

if TYPE_CHECKING:
    from tasks.engine.run import SyncRun


def wanted(run: SyncRun, cand: Candidate) -> bool:
    """Does the integration take this document (approved, at or after activation, its filters)?"""
    integ = run.integ
    if integ.filters.approved_only and not cand.approved:
        return False
    if cand.approved_at is not None and cand.approved_at < integ.activated_at:
        return False
    return integ.filters.matches(cand.type, cand.sub_organisation, cand.tags)


def warn_unrouted(run: SyncRun, cand: Candidate) -> None:
    """A document of a type that no integration of its client takes would otherwise go unmentioned."""
    client = run.integ.client
    takers = [i for i in run.config.integrations.values() if i.client == client and i.enabled]
    if not any(not i.filters.document_types or cand.type in i.filters.document_types for i in takers):
        run.log.warning(
            "document %s: type %r is taken by no integration of client %s; add it to an integration's "
            "filters.document_types, then backfill (docroute sync ... --since)", cand.doc_id, cand.type, client
        )


def plan(run: SyncRun) -> int:
    """Fill run.work with what this run looks at; returns how many. Sets run.next_cursor.

    The source's own calls may fail: its call budget used up (a daily limit) stops the run with
    nothing to do (it completes, the cursor stays); any other remote error fails the run naming the
    source, before any document is touched."""
    try:
        return _plan(run)
    except BudgetExhaustedError as exc:
        run.out_of_budget(exc, f"listing {run.source.label}")
        run.work = []
        return 0
    except RemoteError as exc:
        raise RunFailed(f"{run.integ.key}: cannot read source {run.integ.source}: {exc}. Nothing was sent; "
                        f"the next run tries again (test it with docroute check {run.integ.source})") from None


def _plan(run: SyncRun) -> int:
    """Fill run.work with what this run looks at; returns how many. Sets run.next_cursor.

    A backfill (ranged) takes only documents approved in its window; earlier failures elsewhere are
    left to the scheduled runs (a backfill in 30 chunks must not try them 30 times). Named documents
    (document_ids) are read by id; one no longer in the source is skipped when `missing_ok` (a re-run
    of a failed run), else the run fails naming it."""
    integ, ledger, source, options, window = run.integ, run.ledger, run.source, run.options, run.window
    types = set(options.document_types or ())
    items: dict[str, WorkItem] = {}
    if options.document_ids:
        for doc_id in options.document_ids:
            found = source.find(doc_id, integ.client)
            if found is None:
                if options.missing_ok:
                    run.log.warning("document %s is no longer in %s for client %s: skipped", doc_id, source.label, integ.client)
                    continue
                raise ValueError(f"integration {integ.key}: document {doc_id} is not in {source.label} for client {integ.client}")
            items[doc_id] = _item(found, targeted=True)
    else:
        now = datetime.now(timezone.utc)

        def in_window(cand: Candidate) -> bool:
            if window.ranged:  # a backfill: by approval time, or the date the source selects a range by
                return source.in_range(cand, window)
            # approved "in the future" (a capture system's clock or time zone): reported as waiting, never ignored
            return window.holds(cand.approved_at) or cand.approved_at > now

        scan = source.scan(integ.client, run.cursor.position if run.cursor else None, window)
        run.next_cursor = scan.cursor
        # A source that lists every document (a capture inbox) also brings those approved before the
        # window that the ledger has never delivered: nothing approved after activation is lost,
        # however late it arrived. Sources that list a window are bounded by the lookback instead.
        everything = source.lists_everything and not window.ranged
        # Documents of the client that this integration does not take (another type: a client's inbox
        # split by type over several integrations) are not work: an idle poll stays idle. The ledger's
        # open rows below bring back one that this integration took earlier, to be superseded.
        unwanted: dict[str, Candidate] = {}
        for cand in scan.candidates:
            if cand.approved_at is None or (types and cand.type not in types):
                continue
            if not wanted(run, cand):
                unwanted[cand.doc_id] = cand
                if in_window(cand):
                    warn_unrouted(run, cand)
            elif in_window(cand):
                items[cand.doc_id] = WorkItem(cand)
            elif everything and integ.activated_at <= cand.approved_at < window.start:
                items[cand.doc_id] = WorkItem(cand, outside_window=True)
        for problem in scan.problems:
            if problem.candidate is not None:  # readable metadata: only this integration's documents, in the window
                if not wanted(run, problem.candidate):
                    continue
                in_range = source.in_range(problem.candidate, window) if window.ranged else window.holds(problem.approved_at)
                if not in_range and not (everything and problem.approved_at is not None):
                    continue
                if types and problem.candidate.type not in types:
                    continue
            elif window.ranged or types:  # unreadable: no approval time or type to place it in a backfill
                continue
            items[problem.doc_id] = WorkItem(None, problem)
        # Earlier failures and parked documents are looked at again whatever their approval time.
        for row in [] if window.ranged else ledger.rows(integ.key, statuses=states.OPEN + (states.NEEDS_ATTENTION,)):
            if types and row.doc_type not in types:
                continue
            if row.doc_id not in items:
                found = unwanted.get(row.doc_id) or source.find(row.doc_id, integ.client)
                if found is None:
                    ledger.supersede(integ.key, row.doc_id, row.version, "no longer in the source for this client", run.run_id)
                else:
                    items[row.doc_id] = _item(found)
    ids = list(items)
    for row in ledger.rows(integ.key, doc_ids=ids) if ids else []:
        run.known.setdefault(row.doc_id, []).append(row)
    # settled here rather than in prepare(): an idle run then opens no connection and runs no batch
    run.work = [item for item in items.values() if options.force or not unchanged(run, item)]
    return len(run.work)


def unchanged(run: SyncRun, item: WorkItem) -> bool:
    """Same files as a delivered, submitted or parked version: nothing to read or send again."""
    cand = item.candidate
    if cand is None or not wanted(run, cand):
        return False
    rows = run.known.get(cand.doc_id, [])
    same = [r for r in rows if r.fingerprint == cand.fingerprint]
    return bool(same) and states.settled(same[0], item.targeted, rows)


def _item(found: Candidate | SourceProblem, targeted: bool = False) -> WorkItem:
    if isinstance(found, SourceProblem):
        return WorkItem(None, found, targeted)
    return WorkItem(found, None, targeted)
