"""Send: deliver prepared documents, SEND_CHUNK at a time, in parallel and pipelined where the connector can.

The protocol per chunk: the attempts are recorded (one ledger transaction), the documents are sent,
then the confirmed results are recorded (one transaction: tasks/engine/record.py). A crash between
the two leaves rows marked `sending_since`, which the next run settles by lookup before sending.
With Ability.PARALLEL a chunk is sent by up to `connector.parallelism` threads while this thread
reads and maps the next chunk; the next chunk starts only once this one's results are recorded, so
at most one chunk is ever sent and not yet recorded. With Ability.PIPELINE each sender's share of a
chunk goes in one exchange (`deliver_many`).
"""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tasks.connectors.base import Ability, Package
from tasks.engine.model import Batch, Send
from tasks.engine.prepare import prepare
from tasks.engine.record import finish_chunk
from tasks.errors import (
    BudgetExhaustedError,
    CredentialsRefusedError,
    RemoteError,
    TransientError,
)
from tasks.ledger import Result

if TYPE_CHECKING:
    from tasks.engine.run import SyncRun

SEND_CHUNK = 50  # documents whose attempts, then results, are recorded in one ledger transaction each
MAX_BACKOFF = 60.0
_THROTTLE = threading.Lock()  # guards SyncRun.last_send when documents are sent from several threads


def deliver_batch(run: SyncRun, start: int, stop: int) -> int:
    """Documents run.work[start:stop]; outcomes go to run.outcomes. Returns how many were processed."""
    connector = run.connector
    workers = connector.parallelism if connector is not None and Ability.PARALLEL in connector.abilities else 1
    pool = ThreadPoolExecutor(workers, thread_name_prefix="docroute-send") if workers > 1 else None
    chunk: list[Send] = []
    inflight: list[Batch] | None = None  # the chunk being sent
    try:
        for item in run.work[start:stop]:
            if run.halted():  # sending stopped: the rest is not even read (the cursor stays for them)
                break
            prepared = prepare(run, item)
            if isinstance(prepared, Send):
                chunk.append(prepared)
            elif prepared is not None:
                run.outcomes.append(prepared)
            if len(chunk) == SEND_CHUNK:
                if pool is None:
                    run.outcomes.extend(finish_chunk(run, start_chunk(run, chunk, None)))
                else:
                    if inflight is not None:
                        sent, inflight = inflight, None  # recorded once, even if finishing raises
                        run.outcomes.extend(finish_chunk(run, sent))
                    inflight = start_chunk(run, chunk, pool)
                chunk = []
        if inflight is not None:
            sent, inflight = inflight, None
            run.outcomes.extend(finish_chunk(run, sent))
        if chunk:
            run.outcomes.extend(finish_chunk(run, start_chunk(run, chunk, pool)))
    except BaseException:
        if inflight is not None:  # record what was sent; documents not yet started stay for the next run
            for _, future in inflight:
                future.cancel()
            try:
                run.outcomes.extend(finish_chunk(run, inflight, abandoned=True))
            except Exception:  # noqa: BLE001 - the first error matters; the next run's lookup finds the rest
                pass
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return stop - start


