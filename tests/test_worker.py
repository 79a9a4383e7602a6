"""The docroute worker (flows/worker.py) against the session's real Prefect server: runs in one warm
process, idle polls settled without the engine, cancellation from the UI. (A killed worker's runs
marked Crashed by the zombie automation, and a worker restarted under its name: tests/test_scale_out.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.deployments import run_deployment
from prefect.states import Cancelling, Pending, Scheduled

from deployments.config import load_config
from deployments.deploy import apply_deployments
from flows.worker import DocrouteWorker, claim
from tasks.sources.seed import write_document
from tests.connectors.harness_webhook import Receiver, Scripted, new_secret

ROOT = Path(__file__).resolve().parent.parent
HOUR_AGO = datetime.now(timezone.utc) - timedelta(hours=1)


@contextmanager
def worker(workspace, pool: str, name: str, heartbeat: int = 30, threads: int = 4, query_seconds: int = 1,  # Prefect takes 30 s at least
           sigint_ignored: bool = False):
    env = {**workspace.env(), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat), "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds),
           "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    log = (workspace.root / f"worker-{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "worker", "--pool", pool, "--name", name, "--threads", str(threads)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            # as a shell's background job (`docroute worker &`, nohup) starts it
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(run_id, done, timeout: float = 120):
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if done(run):
                return run
            assert time.monotonic() < deadline, f"flow run {run.name} is still {run.state.name if run.state else '?'}"
            time.sleep(0.5)


def final(run_id, timeout: float = 120):
    return wait_for(run_id, lambda r: r.state is not None and r.state.is_final(), timeout)


def start(deployment: str, **params):
    return run_deployment(deployment, parameters=params or None, timeout=0).id


def run_logs(run_id, containing: str, timeout: float = 20) -> str:
    """The run's logs, once they hold `containing` (logs reach the server in batches, after the run's state)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            text = "\n".join(log.message for log in logs)
            if containing in text or time.monotonic() > deadline:
                return text
            time.sleep(0.5)


def deploy(workspace, key: str, pool: str) -> str:
    names = apply_deployments(load_config(only=key), work_pool=pool)
    return next(n for n in names if n.startswith("docroute-sync/"))


def test_runs_go_in_the_worker_s_own_process_and_idle_polls_skip_the_engine(workspace):
    pool, key = f"pool-{workspace.tag}", workspace.integration()
    deployment = deploy(workspace, key, pool)
    for i in range(3):
        write_document(workspace.inbox, f"W-{i}", client="acme", approved_at=HOUR_AGO)
    with worker(workspace, pool, f"w-{workspace.tag}") as proc:
        busy = final(start(deployment))
        assert busy.state.type == StateType.COMPLETED and busy.state.name == "Completed"
        assert sorted(p.name for p in (workspace.out / "acme" / "invoice").iterdir()) == ["W-0.pdf", "W-1.pdf", "W-2.pdf"]
        assert f"process {proc.pid}" in run_logs(busy.id, "running in docroute worker")  # the worker's process: none per run
        idle = final(start(deployment))
        assert idle.state.type == StateType.COMPLETED and idle.state.name == "Idle"
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[idle.id])))
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[idle.id])))
            busy_artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[busy.id])))
        assert tasks == [] and artifacts == [] and len(busy_artifacts) == 2  # the idle poll: no task runs, no artifacts
        assert workspace.ledger().cursor(key).checked_until >= idle.expected_start_time - timedelta(seconds=5)
        write_document(workspace.inbox, "W-3", client="acme", approved_at=HOUR_AGO)  # something new: the engine runs again
        later = final(start(deployment))
        assert later.state.name == "Completed" and (workspace.out / "acme" / "invoice" / "W-3.pdf").exists()
        assert proc.poll() is None


