"""The backfill flow: one integration, or all enabled integrations of a client, over a date range.

The range is cut into chunks (a week each by default); every chunk is one `docroute-sync` run (a subflow)
with since/until, so it is mapped, delivered, recorded and reported exactly like a scheduled run,
and never moves the cursor. The ledger remembers the chunks done (table `backfill_chunks`): the
same backfill run again after a crash, a cancel or failed chunks resumes where it stopped, and a
completed one run again delivers nothing new (the ledger already holds every delivery) unless
`force` is set. A progress artifact moves after every chunk; a table artifact lists the chunks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from deployments.config import ConfigError, parse_config
from deployments.schema import Integration, parse_duration
from flows.sync import SyncFailed, sync
from tasks import ledger as L
from tasks.settings import get_settings

ONE = timedelta(microseconds=1)
# Never a persisted result: on a retry of a backfill run Prefect would otherwise hand back an earlier
# chunk's completed subflow run for the n-th sync call instead of running the chunk now asked for.
chunk_sync = sync.with_options(persist_result=False)


class BackfillFailed(Exception):
    """Raised at the end of a backfill in which chunks failed; names them. Run it again to resume."""


@dataclass
class Chunk:
    integration: str
    start: datetime
    end: datetime  # inclusive
    status: str = "to do"  # done, resumed (done by an earlier run), failed, not run, before activation, would-deliver...
    summary: str = ""
    run: str = ""


def resolve_integrations(target: str) -> list[Integration]:
    """"client/name": that integration (enabled or not: an alternate export runs on demand).
    "client": every enabled integration of the client."""
    config_dir = get_settings().config_dir
    client = target.split("/", 1)[0]
    config, problems = parse_config(config_dir, [client])
    if problems:
        raise ConfigError(problems)
    if "/" in target:
        if target not in config.integrations:
            everything, _ = parse_config(config_dir)
            everything.get(target)  # raises, naming the known integrations
        return [config.integrations[target]]
    found = [i for i in config.integrations.values() if i.enabled]
    if not found:
        everything, _ = parse_config(config_dir)
        clients = sorted({i.client for i in everything.integrations.values()})
        raise ConfigError([f"client {target!r} has no enabled integrations; known clients: {', '.join(clients) or '(none)'}"])
    return found


def window(since: datetime | None, until: datetime | None, integ: Integration, now: datetime) -> tuple[datetime, datetime]:
    """The inclusive approval-time range of one integration. An `until` at midnight (a date such as
    2026-10-31) covers that whole day. Never before the activation time, never after now."""
    start = max(_utc(since) if since else integ.activated_at, integ.activated_at)
    if until is None:
        end = now
    else:
        end = _utc(until)
        if end.timetz().replace(tzinfo=None) == time(0):
            end = end + timedelta(days=1) - ONE
        end = min(end, now)
    return start, end


def chunks_of(start: datetime, end: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end] cut into consecutive inclusive ranges of `step`, the last one shorter."""
    out = []
    at = start
    while at <= end:
        out.append((at, min(at + step - ONE, end)))
        at = at + step
    return out


def backfill_id(integration: str, since: datetime | None, until: datetime | None, types: list[str] | None, chunk: str, force: bool) -> str:
    """Same integration, range, types, chunk size and force: the same backfill (resumed, not redone)."""
    spec = _spec(integration, since, until, types, chunk, force)
    return hashlib.sha256(spec.encode()).hexdigest()[:32]


def _spec(integration, since, until, types, chunk, force) -> str:
    return json.dumps(
        {
            "integration": integration,
            "since": _utc(since).isoformat() if since else None,
            "until": _utc(until).isoformat() if until else None,
            "document_types": sorted(types or []),
            "chunk": str(parse_duration(chunk).total_seconds()),
            "force": bool(force),
        },
        sort_keys=True,
    )


def _run_name() -> str:
    p = flow_run.parameters
    since, until = p.get("since"), p.get("until")
    span = f"{_day(since) if since else 'activation'}..{_day(until) if until else 'now'}"
    extra = [f"types={','.join(p['document_types'])}"] if p.get("document_types") else []
    extra += [w for w in ("force", "dry_run") if p.get(w)]
    return f"backfill {p.get('integration', '?')} {span}{' ' + ' '.join(extra) if extra else ''}"


def _day(value: Any) -> str:
    return value.strftime("%Y-%m-%d") if isinstance(value, datetime) else str(value)[:10]