def start_chunk(run: SyncRun, sends: list[Send], pool: ThreadPoolExecutor | None) -> list[Batch]:
    """Record the chunk's attempts, then send its documents: here, or by the pool's threads.

    With Ability.PIPELINE the chunk is cut into one group per sender, each sent with
    `deliver_many` (one exchange per group instead of one per document)."""
    run.ledger.begin_attempts(run.integ.key, [(s.doc.id, s.doc.version, s.info) for s in sends], run.run_id)
    connector = run.connector
    assert connector is not None
    if Ability.PIPELINE in connector.abilities and not run.integ.throttle_per_second:
        senders = connector.parallelism if pool is not None else 1  # the pool has one thread per connection
        size = -(-len(sends) // senders)
        groups = [sends[i : i + size] for i in range(0, len(sends), size)]
        work = deliver_group
    else:
        groups = [[s] for s in sends]
        work = _deliver_single
    if pool is None:
        batches = []
        for group in groups:
            future: Future = Future()
            future.set_result(work(run, group))
            batches.append((group, future))
        return batches
    # Each thread runs in a copy of this context: the run logger and Prefect's settings go along.
    return [(group, pool.submit(contextvars.copy_context().run, work, run, group)) for group in groups]


def _deliver_single(run: SyncRun, group: list[Send]) -> list[Result]:
    return [deliver_one(run, group[0])]


def deliver_group(run: SyncRun, group: list[Send]) -> list[Result]:
    """Send a group with `deliver_many`. Documents an earlier attempt may have touched go one by one
    first (lookup, partial files). Transient failures are sent again together after one backoff
    (a broken connection fails every unfinished document of the exchange), up to `retries` times."""
    connector = run.connector
    assert connector is not None
    results: dict[int, Result] = {}
    pending: list[int] = []
    for i, s in enumerate(group):
        if s.prior and (s.prior.sending_since or s.prior.status == "failed"):
            results[i] = deliver_one(run, s)
        else:
            pending.append(i)
    attempt = 0
    while pending:
        if run.halted():
            results.update((i, not_sent(run, group[i])) for i in pending)
            break
        try:
            sent = connector.deliver_many([group[i].package for i in pending])
        except Exception as exc:  # noqa: BLE001 - a connector bug must not lose the group: each document keeps an error
            sent = [TransientError(f"document {group[i].doc.id}: unexpected {type(exc).__name__}: {exc}") for i in pending]
        again: list[tuple[int, RemoteError]] = []
        for i, outcome in zip(pending, sent):
            s = group[i]
            if isinstance(outcome, RemoteError):
                if isinstance(outcome, (CredentialsRefusedError, BudgetExhaustedError)):
                    results[i] = run.halt(s, outcome)
                elif not outcome.permanent and attempt < run.integ.retries:
                    again.append((i, outcome))
                else:
                    results[i] = Result(s.doc.id, s.doc.version, error=str(outcome), permanent=outcome.permanent)
            else:
                results[i] = delivered(s, outcome)
        if not again:
            break
        if run.halted():
            results.update((i, not_sent(run, group[i])) for i, _ in again)
            break
        back_off(run, [(group[i].package, exc) for i, exc in again], attempt)
        attempt += 1
        pending = [i for i, _ in again]
    return [results[i] for i in range(len(group))]


def delivered(s: Send, delivery: Any) -> Result:
    return Result(s.doc.id, s.doc.version, remote_ref=delivery.remote_ref, already_present=delivery.already_present,
                  accepted=delivery.accepted, detail=delivery.detail or None)


def deliver_one(run: SyncRun, s: Send) -> Result:
    """Send one document (or find its earlier delivery); every error becomes its result, never raised."""
    connector = run.connector
    assert connector is not None
    if run.halted():
        return not_sent(run, s)
    try:
        delivery = None
        if s.prior and s.prior.sending_since:  # an earlier run started sending this, then died
            if Ability.IDEMPOTENCY_LOOKUP in connector.abilities:
                delivery = connector.lookup(s.package)
            if delivery is None and Ability.REMOVE_PARTIAL in connector.abilities:
                connector.remove_partial(s.package)
        elif s.prior and s.prior.status == "failed" and Ability.REMOVE_PARTIAL in connector.abilities:
            remove_partial(run, s.package)  # what an earlier run's failed attempt may have left
        if delivery is None:
            delivery = send_with_retries(run, s.package)
        return delivered(s, delivery)
    except (CredentialsRefusedError, BudgetExhaustedError) as exc:
        return run.halt(s, exc)
    except RemoteError as exc:
        return Result(s.doc.id, s.doc.version, error=str(exc), permanent=exc.permanent)
    except Exception as exc:  # noqa: BLE001 - one bad document never blocks the others
        return Result(s.doc.id, s.doc.version, error=f"document {s.doc.id}: unexpected {type(exc).__name__}: {exc}")


def not_sent(run: SyncRun, s: Send) -> Result:
    """A document this run did not send because sending stopped (credentials refused, budget used up)."""
    if run.budget is not None:
        return Result(s.doc.id, s.doc.version, error=f"document {s.doc.id}: not sent: {run.budget}", waiting=True)
    return Result(s.doc.id, s.doc.version, error=f"document {s.doc.id}: not sent: {run.integ.connection} refused the credentials earlier in this run")


def send_with_retries(run: SyncRun, package: Package):
    """Deliver with retries and backoff on transient errors; permanent errors are not retried."""
    integ = run.integ
    attempt = 0
    while True:
        if integ.throttle_per_second:
            with _THROTTLE:  # take the next free slot; parallel senders share the rate
                slot = max(time.monotonic(), run.last_send + 1.0 / integ.throttle_per_second)
                run.last_send = slot
            wait = slot - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            return run.connector.deliver(package)
        except RemoteError as exc:
            if exc.permanent or attempt >= integ.retries or isinstance(exc, BudgetExhaustedError):
                raise
            back_off(run, [(package, exc)], attempt)
            attempt += 1


def back_off(run: SyncRun, failures: list[tuple[Package, RemoteError]], attempt: int) -> None:
    """Before retry `attempt + 1` of these packages' transient failures: log, wait (Retry-After or
    doubling backoff, the longest of them), and remove what the failed attempts left behind."""
    delay = max(e.retry_after if e.retry_after is not None else run.integ.retry_delay * 2**attempt for _, e in failures)
    for package, exc in failures:
        run.log.info("document %s: transient error, retry %d in %.1fs: %s", package.doc_id, attempt + 1, delay, exc)
    time.sleep(min(delay, MAX_BACKOFF))
    # A connection lost mid-upload leaves temp files (they cannot be removed over a dead
    # connection) and the retry uses new temp names: remove them before sending again.
    if Ability.REMOVE_PARTIAL in run.connector.abilities:
        for package, _ in failures:
            remove_partial(run, package)


def remove_partial(run: SyncRun, package: Package) -> None:
    """Best effort: a failure here must not hide the delivery's own outcome; the next attempt tries again."""
    try:
        run.connector.remove_partial(package)
    except RemoteError as exc:
        run.log.info("document %s: could not remove partial files yet: %s", package.doc_id, exc)
