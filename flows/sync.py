"""The sync flow: one integration per run. Poll the source, map, deliver, record, report.

Per-document work is batched into a few task runs (Prefect's per-task overhead
would dominate at thousands of documents); per-document outcomes stay visible
in a table artifact keyed per integration and in the run's logs.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from deployments.config import Config, Integration, load_config
from flows.notify import emit_parked, notify_failure
from tasks import ledger as L
from tasks.connectors.base import Ability, Connector, CredentialsRefusedError, DeliveryError, Mode, TransientDeliveryError
from tasks.mapping import Lookups, MappingError, map_document
from tasks.settings import get_settings
from tasks.sources.inbox import Candidate, SourceProblem

MAX_BACKOFF = 60.0


class SyncFailed(Exception):
    """Raised at the end of a run in which documents failed; names them."""


@dataclass
class Outcome:
    """What happened to one document in this run: one row of the run's table artifact."""

    doc_id: str
    status: str  # delivered, already-present, failed, needs-attention, waiting, would-deliver, skipped
    number: str = ""
    supplier: str = ""
    doc_type: str = ""
    remote: str = ""
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "needs-attention")


@dataclass
class WorkItem:
    candidate: Candidate | None
    problem: SourceProblem | None = None
    targeted: bool = False  # named by the run's document_ids


@dataclass
class Send:
    """A mapped document about to be sent."""

    doc: Any
    package: Any
    prior: dict | None
    info: dict
    outcome: Outcome


class RunContext:
    """Everything one run shares. A plain class on purpose: Prefect walks dataclass and list task
    parameters looking for futures, which costs seconds at thousands of documents."""

    def __init__(self, integ: Integration, config: Config, ledger: L.Ledger, source: Any, lookups: Lookups, run_id: str, force: bool, dry_run: bool):
        self.integ, self.config, self.ledger, self.source, self.lookups = integ, config, ledger, source, lookups
        self.run_id, self.force, self.dry_run = run_id, force, dry_run
        self.connector: Connector | None = None
        self.known: dict[str, list[dict]] = {}  # doc_id -> ledger rows
        self.work: list[WorkItem] = []
        self.outcomes: list[Outcome] = []
        self.last_send = 0.0
        self.refused: CredentialsRefusedError | None = None  # the destination refused the credentials: stop sending


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


@task(name="plan", cache_policy=NO_CACHE, persist_result=False)
def plan_run(
    ctx: RunContext,
    start: datetime,
    end: datetime,
    document_ids: list[str] | None,
    document_types: list[str] | None = None,
    ranged: bool = False,
    missing_ok: bool = False,
) -> int:
    """Documents this run looks at: new ones in the window, earlier failures, and named ones.

    ranged (a backfill: since/until given): only documents approved in the window; earlier failures
    elsewhere are left to the scheduled runs (a backfill in 30 chunks must not try them 30 times).
    document_types: only documents of these types. missing_ok: a named document no longer in the
    source is skipped (a re-run of a failed run) instead of failing the run."""
    integ, ledger = ctx.integ, ctx.ledger
    types = set(document_types or ())
    items: dict[str, WorkItem] = {}
    if document_ids:
        for doc_id in document_ids:
            found = ctx.source.candidate(doc_id, integ.client)
            if found is None:
                if missing_ok:
                    get_run_logger().warning("document %s is no longer in %s for client %s: skipped", doc_id, ctx.source.label, integ.client)
                    continue
                raise ValueError(f"integration {integ.key}: document {doc_id} is not in {ctx.source.label} for client {integ.client}")
            items[doc_id] = _item(found, targeted=True)
    else:
        now = datetime.now(timezone.utc)

        def in_window(approved_at: datetime) -> bool:
            # approved "in the future" (a capture system's clock or time zone): reported as waiting, never ignored
            return start <= approved_at <= end or (not ranged and approved_at > now)

        candidates, problems = ctx.source.candidates(integ.client, keep=in_window)
        for cand in candidates:
            if cand.approved_at is not None and in_window(cand.approved_at):
                if not types or cand.meta.get("type") in types:
                    items[cand.doc_id] = WorkItem(cand)
        for problem in problems:
            if problem.meta is not None:  # readable metadata: only this integration's documents, in the window
                if not _wanted(ctx, problem.meta, problem.approved_at):
                    continue
                if problem.approved_at is None or not start <= problem.approved_at <= end:
                    continue
                if types and problem.meta.get("type") not in types:
                    continue
            elif ranged or types:  # unreadable: no approval time or type to place it in a backfill
                continue
            items[problem.doc_id] = WorkItem(None, problem)
        # Earlier failures and parked documents are looked at again whatever their approval time.
        for row in [] if ranged else ledger.rows(integ.key, statuses=L.OPEN_STATUSES + (L.NEEDS_ATTENTION,)):
            if types and row["doc_type"] not in types:
                continue
            if row["doc_id"] not in items:
                found = ctx.source.candidate(row["doc_id"], integ.client)
                if found is None:
                    ledger.supersede(integ.key, row["doc_id"], row["version"], "no longer in the source for this client", ctx.run_id)
                else:
                    items[row["doc_id"]] = _item(found)
    ids = list(items)
    for i in range(0, len(ids), 500):
        for row in ledger.rows(integ.key, doc_ids=ids[i : i + 500]):
            ctx.known.setdefault(row["doc_id"], []).append(row)
    # settled here rather than in prepare(): an idle run then opens no connection and runs no batch
    ctx.work = [item for item in items.values() if ctx.force or not _unchanged(ctx, item)]
    return len(ctx.work)


