"""The sync flow: one integration per run, a thin Prefect wrapper over the engine (tasks/engine/).

The flow validates the configuration, builds the run from the integration's blocks, runs the
engine with Prefect's run logger and with plan and each batch of documents as a task run, then
publishes the outcome: a table artifact keyed per integration (status and error right after the
document, failed rows first), a markdown summary, parked-document events, and the run's state. A
run in which documents failed ends Failed with a message naming them, returned as a state rather
than raised: a document failure is not a crash, and no traceback lands in the run's logs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed

from deployments.config import Config, ConfigError, load_config
from deployments.schema import Integration
from flows import cancellation
from flows.notify import emit_parked, notify_failure
from tasks import ledger as L
from tasks.connectors.base import Mode
from tasks.engine.model import Outcome, RunFailed, RunOptions, RunResult, report_rows
from tasks.engine.plan import plan
from tasks.engine.run import SyncRun
from tasks.engine.send import SEND_CHUNK, deliver_batch
from tasks.settings import get_settings

__all__ = ["SEND_CHUNK", "SyncFailed", "SyncResult", "sync"]


class SyncFailed(Exception):
    """A sync run ended Failed (documents failed, or the run could not go on); names why."""


class SyncResult(Mapping):
    """What a sync run returns: {"integration", "outcomes" (one dict per document), "summary"}.

    A read-only mapping rather than a dict on purpose: Prefect walks dicts and lists in a flow's
    return value looking for futures, about 0.3 s at the end of a 1,000-document run."""

    def __init__(self, integration: str, outcomes: list[Outcome], summary: str):
        self._outcomes = outcomes
        self._values: dict[str, Any] = {"integration": integration, "summary": summary}

    def __getitem__(self, key: str) -> Any:
        if key == "outcomes":
            return [o.__dict__ for o in self._outcomes]
        return self._values[key]

    def __iter__(self):
        return iter(("integration", "outcomes", "summary"))

    def __len__(self) -> int:
        return 3

    def __repr__(self) -> str:
        return f"SyncResult({self._values['integration']!r}: {self._values['summary']})"


def _run_name() -> str:
    params = flow_run.parameters
    name = params.get("integration", "?")
    extra = []
    if params.get("since") or params.get("until"):
        extra.append("backfill")
    if params.get("document_ids"):
        extra.append("documents")
    if params.get("force"):
        extra.append("force")
    if params.get("dry_run"):
        extra.append("dry-run")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    return f"{name} {' '.join(extra) + ' ' if extra else ''}{stamp}"


@task(name="validate-config", cache_policy=NO_CACHE, persist_result=False)
def validate_config(integration: str) -> tuple[Integration, Config]:
    """Bad configuration fails here, before any document is touched."""
    config = load_config(only=integration)
    return config.get(integration), config


_TASKS = {
    "plan": task(name="plan", cache_policy=NO_CACHE, persist_result=False)(plan),
    "deliver-batch": task(name="deliver-batch", cache_policy=NO_CACHE, persist_result=False)(deliver_batch),
}


def _as_task(name: str, fn, *args):
    """The engine's steps, each as a Prefect task run (visible in the run's graph)."""
    return _TASKS[name](*args)


def build_run(integ: Integration, config: Config, ledger: L.Ledger, options: RunOptions, run_id: str, log, step=None,
              cancelled=None) -> SyncRun:
    """A SyncRun of an integration from its configured blocks (the source, and the connection in the integration's mode)."""
    source = config.block(integ.source).source()

    def connect():
        return config.block(integ.connection).connector(Mode(integ.mode), integ.connection_options)

    return SyncRun(integ, config, ledger, source, connect, options, run_id, log, step, get_settings().batch_size, cancelled)


def idle_run(flow_run) -> bool:
    """For the docroute worker (flows/worker.py): settle a due scheduled sync run without the engine when
    its integration has nothing new (the cursor moves, as a run's would). False: run the flow. Only plain
    scheduled runs qualify (no backfill range, no named documents, no re-run of a failed run)."""
    params = flow_run.parameters or {}
    if set(params) - {"integration"} or flow_run.run_count > 0:
        return False
    try:
        config = load_config(only=params.get("integration", ""))
        integ = config.get(params["integration"])
    except (ConfigError, KeyError):
        return False  # the flow run fails it, visibly, in validate-config
    if integ.mode == "dry-run":
        return False
    ledger = L.Ledger.from_settings()
    return build_run(integ, config, ledger, RunOptions(), str(flow_run.id), logging.getLogger("docroute.worker")).settle_idle()


def _report(integ: Integration, result: RunResult, dry_run: bool) -> None:
    summary = result.summary
    create_table_artifact(
        key=f"sync-{integ.slug}",
        table=report_rows(result.outcomes) or [{"document": "", "status": "nothing new", "error": ""}],
        description=f"Documents of {integ.key} in this run: {summary}",
    )
    window = result.window
    lines = [
        f"# Sync {integ.key}{' (dry run)' if dry_run else ''}",
        "",
        f"- connection: `{integ.connection}`, source: `{integ.source}`, mode: {integ.mode}",
        f"- window: {window[0].isoformat()} .. {window[1].isoformat()}" if window else "- window: not reached",
        f"- outcome: {summary}",
    ]
    if result.failed:
        lines += ["", "## Failed documents", "", "| document | status | error |", "|---|---|---|"]
        lines += [f"| {o.doc_id} | {o.status} | {o.error.replace('|', '/')} |" for o in result.failed]
    create_markdown_artifact(key=f"sync-summary-{integ.slug}", markdown="\n".join(lines), description=f"Sync summary of {integ.key}")


@flow(
    name="docroute-sync",
    flow_run_name=_run_name,
    retries=0,
    log_prints=False,
    validate_parameters=True,
    on_failure=[notify_failure],  # e-mail notify.email; never changes the run's state
    on_crashed=[notify_failure],
)
def sync(
    integration: str,
    since: datetime | None = None,
    until: datetime | None = None,
    force: bool = False,
    dry_run: bool = False,
    document_ids: list[str] | None = None,
    document_types: list[str] | None = None,
) -> dict[str, Any]:
    """Export one integration's new approved documents.

    Args:
        integration: "client/integration", e.g. "acme/invoices-to-erp".
        since: backfill from this approval time (default: the cursor minus the lookback).
        until: backfill up to this approval time (default: now). A backfill does not move the cursor.
        force: deliver again documents that were already delivered.
        dry_run: map and report only; deliver and record nothing.
        document_ids: only these documents (a re-run for single documents).
        document_types: only documents of these types (e.g. a backfill of credit notes).

    A re-run of a run that ended Failed (the UI's Retry, `prefect flow-run retry`: the same flow run
    again) retries exactly the documents that failed in it, parked ones included, and nothing else.
    """
    logger = get_run_logger()
    integ, config = validate_config(integration)
    dry_run = dry_run or integ.mode == "dry-run"
    run_id = str(flow_run.id or "local")
    options = RunOptions(since, until, force, dry_run, document_ids, document_types)
    ledger = L.Ledger.from_settings()
    fatal = ""
    try:
        retry_ids = ledger.failed_in_run(integ.key, run_id) if _retry_of_failed_run(run_id) else []
        if retry_ids:
            logger.info("%s: re-run of a failed run: retrying its %d failed documents: %s", integ.key, len(retry_ids), ", ".join(retry_ids[:20]))
            options = RunOptions(force=force, dry_run=dry_run, document_ids=retry_ids, missing_ok=True)
        run = build_run(integ, config, ledger, options, run_id, logger, _as_task, lambda: cancellation.requested(flow_run.id))
        try:
            result = run.execute()
        except RunFailed as exc:
            fatal = str(exc)
            result = RunResult(integ.key, run.outcomes, (run.window.start, run.window.end) if run.window else None)
    finally:
        ledger.dispose()
    _report(integ, result, dry_run)
    emit_parked(integ, result.outcomes)  # parked events (per document, and one per run) for automations (flows/notify.py)
    if cancellation.requested(flow_run.id):
        return Cancelled(message=f"{integ.key}: cancelled after {len(result.outcomes)} documents: {result.summary}")
    if fatal or result.failed:
        message = fatal or result.failure_message()
        return Failed(message=message, data=SyncFailed(message))
    logger.info("%s: %s", integ.key, result.summary)
    return SyncResult(integ.key, result.outcomes, result.summary)


def _retry_of_failed_run(run_id: str) -> bool:
    """This flow run is being run again (the UI's Retry sets it back to AwaitingRetry, and the runner
    executes it with run_count + 1 and the same parameters) and its previous attempt ended Failed.
    A re-run after a crash or a cancel does the whole run again instead."""
    if flow_run.run_count <= 1 or run_id == "local":
        return False
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(UUID(run_id))
    final = sorted((s for s in states if s.is_final()), key=lambda s: s.timestamp)
    return bool(final) and final[-1].is_failed()
