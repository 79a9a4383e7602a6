"""One sync run of one integration, start to end: window, plan, prepare, send, record, confirm, cursor.

    run = SyncRun(integ, config, ledger, source, connect=lambda: block.connector(mode, options))
    result = run.execute()

Plain Python: the Prefect flow (flows/sync.py) builds it from the configuration and blocks, passes
its run logger and a `step` that runs plan and each batch as a Prefect task, and turns the result
into artifacts and the run's state. Tests drive it with in-memory sources and connectors.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from deployments.config import Config
from deployments.schema import Integration
from tasks.connectors.base import Connector
from tasks.engine.model import RunFailed, RunOptions, RunResult, Send
from tasks.engine.plan import plan
from tasks.engine.record import confirm
from tasks.engine.send import deliver_batch
from tasks.errors import BudgetExhaustedError, CredentialsRefusedError, RemoteError
from tasks.ledger import Cursor, DocumentRow, Ledger, LockTimeout, Result
from tasks.mapping import Lookups
from tasks.sources.base import Source, Window

Step = Callable[..., Any]  # step(name, fn, *args) -> fn(*args), perhaps as a Prefect task


def _direct(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class SyncRun:
    """Everything one run shares. A plain class on purpose: Prefect walks dataclass and list task
    parameters looking for futures, which costs seconds at thousands of documents."""

    def __init__(
        self,
        integ: Integration,
        config: Config,
        ledger: Ledger,
        source: Source,
        connect: Callable[[], Connector],
        options: RunOptions | None = None,
        run_id: str = "local",
        log: Any = None,
        step: Step | None = None,
        batch_size: int = 200,
        cancelled: Callable[[], bool] | None = None,
    ):
        self.integ, self.config, self.ledger, self.source, self.connect = integ, config, ledger, source, connect
        source.bind(integ)  # the source reads for this integration (filters, identifiers, source_options)
        self.options = options or RunOptions()
        self.run_id = run_id
        self.log = log or logging.getLogger("docroute.engine")
        self.step = step or _direct
        self.batch_size = batch_size
        self.lookups = Lookups(config, integ)
        self.connector: Connector | None = None
        self.cursor: Cursor | None = None
        self.next_cursor: str | None = None
        self.window: Window | None = None
        self.known: dict[str, list[DocumentRow]] = {}  # doc_id -> ledger rows
        self.work: list = []
        self.outcomes: list = []
        self.last_send = 0.0
        self.refused: CredentialsRefusedError | None = None  # the destination refused the credentials: stop sending
        self.budget: str | None = None  # the connection's call budget ran out: stop sending, the run still completes
        self.source_budget: str | None = None  # the source's ran out: read no more (what was read is sent), the run completes
        self.cancelled = cancelled or (lambda: False)  # asked to stop (the UI's Cancel): stop at the next document
        self._held: dict[str, str] | None = None  # path key -> doc_id: paths documents hold at the destination

    # -- no silent overwrite -----------------------------------------------------------------------
    @staticmethod
    def path_key(path: str) -> str:
        """Paths that a destination may take for the same file: the same Unicode text (NFC) and, for
        case-insensitive file systems (SMB, Windows, macOS), the same letters whatever their case."""
        return unicodedata.normalize("NFC", path).casefold()

    def claim(self, path: str, doc_id: str) -> str | None:
        """Take `path` for `doc_id`; returns the other document that already holds it (in this run, or
        delivered earlier per the ledger), if any. A new version of the same document may take it again."""
        if self._held is None:
            self._held = {self.path_key(p): d for p, d in self.ledger.paths_held(self.integ.key).items()}
        key = self.path_key(path)
        holder = self._held.setdefault(key, doc_id)
        return None if holder == doc_id else holder

    # -- stopping early ------------------------------------------------------------------------
    def halt(self, s: Send, exc: RemoteError) -> Result:
        """Sending stops for the rest of the run: credentials refused (the run fails naming the
        connection) or the call budget used up (the run completes; documents wait, no attempt counted)."""
        if isinstance(exc, BudgetExhaustedError):
            if self.budget is None:
                self.budget = str(exc)
                self.log.warning("%s: %s; the documents not sent wait for the next run", self.integ.key, exc)
            return Result(s.doc.id, s.doc.version, error=f"document {s.doc.id}: not sent: {exc}", waiting=True)
        self.refused = exc  # not the document's fault: never parked
        return Result(s.doc.id, s.doc.version, error=str(exc))

    def out_of_budget(self, exc: BudgetExhaustedError, where: str) -> str:
        """The source's own call budget ran out (listing, reading, marking): no more is read from it (what was
        read is still sent), the cursor stays and the run completes; returns the reason."""
        if self.source_budget is None:
            self.source_budget = str(exc)
            self.log.warning("%s: %s (%s); the documents not read wait for the next run", self.integ.key, exc, where)
        return self.source_budget

    def halted(self) -> bool:
        return self.refused is not None or self.budget is not None or self.cancelled()

    # -- the run -----------------------------------------------------------------------------------------
    def window_for(self, started: datetime) -> Window:
        """A scheduled run: from where the last one checked up to, minus the lookback (never before
        activation), to the run's start. A backfill: its since/until, within the same bounds."""
        integ, o = self.integ, self.options
        checked = self.cursor.checked_until if self.cursor else None
        default_start = checked - integ.lookback if checked else integ.activated_at
        start = max(utc(o.since) if o.since else default_start, integ.activated_at)
        end = min(utc(o.until) if o.until else started, started)  # capped at the run's start
        return Window(start, end, o.ranged)

    def execute(self) -> RunResult:
        """Run under the integration's lock; raises RunFailed when the run cannot go on."""
        integ, ledger = self.integ, self.ledger
        started = datetime.now(timezone.utc)
        with ledger.lock(integ.key):
            self.cursor = ledger.cursor(integ.key)
            self.window = self.window_for(started)
            with self.source:
                total = self.step("plan", plan, self)
                self.log.info("%s: %d documents to look at, window %s .. %s", integ.key, total,
                              self.window.start.isoformat(), self.window.end.isoformat())
                waiting = not self.options.dry_run and bool(ledger.submitted(integ.key, limit=1))
                if total or waiting:
                    self._send(total)
            if self.options.moves_cursor and not self.halted() and self.source_budget is None:
                ledger.set_cursor(integ.key, self.next_cursor, self.window.end, self.run_id)
        return RunResult(integ.key, self.outcomes, (self.window.start, self.window.end), total,
                         self.budget or self.source_budget or "")

    def settle_idle(self, lock_timeout: float = 1.0) -> bool:
        """Settle a scheduled run without the engine when there is nothing to do: plan (the source's
        scan and the ledger, under the integration's lock); with nothing to send and nothing waiting
        for a verdict, move the cursor and return True. False: the run must run (including when
        another run holds the lock). The docroute worker then ends the run Completed, named Idle."""
        if not self.options.moves_cursor:
            return False
        integ, ledger = self.integ, self.ledger
        started = datetime.now(timezone.utc)
        try:
            with ledger.lock(integ.key, timeout=lock_timeout):
                self.cursor = ledger.cursor(integ.key)
                self.window = self.window_for(started)
                with self.source:
                    if plan(self) or self.source_budget is not None or ledger.submitted(integ.key, limit=1):
                        return False
                ledger.set_cursor(integ.key, self.next_cursor, self.window.end, self.run_id)
                return True
        except (LockTimeout, RunFailed):  # a source that cannot be read: the flow run reports it
            return False

    def confirm_only(self) -> RunResult:
        """Ask the destination about the integration's submitted deliveries, and nothing else (the
        docroute-confirm flow: long waits between sync runs). Holds the integration's lock."""
        with self.ledger.lock(self.integ.key):
            if self.ledger.submitted(self.integ.key, limit=1):
                self._send(0)
        return RunResult(self.integ.key, self.outcomes)

    def _send(self, total: int) -> None:
        """Prepare and send the planned documents (a dry run maps them only), then confirm submitted ones."""
        if not self.options.dry_run:
            self.connector = self.connect()
            try:
                self.connector.open()
            except RemoteError as exc:  # nothing touched: the documents stay for the next run
                raise RunFailed(f"{self.integ.key}: cannot open connection {self.integ.connection}: {exc}") from None
        try:
            for i in range(0, total, self.batch_size):
                if self.halted():
                    break
                self.step("deliver-batch", deliver_batch, self, i, min(i + self.batch_size, total))
            if self.connector is not None and not self.halted():
                self.outcomes.extend(confirm(self))
        finally:
            if self.connector is not None:
                self.connector.close()