def _unchanged(ctx: RunContext, item: WorkItem) -> bool:
    """prepare()'s first early return, decided at planning: same files as a delivered (or parked) version."""
    cand = item.candidate
    if cand is None or not _wanted(ctx, cand.meta, cand.approved_at):
        return False
    same = [r for r in ctx.known.get(cand.doc_id, []) if r["fingerprint"] == cand.fingerprint]
    return bool(same) and _settled(same[0], item)


def _item(found: Candidate | SourceProblem, targeted: bool = False) -> WorkItem:
    if isinstance(found, SourceProblem):
        return WorkItem(None, found, targeted)
    return WorkItem(found, None, targeted)


def _wanted(ctx: RunContext, meta: dict[str, Any], approved_at: datetime | None) -> bool:
    integ = ctx.integ
    if integ.filters.approved_only and (meta.get("status") != "approved" or approved_at is None):
        return False
    if approved_at is not None and approved_at < integ.activated_at:
        return False
    return integ.filters.matches(meta.get("type", ""), meta.get("sub_organisation"), [str(t) for t in meta.get("tags") or []])


SEND_CHUNK = 50  # documents whose attempts, then results, are recorded in one ledger transaction each


_THROTTLE = threading.Lock()  # guards RunContext.last_send when documents are sent from several threads


