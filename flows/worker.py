"""The docroute worker: a Prefect worker type that runs docroute's flow runs in one warm process.

    docroute worker --pool docroute            # or: prefect worker start --pool docroute --type docroute

Prefect's own workers and runners start a fresh Python process for every flow run; importing Prefect
alone costs about 1.3 CPU-seconds, which is most of what an idle scheduled poll costs. This worker
(a `prefect.workers.base.BaseWorker`, work pool type `docroute`, registered through the
`prefect.collections` entry point) polls its work pool like Prefect's workers, claims each due run
by proposing Pending (a run another worker claimed first is refused by the server; a claim whose
answer was lost is known by its message, see `claim`), and runs it in
this process on a bounded pool of threads, with Prefect's own engine (`prefect.flow_engine.run_flow`:
Running, Completed, Failed, Crashed as usual, heartbeats included). It keeps the configuration, the
blocks and the connectors' libraries loaded between runs:

- a client file is read again when it (or a template) changes on disk (tasks.engine: load_config
  per run reads the YAML, cheap; block documents are cached for `block_ttl` seconds, so a block
  edited in the UI is used within a minute);
- a due `docroute-sync` run of an integration whose source has nothing new is settled without the
  engine: the worker plans it in process (the source's scan and the ledger, as the engine would),
  moves the cursor, and ends the run Completed with the state name "Idle": two API calls, no task
  runs, no artifacts. A run with work, or any other flow, runs the whole engine;
- cancellation from the UI: runs of this worker that enter Cancelling are told so; the sync and
  backfill flows stop between documents or chunks and end Cancelled, the others end at once after
  their current step;
- heartbeats: flow-run heartbeats are switched on (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, default 30 s
  here) so that `docroute deploy`'s zombie automation marks a run Crashed when its worker died; what
  the worker cannot finish itself (an error outside the flow) it marks Crashed;
- memory: glibc's malloc arenas are capped at two (`limit_malloc_arenas`), so that the run threads'
  allocations do not fragment one arena each, and after every run of the engine the memory it freed
  is given back to the system (`release_free_memory`).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import anyio
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.flow_engine import run_flow
from prefect.states import Completed, Crashed, Pending
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseVariables,
    BaseWorker,
    BaseWorkerResult,
)

from flows import cancellation

WORKER_TYPE = "docroute"
HEARTBEAT_SECONDS = "30"
SYNC_FLOW = "docroute-sync"
IDLE_STATE = "Idle"  # the name of the Completed state of an idle poll settled without the engine
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (as MALLOC_ARENA_MAX does); True if applied.

    glibc gives threads their own arenas, up to eight per core; in a process whose run threads
    allocate and free all day each arena fragments on its own, and the worker's memory crept up run
    after run (bench/scale_bench.py: +11 % in 15 minutes, still rising; with two arenas it levels off,
    lower). Called before the run threads start. An explicit MALLOC_ARENA_MAX wins; not glibc: no-op."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))  # this process's own C library
    except (OSError, AttributeError):  # musl and others have no mallopt: nothing to cap
        return False


def release_free_memory() -> bool:
    """Give the memory this process has freed back to the system (glibc's malloc_trim); True if any was.

    glibc keeps freed memory for reuse and gives back only the top of its heap, so each large run
    (the status report of 1,000 integrations reads 2,000 API answers) left the worker's resident
    size at that run's peak (measured: a status run +13.5 MB, all of it given back by the trim; the
    first status run of a worker also loads what it needs, about 23 MB once). Trimming takes 1 to 9 ms, so it follows runs of the engine, not the
    idle polls. Not glibc: no-op."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return False


class DocrouteJobConfiguration(BaseJobConfiguration):
    """A docroute run needs no infrastructure of its own: it runs in the worker's process."""


class DocrouteVariables(BaseVariables):
    """Nothing to configure per run: the client files and blocks say everything."""


class DocrouteWorkerResult(BaseWorkerResult):
    """The outcome of one run, as a Prefect worker reports it (0: the run ended; its state says how)."""


def claim(client, flow_run_id: UUID, claim_id: str) -> bool:
    """Claim a due run for this worker by proposing Pending; True if it is this worker's to run.

    The proposal carries `claim_id` in its message. When the server's answer is lost (a timeout, a
    cut connection), Prefect's client sends the same proposal again, and the server refuses it
    (Pending -> Pending): the run is then Pending with this very message, and it is ours. Taking
    that refusal at its word left such a run Pending for good, holding its deployment's only
    concurrency slot."""
    message = f"claimed by docroute worker {claim_id}"
    status = client.set_flow_run_state(flow_run_id, Pending(message=message)).status
    if status != SetStateStatus.ABORT:  # accepted, or a concurrency slot is taken (wait): nothing to read back
        return status == SetStateStatus.ACCEPT
    state = client.read_flow_run(flow_run_id).state
    return state is not None and state.type == StateType.PENDING and state.message == message