def test_a_run_cancelled_in_the_ui_stops_and_ends_cancelled(workspace):
    secret = new_secret()
    receiver = Receiver([secret])
    try:
        from blocks.webhook import WebhookConnection

        WebhookConnection(url=receiver.url, signing_secrets=[secret]).save(f"slow-{workspace.tag}")
        receiver.script(*[Scripted(None, delay=1.0) for _ in range(40)])  # one document a second
        pool = f"pool-{workspace.tag}"
        key = workspace.integration(connection=f"webhook-connection/slow-{workspace.tag}")
        deployment = deploy(workspace, key, pool)
        for i in range(30):
            write_document(workspace.inbox, f"C-{i:02d}", client="acme", approved_at=HOUR_AGO)
        with worker(workspace, pool, f"w-{workspace.tag}"):
            run_id = start(deployment)
            wait_for(run_id, lambda r: r.state is not None and r.state.type == StateType.RUNNING)
            wait_for(run_id, lambda r: len(receiver.deliveries) >= 2, 60)
            with get_client(sync_client=True) as client:  # what the UI's Cancel does
                client.set_flow_run_state(run_id, Cancelling(message="cancelled by ops"), force=True)
            run = final(run_id, 60)
        assert run.state.type == StateType.CANCELLED, run.state
        assert 2 <= len(receiver.deliveries) < 30
        rows = {r.doc_id: r for r in workspace.ledger().rows(key)}
        assert all(r.status == "delivered" for r in rows.values() if r.doc_id in {x.document["id"] for x in receiver.deliveries.values()})
        assert not any(r.sending_since for r in rows.values())  # nothing left half-sent: the next run takes the rest
    finally:
        receiver.stop()


def test_a_backlog_is_drained_as_threads_free_up_not_threads_runs_per_poll(workspace):
    """Six due runs, one thread, a poll every 60 s: all six finish well before a second poll (a worker
    that took `threads` runs per poll would need five more polls, five minutes)."""
    pool, key = f"pool-{workspace.tag}", workspace.integration()
    deployment = deploy(workspace, key, pool)
    ids = [start(deployment) for _ in range(6)]
    with worker(workspace, pool, f"w-{workspace.tag}", threads=1, query_seconds=60):
        runs = [final(run_id, timeout=45) for run_id in ids]
    assert [r.state.type for r in runs] == [StateType.COMPLETED] * 6



@flow(name="claimed-by-a-test")
def nothing() -> None:
    """A flow run to claim; never run."""


def test_a_claim_whose_answer_was_lost_is_still_the_worker_s_and_no_one_else_s(workspace):
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(nothing, state=Scheduled())
        # worker w1's proposal reached the server but its answer was lost: Prefect's client sends it again,
        # and the server refuses a second Pending
        client.set_flow_run_state(run.id, Pending(message="claimed by docroute worker w1 1234"))
        assert client.set_flow_run_state(run.id, Pending(message="claimed by docroute worker w1 1234")).status == SetStateStatus.ABORT
        assert claim(client, run.id, "w1 1234")  # the run is w1's: it runs it instead of leaving it Pending
        assert not claim(client, run.id, "w2 5678")  # and no other worker's
        fresh = client.create_flow_run(nothing, state=Scheduled())
        assert claim(client, fresh.id, "w2 5678")
        assert client.read_flow_run(fresh.id).state.message == "claimed by docroute worker w2 5678"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_worker_stops_on_sigint_and_sigterm_even_started_as_a_background_job(workspace, sig):
    pool, name = f"stop-{workspace.tag}", f"w-stop-{workspace.tag}"
    log = workspace.root / f"worker-{name}.log"
    with worker(workspace, pool, name, sigint_ignored=True) as proc:
        deadline = time.monotonic() + 90
        while "started!" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not stop on {sig.name} within 30 s")
    assert proc.returncode == 0 and f"Worker {name!r} stopped." in log.read_text(), log.read_text()[-2000:]