@task(name="deliver-batch", cache_policy=NO_CACHE, persist_result=False)
def deliver_batch(ctx: RunContext, start: int, stop: int) -> int:
    """Documents ctx.work[start:stop]; outcomes go to ctx.outcomes. Returns how many were processed.

    Documents are sent SEND_CHUNK at a time (attempts recorded, sent, results recorded). With a
    connector that declares Ability.PARALLEL, a chunk's documents are sent by up to
    `connector.parallelism` threads while this thread reads, hashes and maps the next chunk; the next
    chunk is only started once this one's results are recorded, so at most one chunk is ever sent
    and not yet recorded (what a killed run leaves to the next run's lookup).
    """
    connector = ctx.connector
    workers = connector.parallelism if connector is not None and Ability.PARALLEL in connector.abilities else 1
    pool = ThreadPoolExecutor(workers, thread_name_prefix="docroute-send") if workers > 1 else None
    chunk: list[Send] = []
    inflight: list[Batch] | None = None  # the chunk being sent
    try:
        for item in ctx.work[start:stop]:
            prepared = prepare(ctx, item)
            if isinstance(prepared, Send):
                chunk.append(prepared)
            elif prepared is not None:
                ctx.outcomes.append(prepared)
            if len(chunk) == SEND_CHUNK:
                if pool is None:
                    ctx.outcomes.extend(send_chunk(ctx, chunk))
                else:
                    if inflight is not None:
                        sent, inflight = inflight, None  # recorded once, even if finishing raises
                        ctx.outcomes.extend(_finish_chunk(ctx, sent))
                    inflight = _start_chunk(ctx, chunk, pool)
                chunk = []
        if inflight is not None:
            sent, inflight = inflight, None
            ctx.outcomes.extend(_finish_chunk(ctx, sent))
        if chunk:
            ctx.outcomes.extend(send_chunk(ctx, chunk, pool))
    except BaseException:
        if inflight is not None:  # record what was sent; documents not yet started stay for the next run
            for _, future in inflight:
                future.cancel()
            try:
                ctx.outcomes.extend(_finish_chunk(ctx, inflight, abandoned=True))
            except Exception:  # noqa: BLE001 - the first error matters; the next run's lookup finds the rest
                pass
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return stop - start


def prepare(ctx: RunContext, item: WorkItem) -> Outcome | Send | None:
    """Read, check and map one document. Returns an Outcome when nothing is to be sent, None to skip."""
    integ, ledger, run = ctx.integ, ctx.ledger, ctx.run_id
    if item.problem is not None:
        p = item.problem
        if ctx.dry_run:
            return Outcome(p.doc_id, "waiting" if p.transient else "failed", error=p.message)
        parked = [r for r in ctx.known.get(p.doc_id, []) if r["version"] == L.UNREADABLE and r["status"] in (L.NEEDS_ATTENTION, L.DISCARDED)]
        if parked and not item.targeted:
            return None  # reported when it was parked; comes back when the document changes or a run names it
        if p.transient:
            ledger.note_waiting(integ.key, p.doc_id, L.UNREADABLE, p.message, run)
            return Outcome(p.doc_id, "waiting", error=p.message)
        status = ledger.mark_failed(integ.key, p.doc_id, L.UNREADABLE, p.message, permanent=True, max_attempts=integ.max_attempts, run=run)
        get_run_logger().warning("%s", p.message)
        return Outcome(p.doc_id, status, error=p.message)
    cand = item.candidate
    assert cand is not None
    if not _wanted(ctx, cand.meta, cand.approved_at):
        for row in ctx.known.get(cand.doc_id, []):
            if row["status"] in L.OPEN_STATUSES and not ctx.dry_run:
                ledger.supersede(integ.key, cand.doc_id, row["version"], "no longer matches the integration's filters", run)
        _warn_unrouted(ctx, cand)
        return None
    rows = ctx.known.get(cand.doc_id, [])
    same = [r for r in rows if r["fingerprint"] == cand.fingerprint]
    if same and not ctx.force and _settled(same[0], item):
        return None  # unchanged since it was delivered (or parked): no need to read the files again
    meta = cand.meta.get("metadata") or {}
    base = Outcome(cand.doc_id, "", str(meta.get("number", "")), str(meta.get("supplier", "")), cand.meta.get("type", ""))
    doc = ctx.source.document(cand)
    if isinstance(doc, SourceProblem):
        return prepare(ctx, WorkItem(None, doc))
    prior = next((r for r in rows if r["version"] == doc.version), None)
    if prior and not ctx.force and _settled(prior, item):
        return None
    if doc.approved_at is not None and doc.approved_at > datetime.now(timezone.utc):
        message = (f"document {doc.id}: approved_at {doc.approved_at.isoformat()} is in the future (the capture "
                   f"system's clock or time zone?); it is exported once that time has passed or the time is corrected")
        if not ctx.dry_run:
            ledger.note_waiting(integ.key, doc.id, doc.version, message, run)
        get_run_logger().warning("%s", message)
        return _with(base, "waiting", error=message)
    info = {
        "approved_at": doc.approved_at,
        "fingerprint": cand.fingerprint,
        "doc_type": doc.type,
        "number": base.number[:200],
        "supplier": base.supplier[:300],
    }
    try:
        package = map_document(doc, integ, ctx.lookups)
    except MappingError as exc:
        if ctx.dry_run:
            return _with(base, "failed", error=str(exc))
        status = ledger.mark_failed(integ.key, doc.id, doc.version, str(exc), permanent=True, max_attempts=integ.max_attempts, info=info, run=run)
        get_run_logger().warning("%s", exc)
        return _with(base, status, error=str(exc))
    remote = package.path_of(package.main)
    if ctx.dry_run:
        return _with(base, "would-deliver", remote=remote)
    return Send(doc, package, prior, info, _with(base, "", remote=remote))