class _Deployments:
    """Deployment id -> (flow name, the flow object), read once: the flows are imported once per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[UUID, tuple[str, Any]] = {}

    def get(self, client, deployment_id: UUID) -> tuple[str, Any]:
        with self._lock:
            if deployment_id in self._known:
                return self._known[deployment_id]
        deployment = client.read_deployment(deployment_id)
        flow = client.read_flow(deployment.flow_id)
        path, _, name = (deployment.entrypoint or "").partition(":")
        module = path.removesuffix(".py").replace("/", ".").strip(".")
        target = getattr(importlib.import_module(module), name)
        with self._lock:
            self._known[deployment_id] = (flow.name, target)
        return flow.name, target


class DocrouteWorker(BaseWorker[DocrouteJobConfiguration, DocrouteVariables, DocrouteWorkerResult]):
    """Runs docroute's flow runs in this process on a bounded pool of threads; see the module docstring."""

    type = WORKER_TYPE
    job_configuration = DocrouteJobConfiguration
    job_configuration_variables = DocrouteVariables
    _description = (
        "Runs docroute's flows (sync, backfill, status, confirm, parked, reconcile, check) in one warm process: "
        "no Python process per run; idle scheduled polls settled in two API calls."
    )
    _documentation_url = "https://github.com/docroute/docroute/blob/main/docs/deployment.md"

    DRAIN_SECONDS = 60.0  # how long one poll keeps feeding its due runs to threads as they free up

    def __init__(self, work_pool_name: str, *args: Any, threads: int = 8, **kwargs: Any):
        kwargs.setdefault("limit", threads)
        super().__init__(work_pool_name, *args, **kwargs)
        limit_malloc_arenas()  # before the run threads exist
        os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", HEARTBEAT_SECONDS)
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="docroute-run")
        self._running: dict[UUID, Future] = {}
        self._running_lock = threading.Lock()
        self._deployments = _Deployments()
        self._local = threading.local()
        self.completed_idle = 0  # runs settled without the engine (tests and the benchmark read them)
        self.completed_engine = 0
        self.memory_releases = 0  # release_free_memory after runs of the engine

    # -- the poll -----------------------------------------------------------------------------------------
    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        """Due runs of the pool, each claimed and run in a thread; never more at once than `threads`.

        A backlog (more due runs than free threads) is drained here for up to DRAIN_SECONDS: once half
        the threads are free again the pool is asked again for its due runs. Returning after `threads`
        runs left the threads idle until the next poll (PREFECT_WORKER_QUERY_SECONDS, 10 s). The list
        is always fresh from the server: a run claimed from an old list could be one another worker has
        run to completion meanwhile, and Prefect accepts Completed -> Pending."""
        try:
            pool = self.work_pool
        except RuntimeError:  # not synced with the API yet
            return []
        submitted: list[FlowRun] = []
        deadline = time.monotonic() + self.DRAIN_SECONDS
        while True:
            await self._check_cancellations()
            if self.threads - len(self._running) <= 0:
                return submitted
            scheduled_before = datetime.now(timezone.utc) + timedelta(seconds=self._prefetch_seconds)
            responses = await self.client.get_scheduled_flow_runs_for_work_pool(pool.name, scheduled_before=scheduled_before)
            runs = sorted((r.flow_run for r in responses), key=lambda r: r.next_scheduled_start_time or r.expected_start_time)
            backlog = False
            for flow_run in runs:
                with self._running_lock:
                    if flow_run.id in self._running:
                        continue
                    if len(self._running) >= self.threads:
                        backlog = True
                        break
                    future = self._pool.submit(self._handle, flow_run)
                    self._running[flow_run.id] = future
                future.add_done_callback(lambda f, run_id=flow_run.id: self._done(run_id, f))
                submitted.append(flow_run)
            if not backlog:
                return submitted
            while self.threads - len(self._running) < max(1, self.threads // 2):
                if time.monotonic() >= deadline:
                    return submitted
                await anyio.sleep(0.02)

    def _done(self, run_id: UUID, future: Future) -> None:
        with self._running_lock:
            self._running.pop(run_id, None)
        cancellation.forget(run_id)
        if not future.cancelled() and future.exception() is not None:  # a bug of the worker's: say so, the next poll retries
            self._logger.error("flow run %s: %s: %s", run_id, type(future.exception()).__name__, future.exception(),
                               exc_info=future.exception())

    async def _check_cancellations(self) -> None:
        """Tell the runs of this worker that entered Cancelling (the UI's Cancel) to stop."""
        with self._running_lock:
            ids = list(self._running)
        if not ids:
            return
        cancelling = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids),
                                          state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING]))),
        )
        for flow_run in cancelling:
            if not cancellation.requested(flow_run.id):
                self._logger.info("flow run %s: cancelling", flow_run.name)
                cancellation.request(flow_run.id)

    # -- one run, in a thread --------------------------------------------------------------------------------
    def _thread_client(self):
        """This thread's API client, kept open for the worker's life (one connection per thread, not per run)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = get_client(sync_client=True)
            client.__enter__()
        return client

    def _handle(self, flow_run: FlowRun) -> None:
        logger = self.get_flow_run_logger(flow_run)
        client = self._thread_client()
        try:
            if not claim(client, flow_run.id, f"{self.name} {uuid4()}"):
                return  # another worker claimed it first (aborted), a concurrency slot is taken (wait), or it was cancelled
        except Exception as exc:  # noqa: BLE001 - the next poll sees the run again
            logger.warning("could not claim flow run %s: %s", flow_run.name, exc)
            return
        try:
            flow_name, flow = self._deployments.get(client, flow_run.deployment_id)
            if flow_name == SYNC_FLOW and self._settle_idle(flow_run):
                done = client.set_flow_run_state(flow_run.id, Completed(name=IDLE_STATE, message="nothing new"))
                if done.status == SetStateStatus.ACCEPT:
                    self.completed_idle += 1
                    return
            flow_run = client.read_flow_run(flow_run.id)  # as the engine expects it: Pending, with its parameters
            logger.info("running in docroute worker %r (process %d)", self.name, os.getpid())
        except Exception as exc:  # noqa: BLE001 - not the flow's own failure: the run cannot start here
            logger.exception("flow run %s could not start", flow_run.name)
            client.set_flow_run_state(flow_run.id, Crashed(message=f"the docroute worker could not start it: {type(exc).__name__}: {exc}"), force=True)
            return
        try:
            run_flow(flow, flow_run=flow_run, return_type="state")
            self.completed_engine += 1
        except BaseException as exc:  # noqa: BLE001 - the engine settles flow errors itself; this is anything else
            logger.exception("flow run %s: the engine stopped", flow_run.name)
            client.set_flow_run_state(flow_run.id, Crashed(message=f"the docroute worker lost it: {type(exc).__name__}: {exc}"), force=True)
        finally:
            release_free_memory()
            self.memory_releases += 1

    def _settle_idle(self, flow_run: FlowRun) -> bool:
        """A sync run with nothing new: planned here, without the engine (tasks.engine.run.SyncRun.settle_idle)."""
        # Imported here, not at the top: Prefect's server imports every worker type's module when it
        # starts (prefect.collections), and must not import docroute's flows and their libraries.
        from flows.sync import idle_run

        return idle_run(flow_run)

    # -- what BaseWorker asks of a worker type -----------------------------------------------------------------
    async def run(self, flow_run: FlowRun, configuration: DocrouteJobConfiguration, task_status=None) -> DocrouteWorkerResult:
        """Run one flow run in this process (the worker's own poll does this for scheduled runs)."""
        if task_status is not None:
            task_status.started(os.getpid())
        await anyio.to_thread.run_sync(self._handle, flow_run)
        return DocrouteWorkerResult(identifier=str(flow_run.id), status_code=0)

    async def kill_infrastructure(self, infrastructure_pid: str, configuration: DocrouteJobConfiguration, grace_seconds: int = 30) -> None:
        """A run of this process cannot be killed alone: it is told to stop (see _check_cancellations)."""

    async def __aexit__(self, *exc_info: Any) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        await super().__aexit__(*exc_info)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM stop the worker gently: the runs in progress end first, then it exits.

    A process started in the background by a shell inherits SIGINT ignored (POSIX), and Python then
    leaves it ignored: such a worker never stopped on SIGINT until killed. SIGTERM (docker, Kubernetes,
    a plain kill) would end it at once, mid-run; it is made a SIGINT, which the event loop turns into
    a cancellation of the worker's loops."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only: its caller handles them
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def serve_worker(pool: str, name: str | None = None, threads: int = 8, run_once: bool = False, printer: Callable[..., None] = print) -> None:
    """`docroute worker --pool <name>`: poll the pool and run its flow runs until interrupted."""
    logging.getLogger("docroute").setLevel(logging.INFO)
    worker = DocrouteWorker(pool, name=name, threads=threads, create_pool_if_not_found=True,
                            base_job_template=DocrouteWorker.get_default_base_job_template())
    stop_on_signals()
    try:
        anyio.run(lambda: worker.start(run_once=run_once, printer=printer))
    except KeyboardInterrupt:  # Ctrl-C, or systemd's SIGINT: the runs in progress were finished first
        printer(f"Worker {worker.name!r} stopped.")
