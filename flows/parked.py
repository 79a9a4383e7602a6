"""Parked documents: retry or discard an integration's needs-attention documents, with an audit trail.

    docroute parked list acme/invoices-to-erp
    docroute parked retry acme/invoices-to-erp --document ACME-INV-2001 --reason "vendor added to lookup"
    docroute parked discard acme/invoices-to-erp --all --reason "test uploads"

Retry delivers now: the flow records a `retry-requested` event per document, then runs the sync flow
for exactly those documents as a subflow (a run that names a parked document tries it again, see
`settled` in tasks/engine/states.py). That way the operator sees the outcome in the same run, the sync's
lock keeps it from overlapping a scheduled run, and delivery, verification and recording are the
sync's own. (Resetting documents for the next scheduled run would need a second code path and
would leave the operator waiting for a schedule that may be paused.)

Discard marks the parked rows `discarded` with a `discarded` event naming who and why; rows are
never deleted. Scheduled runs leave discarded documents alone; naming one in a retry (or in
`docroute sync --document`) brings it back.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from deployments.config import load_config
from flows.sync import sync
from tasks import ledger as L


class ParkedActionFailed(Exception):
    """Raised when documents named for a retry or discard cannot be handled, or a retry did not deliver them."""


def _run_name() -> str:
    params = flow_run.parameters
    return f"{params.get('integration', '?')} {params.get('action', '?')} {datetime.now(timezone.utc):%Y-%m-%d %H:%M}"


def current_rows(ledger: L.Ledger, integration: str, doc_ids: list[str] | None = None, statuses: tuple[str, ...] | None = None) -> dict[str, dict]:
    """doc_id -> its newest row that is not superseded (a document has one live version at a time)."""
    rows: dict[str, dict] = {}
    for row in ledger.rows(integration, doc_ids=doc_ids, statuses=statuses):
        if row["status"] != L.SUPERSEDED:
            rows[row["doc_id"]] = row  # rows come ordered by id: the newest wins
    return rows


def _select(ledger: L.Ledger, integration: str, action: str, document_ids: list[str] | None, all_parked: bool) -> dict[str, dict]:
    """The rows to act on; names every document that cannot be (not parked, unknown)."""
    if bool(document_ids) == bool(all_parked):
        raise ValueError(f"integration {integration}: name documents (document_ids) or set all_parked, not both or neither")
    if all_parked:
        return current_rows(ledger, integration, statuses=(L.NEEDS_ATTENTION,))
    ids = list(dict.fromkeys(document_ids or []))
    rows = current_rows(ledger, integration, doc_ids=ids)
    allowed = (L.NEEDS_ATTENTION, L.DISCARDED) if action == "retry" else (L.NEEDS_ATTENTION,)
    wrong = [
        f"{d} ({rows[d]['status']})" if d in rows else f"{d} (not in the ledger)" for d in ids if d not in rows or rows[d]["status"] not in allowed
    ]
    if wrong:
        raise ValueError(
            f"integration {integration}: cannot {action} documents that are not {' or '.join(allowed)}: {', '.join(wrong)}"
        )
    return {d: rows[d] for d in ids}


@flow(name="docroute-parked", flow_run_name=_run_name, log_prints=False, validate_parameters=True)
def parked_documents(
    integration: str,
    action: Literal["retry", "discard"],
    document_ids: list[str] | None = None,
    all_parked: bool = False,
    reason: str = "",
    by: str = "",
) -> list[dict[str, Any]]:
    """Retry or discard parked (needs-attention) documents of one integration; every step is an event in the ledger.

    Args:
        integration: "client/integration", e.g. "acme/invoices-to-erp".
        action: "retry" (deliver them now) or "discard" (never deliver them; the rows stay, marked discarded).
        document_ids: these documents; a retry may also name discarded ones, to bring them back.
        all_parked: every needs-attention document of the integration instead.
        reason: why, recorded in the ledger's audit trail.
        by: who, recorded in the ledger's audit trail.
    """
    logger = get_run_logger()
    config = load_config(only=integration, check_blocks=False)  # names a misspelt integration
    integ = config.get(integration)
    run_id = str(flow_run.id or "local")
    detail = f"by {by or 'unknown'}" + (f": {reason}" if reason else "")
    ledger = L.Ledger.from_settings()
    report: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        rows = _select(ledger, integ.key, action, document_ids, all_parked)
        if action == "discard":
            with ledger.lock(integ.key):  # never while a sync run of this integration is deciding about them
                done = {r["doc_id"]: r for r in ledger.discard(integ.key, list(rows), detail, run_id)}
            for doc_id, row in rows.items():
                after = L.DISCARDED if doc_id in done else current_rows(ledger, integ.key, [doc_id]).get(doc_id, {}).get("status", "")
                report.append(_line(row, action, after, row["last_error"] if doc_id in done else "changed by a sync run meanwhile: not discarded"))
        elif rows:
            with config.block(integ.source).source(integ) as source:
                missing = [d for d in rows if source.find(d, integ.client) is None]
            problems += [f"{d}: no longer in {source.label}" for d in missing]
            targets = [d for d in rows if d not in missing]
            ledger.add_events(integ.key, [(d, rows[d]["version"], "retry-requested", detail) for d in targets], run_id)
            if targets:
                state = sync(integration=integ.key, document_ids=targets, return_state=True)
                if not state.is_completed():
                    logger.warning("retry run of %s: %s", integ.key, state.message)
            after = current_rows(ledger, integ.key, targets) if targets else {}
            for doc_id, row in rows.items():
                if doc_id in missing:
                    report.append(_line(row, action, row["status"], f"no longer in {source.label}"))
                    continue
                now = after.get(doc_id, row)
                delivered = now["status"] == L.DELIVERED
                report.append(_line(row, action, now["status"], "" if delivered else now["last_error"]))
                if not delivered:
                    problems.append(f"{doc_id}: {now['status']}: {now['last_error'] or ''}")
    finally:
        ledger.dispose()
    summary = f"{action} {len(report)} documents of {integ.key} ({detail})"
    create_table_artifact(
        key=f"parked-{integ.slug}",
        table=report or [{"document": "", "action": action, "before": "", "after": "nothing parked", "error": ""}],
        description=summary,
    )
    logger.info("%s", summary)
    if problems:
        raise ParkedActionFailed(f"{integ.key}: {len(problems)} of {len(report)} documents not delivered by the retry: " + "; ".join(problems[:10]))
    return report


def _line(row: dict, action: str, after: str, error: str | None) -> dict[str, Any]:
    return {
        "document": row["doc_id"],
        "version": row["version"],
        "number": row.get("number") or "",
        "action": action,
        "before": row["status"],
        "after": after,
        "error": (error or "")[:500],
    }