def _warn_unrouted(ctx: RunContext, cand: Candidate) -> None:
    """A document of a type that no integration of its client takes would otherwise go unmentioned."""
    doc_type = cand.meta.get("type", "")
    client = ctx.integ.client
    takers = [i for i in ctx.config.integrations.values() if i.client == client and i.enabled]
    if not any(not i.filters.document_types or doc_type in i.filters.document_types for i in takers):
        get_run_logger().warning(
            "document %s: type %r is taken by no integration of client %s; add it to an integration's "
            "filters.document_types, then backfill (docroute sync ... --since)", cand.doc_id, doc_type, client
        )


def _settled(row: dict, item: WorkItem) -> bool:
    """Delivered, or parked or discarded (unless the run names the document): nothing to do."""
    return row["status"] == L.DELIVERED or (row["status"] in (L.NEEDS_ATTENTION, L.DISCARDED) and not item.targeted)


def send_chunk(ctx: RunContext, sends: list[Send], pool: ThreadPoolExecutor | None = None) -> list[Outcome]:
    """Record the attempts, send each document (in parallel with a pool), then record the confirmed results."""
    return _finish_chunk(ctx, _start_chunk(ctx, sends, pool))


Batch = tuple[list[Send], Future]  # documents sent together, and the future of their results


def _start_chunk(ctx: RunContext, sends: list[Send], pool: ThreadPoolExecutor | None) -> list[Batch]:
    """Record the chunk's attempts, then send its documents: here, or by the pool's threads.

    With Ability.PIPELINE the chunk is cut into one group per sender, each sent with
    `deliver_many` (one exchange per group instead of one per document)."""
    ctx.ledger.begin_attempts(ctx.integ.key, [(s.doc.id, s.doc.version, s.info) for s in sends], ctx.run_id)
    connector = ctx.connector
    assert connector is not None
    if Ability.PIPELINE in connector.abilities and not ctx.integ.throttle_per_second:
        senders = connector.parallelism if pool is not None else 1  # the pool has one thread per connection
        size = -(-len(sends) // senders)
        groups = [sends[i : i + size] for i in range(0, len(sends), size)]
        work = _deliver_group
    else:
        groups = [[s] for s in sends]
        work = lambda ctx, group: [_deliver_one(ctx, group[0])]  # noqa: E731
    if pool is None:
        batches = []
        for group in groups:
            future: Future = Future()
            future.set_result(work(ctx, group))
            batches.append((group, future))
        return batches
    # Each thread runs in a copy of this context: the run logger and Prefect's settings go along.
    return [(group, pool.submit(contextvars.copy_context().run, work, ctx, group)) for group in groups]


def _deliver_group(ctx: RunContext, group: list[Send]) -> list[L.Result]:
    """Send a group with `deliver_many`. Documents an earlier attempt may have touched go one by one
    first (lookup, partial files). Transient failures are sent again together after one backoff
    (a broken connection fails every unfinished document of the exchange), up to `retries` times."""
    connector = ctx.connector
    assert connector is not None
    integ = ctx.integ
    results: dict[int, L.Result] = {}
    pending: list[int] = []
    for i, s in enumerate(group):
        if s.prior and (s.prior["sending_since"] or s.prior["status"] == L.FAILED):
            results[i] = _deliver_one(ctx, s)
        else:
            pending.append(i)
    attempt = 0
    while pending:
        if ctx.refused is not None:
            results.update((i, _not_sent(ctx, group[i])) for i in pending)
            break
        try:
            sent = connector.deliver_many([group[i].package for i in pending])
        except Exception as exc:  # noqa: BLE001 - a connector bug must not lose the group: each document keeps an error
            sent = [TransientDeliveryError(f"document {group[i].doc.id}: unexpected {type(exc).__name__}: {exc}") for i in pending]
        again: list[tuple[int, DeliveryError]] = []
        for i, outcome in zip(pending, sent):
            doc = group[i].doc
            if isinstance(outcome, CredentialsRefusedError):
                ctx.refused = outcome
                results[i] = L.Result(doc.id, doc.version, error=str(outcome))  # not the document's fault: never parked
            elif isinstance(outcome, DeliveryError):
                if not outcome.permanent and attempt < integ.retries:
                    again.append((i, outcome))
                else:
                    results[i] = L.Result(doc.id, doc.version, error=str(outcome), permanent=outcome.permanent)
            else:
                results[i] = L.Result(doc.id, doc.version, remote_ref=outcome.remote_ref, already_present=outcome.already_present)
        if not again:
            break
        if ctx.refused is not None:
            results.update((i, _not_sent(ctx, group[i])) for i, _ in again)
            break
        _back_off(ctx, [(group[i].package, exc) for i, exc in again], attempt)
        attempt += 1
        pending = [i for i, _ in again]
    return [results[i] for i in range(len(group))]


def _deliver_one(ctx: RunContext, s: Send) -> L.Result:
    """Send one document (or find its earlier delivery); every error becomes its result, never raised."""
    connector = ctx.connector
    assert connector is not None
    if ctx.refused is not None:
        return _not_sent(ctx, s)
    try:
        delivery = None
        if s.prior and s.prior["sending_since"]:  # an earlier run started sending this, then died
            if Ability.IDEMPOTENCY_LOOKUP in connector.abilities:
                delivery = connector.lookup(s.package)
            if delivery is None and Ability.REMOVE_PARTIAL in connector.abilities:
                connector.remove_partial(s.package)
        elif s.prior and s.prior["status"] == L.FAILED and Ability.REMOVE_PARTIAL in connector.abilities:
            _remove_partial(ctx, s.package)  # what an earlier run's failed attempt may have left
        if delivery is None:
            delivery = _send(ctx, s.package)
        return L.Result(s.doc.id, s.doc.version, remote_ref=delivery.remote_ref, already_present=delivery.already_present)
    except CredentialsRefusedError as exc:
        ctx.refused = exc
        return L.Result(s.doc.id, s.doc.version, error=str(exc))  # not the document's fault: never parked
    except DeliveryError as exc:
        return L.Result(s.doc.id, s.doc.version, error=str(exc), permanent=exc.permanent)
    except Exception as exc:  # noqa: BLE001 - one bad document never blocks the others
        error = f"document {s.doc.id}: unexpected {type(exc).__name__}: {exc}"
        return L.Result(s.doc.id, s.doc.version, error=error)


def _not_sent(ctx: RunContext, s: Send) -> L.Result:
    return L.Result(s.doc.id, s.doc.version, error=f"document {s.doc.id}: not sent: {ctx.integ.connection} refused the credentials earlier in this run")


def _finish_chunk(ctx: RunContext, batches: list[Batch], abandoned: bool = False) -> list[Outcome]:
    """Wait for the chunk's documents and record the confirmed results in one transaction.

    `abandoned` (the run is failing): documents whose send never started are left as they are
    (attempt begun, nothing sent), for the next run."""
    integ, ledger = ctx.integ, ctx.ledger
    sends: list[Send] = []
    results: list[L.Result] = []
    for group, future in batches:
        if abandoned and future.cancelled():
            continue
        sends.extend(group)
        results.extend(future.result())
    statuses = ledger.record(integ.key, results, max_attempts=integ.max_attempts, run=ctx.run_id)
    logger = get_run_logger()
    outcomes = []
    for s, r in zip(sends, results):
        if r.error is None:
            if integ.archive_after_transfer:
                ctx.source.archive(s.doc)  # only after the delivery is recorded
            status = "already-present" if r.already_present else "delivered"
            outcomes.append(_with(s.outcome, status, remote=r.remote_ref or ""))
        else:
            logger.warning("%s", r.error)
            outcomes.append(_with(s.outcome, statuses[r.doc_id], remote=s.outcome.remote, error=r.error))
    if ctx.refused is not None and not abandoned:
        # Every further document would be refused the same way: stop here, recorded, and say what to fix.
        raise SyncFailed(
            f"{integ.key}: connection {integ.connection} refused the credentials: {ctx.refused}. Fix the connection "
            f"block (Prefect UI: Blocks; test it with docroute check {integ.connection}); the next run sends every "
            f"document again, none is parked for this"
        )
    return outcomes


def _with(base: Outcome, status: str, **kw: str) -> Outcome:
    return Outcome(base.doc_id, status, base.number, base.supplier, base.doc_type, **{"remote": "", "error": "", **kw})


def _send(ctx: RunContext, package):
    """Deliver with retries and backoff on transient errors; permanent errors are not retried."""
    integ = ctx.integ
    attempt = 0
    while True:
        if integ.throttle_per_second:
            with _THROTTLE:  # take the next free slot; parallel senders share the rate
                slot = max(time.monotonic(), ctx.last_send + 1.0 / integ.throttle_per_second)
                ctx.last_send = slot
            wait = slot - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            return ctx.connector.deliver(package)
        except DeliveryError as exc:
            if exc.permanent or attempt >= integ.retries:
                raise
            _back_off(ctx, [(package, exc)], attempt)
            attempt += 1


def _back_off(ctx: RunContext, failures: list[tuple[Any, DeliveryError]], attempt: int) -> None:
    """Before retry `attempt + 1` of these packages' transient failures: log, wait (Retry-After or
    doubling backoff, the longest of them), and remove what the failed attempts left behind."""
    delay = max(e.retry_after if e.retry_after is not None else ctx.integ.retry_delay * 2**attempt for _, e in failures)
    logger = get_run_logger()
    for package, exc in failures:
        logger.info("document %s: transient error, retry %d in %.1fs: %s", package.doc_id, attempt + 1, delay, exc)
    time.sleep(min(delay, MAX_BACKOFF))
    # A connection lost mid-upload leaves temp files (they cannot be removed over a dead
    # connection) and the retry uses new temp names: remove them before sending again.
    if Ability.REMOVE_PARTIAL in ctx.connector.abilities:
        for package, _ in failures:
            _remove_partial(ctx, package)


def _remove_partial(ctx: RunContext, package) -> None:
    """Best effort: a failure here must not hide the delivery's own outcome; the next attempt tries again."""
    try:
        ctx.connector.remove_partial(package)
    except DeliveryError as exc:
        get_run_logger().info("document %s: could not remove partial files yet: %s", package.doc_id, exc)


def _report(integ: Integration, outcomes: list[Outcome], window: tuple[datetime, datetime], dry_run: bool) -> str:
    table = [
        {
            "document": o.doc_id,
            "number": o.number,
            "supplier": o.supplier,
            "type": o.doc_type,
            "remote path": o.remote,
            "status": o.status,
            "error": o.error,
        }
        for o in outcomes
    ]
    counts = Counter(o.status for o in outcomes)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing new"
    create_table_artifact(
        key=f"sync-{integ.slug}",
        table=table or [{"document": "", "status": "nothing new", "error": ""}],
        description=f"Documents of {integ.key} in this run: {summary}",
    )
    failed = [o for o in outcomes if o.failed]
    lines = [
        f"# Sync {integ.key}{' (dry run)' if dry_run else ''}",
        "",
        f"- connection: `{integ.connection}`, source: `{integ.source}`, mode: {integ.mode}",
        f"- window: {window[0].isoformat()} .. {window[1].isoformat()}",
        f"- outcome: {summary}",
    ]
    if failed:
        lines += ["", "## Failed documents", "", "| document | status | error |", "|---|---|---|"]
        lines += [f"| {o.doc_id} | {o.status} | {o.error.replace('|', '/')} |" for o in failed]
    create_markdown_artifact(key=f"sync-summary-{integ.slug}", markdown="\n".join(lines), description=f"Sync summary of {integ.key}")
    return summary


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
    ledger = L.Ledger.from_settings()
    run_id = str(flow_run.id or "local")
    start_time = datetime.now(timezone.utc)
    try:
        with ledger.lock(integ.key):
            cursor = ledger.cursor(integ.key)
            default_start = cursor - integ.lookback if cursor else integ.activated_at
            window_start = max(_utc(since) if since else default_start, integ.activated_at)
            window_end = min(_utc(until) if until else start_time, start_time)  # capped at the run's start
            source = config.block(integ.source).source()
            ctx = RunContext(integ, config, ledger, source, Lookups(config, integ), run_id, force, dry_run)
            retry_ids = ledger.failed_in_run(integ.key, run_id) if _retry_of_failed_run(run_id) else []
            if retry_ids:
                logger.info("%s: re-run of a failed run: retrying its %d failed documents: %s", integ.key, len(retry_ids), ", ".join(retry_ids[:20]))
                total = plan_run(ctx, window_start, window_end, retry_ids, missing_ok=True)
            else:
                ranged = bool(since or until) and not document_ids
                total = plan_run(ctx, window_start, window_end, document_ids, document_types, ranged)
            logger.info("%s: %d documents to look at, window %s .. %s", integ.key, total, window_start.isoformat(), window_end.isoformat())
            if total:
                if not dry_run:
                    mode = Mode(integ.mode)
                    ctx.connector = config.block(integ.connection).connector(mode, integ.connection_options)
                    try:
                        ctx.connector.open()
                    except DeliveryError as exc:  # nothing touched: the documents stay for the next run
                        raise SyncFailed(f"{integ.key}: cannot open connection {integ.connection}: {exc}") from None
                try:
                    size = get_settings().batch_size
                    for i in range(0, total, size):
                        deliver_batch(ctx, i, min(i + size, total))
                finally:
                    if ctx.connector is not None:
                        ctx.connector.close()
            if not (since or until or document_ids or document_types or retry_ids or dry_run):
                ledger.set_cursor(integ.key, window_end, run_id)
    finally:
        ledger.dispose()
    outcomes = ctx.outcomes
    summary = _report(integ, outcomes, (window_start, window_end), dry_run)
    emit_parked(integ, outcomes)  # parked events (per document, and one per run) for automations (flows/notify.py)
    failed = [o for o in outcomes if o.failed]
    if failed:
        named = "; ".join(f"{o.doc_id}: {o.error}" for o in failed[:10])
        more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
        raise SyncFailed(f"{integ.key}: {len(failed)} of {len(outcomes)} documents failed: {named}{more}")
    logger.info("%s: %s", integ.key, summary)
    return SyncResult(integ.key, outcomes, summary)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _retry_of_failed_run(run_id: str) -> bool:
    """This flow run is being run again (the UI's Retry sets it back to AwaitingRetry, and the runner
    executes it with run_count + 1 and the same parameters) and its previous attempt ended Failed.
    A re-run after a crash or a cancel does the whole run again instead."""
    if flow_run.run_count <= 1 or run_id == "local":
        return False
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(UUID(run_id))
    final = sorted((s for s in states if s.is_final()), key=lambda s: s.timestamp)
    return bool(final) and final[-1].is_failed()