@flow(name="docroute-backfill", flow_run_name=_run_name, retries=0, validate_parameters=True)
def backfill(
    integration: str,
    since: datetime | None = None,
    until: datetime | None = None,
    document_types: list[str] | None = None,
    chunk: str = "7d",
    force: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Export a date range again, in chunks, for one integration or all of a client's.

    Args:
        integration: "client/integration" (e.g. "acme/invoices-to-erp"; a disabled alternate export
            too), or "client" for every enabled integration of the client.
        since: approval time from (default: each integration's activation time).
        until: approval time up to, inclusive; a date (midnight) means the whole day (default: now).
        document_types: only these document types, e.g. ["credit_note"] (default: the integration's).
        chunk: size of one chunk (one sync run each, which scans the source once): 6h, 1d, 7d (default).
        force: deliver again documents already delivered (a completed backfill run again delivers
            nothing new without it).
        dry_run: map and report only; deliver and record nothing.
    """
    logger = get_run_logger()
    step = parse_duration(chunk)
    if step < timedelta(minutes=1):
        raise ValueError(f"backfill {integration}: chunk {chunk!r} is too small; use at least 1m (e.g. 6h, 1d)")
    if since and until and _utc(until) < _utc(since):
        raise ValueError(f"backfill {integration}: until {until.isoformat()} is before since {since.isoformat()}")
    integrations = resolve_integrations(integration)
    now = datetime.now(timezone.utc)
    ledger = L.Ledger.from_settings()
    run_id = str(flow_run.id or "local")
    plan: list[tuple[Integration, str | None, list[Chunk]]] = []
    for integ in integrations:
        start, end = window(since, until, integ, now)
        chunks = [Chunk(integ.key, s, e) for s, e in chunks_of(start, end, step)]
        bid = None
        if not dry_run:
            bid = backfill_id(integ.key, since, until, document_types, chunk, force)
            done = ledger.open_backfill(bid, integ.key, _spec(integ.key, since, until, document_types, chunk, force), len(chunks), run_id)
            for c in chunks:
                if c.start in done:
                    c.status, c.summary, c.run = "resumed", f"done earlier: {done[c.start]['summary']}", done[c.start]["run"] or ""
        plan.append((integ, bid, chunks))
    total = sum(len(c) for _, _, c in plan)
    slug = integration.replace("/", "-")
    finished = sum(1 for _, _, cs in plan for c in cs if c.status == "resumed")
    progress_id = create_progress_artifact(
        progress=_percent(finished, total), key=f"backfill-progress-{slug}", description=_progress_text(integration, finished, total)
    )
    if finished:
        logger.info("backfill %s: resuming, %d of %d chunks were done by an earlier run", integration, finished, total)
    try:
        for integ, bid, chunks in plan:
            stopped = None
            for c in chunks:
                if c.status == "resumed":
                    continue
                if stopped:
                    c.status, c.summary = "not run", stopped
                    continue
                state = chunk_sync(
                    integration=integ.key, since=c.start, until=c.end, force=force, dry_run=dry_run,
                    document_types=document_types or None, return_state=True,
                )
                c.run = str(state.state_details.flow_run_id or "")
                result = state.result(raise_on_failure=False)
                if state.is_completed():
                    c.status, c.summary = "done", result.get("summary", "") if isinstance(result, Mapping) else ""
                else:
                    c.status, c.summary = "failed", state.message or str(result)
                    if not isinstance(result, SyncFailed) or "cannot open connection" in str(result):
                        # configuration, connection or lock problem: every further chunk would fail the same way
                        stopped = f"stopped after a failed chunk: {c.summary}"
                if bid is not None:
                    ledger.record_backfill_chunk(bid, c.start, c.end, "done" if c.status == "done" else "failed", c.summary, c.run)
                finished += 1
                update_progress_artifact(progress_id, _percent(finished, total), description=_progress_text(integration, finished, total))
                logger.info("backfill %s: chunk %s .. %s %s: %s", integ.key, c.start.isoformat(), c.end.isoformat(), c.status, c.summary)
            if bid is not None and all(c.status in ("done", "resumed") for c in chunks):
                ledger.finish_backfill(bid, run_id)
    finally:
        ledger.dispose()
        everything = [c for _, _, cs in plan for c in cs]
        create_table_artifact(
            key=f"backfill-{slug}",
            table=[
                {"integration": c.integration, "from": c.start.isoformat(), "until": c.end.isoformat(), "status": c.status,
                 "outcome": c.summary, "sync run": c.run}
                for c in everything
            ] or [{"integration": integration, "status": "nothing to do: the range is before activation or in the future"}],
            description=f"Backfill {integration}: chunks {', '.join(f'{n} {s}' for s, n in _count(everything).items()) or 'none'}",
        )
    failed = [c for c in everything if c.status in ("failed", "not run")]
    if failed:
        named = "; ".join(f"{c.integration} {c.start.isoformat()} .. {c.end.isoformat()}: {c.summary}" for c in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise BackfillFailed(
            f"backfill {integration}: {len(failed)} of {len(everything)} chunks not done: {named}{more}. "
            f"Run the same backfill again (or Retry this run) to resume: done chunks are skipped"
        )
    return {
        "integration": integration,
        "chunks": [{**c.__dict__, "start": c.start.isoformat(), "end": c.end.isoformat()} for c in everything],
        "summary": ", ".join(f"{n} {s}" for s, n in _count(everything).items()) or "nothing to do",
    }


def _count(chunks: list[Chunk]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in chunks:
        out[c.status] = out.get(c.status, 0) + 1
    return out


def _percent(done: int, total: int) -> float:
    return 100.0 if total == 0 else round(100.0 * done / total, 2)


def _progress_text(target: str, done: int, total: int) -> str:
    return f"Backfill {target}: {done} of {total} chunks"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