# -- memory: malloc arenas ------------------------------------------------------------------------------
ARENAS_CHILD = """
import ctypes, sys, threading
from flows.worker import limit_malloc_arenas
print(limit_malloc_arenas(), flush=True)
barrier = threading.Barrier(12)
def churn():
    barrier.wait()  # all alive at once: glibc hands each new thread an arena of its own, up to its limit
    for _ in range(200):
        [bytearray(4096) for _ in range(20)]
threads = [threading.Thread(target=churn) for _ in range(12)]
[t.start() for t in threads]
[t.join() for t in threads]
ctypes.CDLL(None).malloc_stats()  # to stderr: one "Arena N:" block per arena
"""


def arenas_of(child: str, env_cap: str | None = None) -> tuple[str, int]:
    """Run `child` in a fresh Python (MALLOC_ARENA_MAX as given): (its stdout, the arenas glibc made)."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if env_cap:
        env["MALLOC_ARENA_MAX"] = env_cap
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip(), out.stderr.count("Arena ")


@pytest.mark.parametrize("env_cap", [None, "4"], ids=["capped-by-the-worker", "MALLOC_ARENA_MAX-wins"])
def test_the_worker_caps_malloc_arenas_so_its_run_threads_do_not_fragment_memory(env_cap):
    applied, arenas = arenas_of(ARENAS_CHILD, env_cap)
    if env_cap is None:
        assert applied == "True" and 1 <= arenas <= 2, arenas
    else:  # the operator's setting is left alone, and glibc applies it
        assert applied == "False" and 2 < arenas <= 4, arenas


def test_without_the_cap_the_same_threads_take_more_arenas():
    """What the cap prevents (the check above would pass vacuously if these threads never made new arenas)."""
    _, arenas = arenas_of(ARENAS_CHILD.replace("print(limit_malloc_arenas(), flush=True)", "print('uncapped', flush=True)"))
    assert arenas > 4, arenas


# -- memory: freed memory given back after runs of the engine ---------------------------------------------
RELEASE_CHILD = """
import gc, os, sys
from flows.worker import release_free_memory
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
blocks = [bytearray(2000) for _ in range(50_000)]  # 100 MB in blocks of glibc's heap (pymalloc takes <= 512 bytes)
keep = bytearray(2000)  # above them: the heap's top stays in use, so glibc cannot shrink it on its own
peak = rss_mb()
del blocks
gc.collect()
freed = rss_mb()
released = release_free_memory() if sys.argv[1] == "release" else None
print(released, round(peak), round(freed), round(rss_mb()))
"""


@pytest.mark.parametrize("release", [True, False], ids=["released", "kept-without-it"])
def test_release_free_memory_gives_freed_heap_back_to_the_system(release):
    out = subprocess.run([sys.executable, "-c", RELEASE_CHILD, "release" if release else "keep"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    released, peak, freed, after = out.stdout.split()
    assert int(peak) - int(freed) < 20, out.stdout  # free() alone keeps it: what the worker's memory showed
    if release:
        assert released == "True" and int(freed) - int(after) > 80, out.stdout
    else:
        assert int(freed) - int(after) < 20, out.stdout


def test_the_worker_gives_memory_back_after_each_run_of_the_engine_not_after_idle_polls(workspace, monkeypatch):
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")  # the worker sets it for its process
    pool, key = f"pool-{workspace.tag}", workspace.integration()
    deployment = deploy(workspace, key, pool)
    write_document(workspace.inbox, "M-1", client="acme", approved_at=HOUR_AGO)

    with get_client(sync_client=True) as client:  # the first finds the document (the engine), the second nothing (idle)
        flow_runs = [client.read_flow_run(start(deployment)) for _ in range(2)]

    async def run_two() -> DocrouteWorker:
        async with DocrouteWorker(pool, name=f"in-process-{workspace.tag}", threads=1) as w:
            for flow_run in flow_runs:
                await w.run(flow_run, None)
            return w

    w = anyio.run(run_two)
    assert (w.completed_engine, w.completed_idle, w.memory_releases) == (1, 1, 1)
    assert (workspace.out / "acme" / "invoice" / "M-1.pdf").exists()
