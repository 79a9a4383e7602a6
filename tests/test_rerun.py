"""Re-running a failed sync run from the UI retries exactly its failed documents.

The Prefect UI's Retry button (ui-v2: `setFlowRunState(id, {type: SCHEDULED, name: AwaitingRetry,
message: "Retry from the UI"}, force=true)`) puts the same flow run back to AwaitingRetry; the
process serving the deployment picks it up and runs it again, run_count + 1, same parameters. This
test does exactly that against a real server and a real served runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import State

from deployments.config import load_config
from deployments.deploy import apply_deployments
from tasks.ledger import DELIVERED
from tasks.sources.seed import write_document

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = lambda: datetime.now(timezone.utc)  # noqa: E731

SERVE = """
import sys
from prefect import serve
from deployments.config import load_config
from deployments.deploy import build_deployments
wanted = set(sys.argv[2:])
serve(*[d for d in build_deployments(load_config(only=sys.argv[1])) if d.name in wanted], pause_on_shutdown=False)
"""


@contextlib.contextmanager
def served(ws, integration: str, *names: str):
    """A real served runner (as `python -m deployments.deploy` starts) for these deployments."""
    env = {**ws.env(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SERVE, integration, *names], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
        print(out[-20000:])  # shown by pytest when the test fails: the runs' logs


def wait_final(flow_run_id, proc, after_run_count: int = 0, timeout: float = 240):
    """Poll the server until the flow run is final (with run_count > after_run_count)."""
    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    deadline = time.monotonic() + timeout
    while True:
        run = asyncio.run(read())
        if run.state and run.state.is_final() and run.run_count > after_run_count:
            return run
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"flow run {flow_run_id} still {run.state_name}"
        time.sleep(0.5)


async def _start(deployment_name):
    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment_name)
        return (await client.create_flow_run_from_deployment(dep.id)).id


async def _retry_from_the_ui(flow_run_id, force=True):
    """What the UI's Retry button sends: ui-v2 (the default) with force=True, the v1 UI with force=False."""
    async with get_client() as client:
        result = await client.set_flow_run_state(
            flow_run_id, State(type=StateType.SCHEDULED, name="AwaitingRetry", message="Retry from the UI"), force=force
        )
        return result.status.value


def test_retry_of_a_failed_run_retries_exactly_its_failed_documents(workspace):
    client = f"r{workspace.tag}"
    key = workspace.integration(client=client, max_attempts=2)
    before = NOW() - timedelta(hours=2)

    def doc(doc_id, **kw):
        write_document(workspace.inbox, doc_id, client=client, approved_at=before, metadata={"number": doc_id, "supplier": "Initech"}, **kw)

    # a first run (not this deployment run): PARK-1 fails once
    from flows.sync import sync

    doc("GOOD-1")
    doc("PARK-1", pdf=b"")
    assert sync(integration=key, return_state=True).is_failed()
    # the deployment run: PARK-1 fails a second time (parked), FAIL-1 fails, GOOD-2 is delivered
    doc("FAIL-1", pdf=b"not a pdf")
    doc("GOOD-2")
    apply_deployments(load_config(only=key))
    with served(workspace, key, f"{client}-invoices") as proc:
        run_id = asyncio.run(_start(f"docroute-sync/{client}-invoices"))
        first = wait_final(run_id, proc)
        assert first.state.type == StateType.FAILED and first.run_count == 1
        assert "2 of 3 documents failed" in first.state.message
        assert "PARK-1" in first.state.message and "FAIL-1" in first.state.message
        ledger = workspace.ledger()
        statuses = {r["doc_id"]: r["status"] for r in ledger.rows(key)}
        assert statuses == {"GOOD-1": DELIVERED, "GOOD-2": DELIVERED, "PARK-1": "needs-attention", "FAIL-1": "failed"}
        cursor = ledger.cursor(key)

        # the capture system fixes both; meanwhile a new document arrives in the same window
        doc("PARK-1")
        doc("FAIL-1")
        doc("NEW-1")
        mark = max(e["id"] for e in ledger.events_of(key))

        assert asyncio.run(_retry_from_the_ui(run_id)) == "ACCEPT"
        second = wait_final(run_id, proc, after_run_count=1)

    assert second.id == run_id and second.run_count == 2 and second.state.type == StateType.COMPLETED, second.state.message
    later = [e for e in workspace.ledger().events_of(key) if e["id"] > mark]
    assert sorted(e["doc_id"] for e in later if e["event"] == "attempt") == ["FAIL-1", "PARK-1"]  # exactly the failed ones
    assert sorted(e["doc_id"] for e in later if e["event"] == "delivered") == ["FAIL-1", "PARK-1"]
    assert {e["run"] for e in later} == {str(run_id)}
    assert workspace.ledger().rows(key, doc_ids=["NEW-1"]) == []  # not this run's business: the next run takes it
    assert not (workspace.out / client / "invoice" / "NEW-1.pdf").exists()
    assert sorted(p.stem for p in (workspace.out / client / "invoice").glob("*.pdf")) == ["FAIL-1", "GOOD-1", "GOOD-2", "PARK-1"]
    assert workspace.ledger().cursor(key) == cursor  # a re-run does not move the cursor

    # the next normal run delivers the new document
    result = sync(integration=key)
    assert [o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered"] == ["NEW-1"]


def test_a_rerun_of_a_completed_attempt_is_a_whole_run(workspace):
    """Only a Failed attempt narrows the re-run (read from the run's state history); otherwise the
    same run does its whole window again."""
    client = f"s{workspace.tag}"
    key = workspace.integration(client=client)
    write_document(workspace.inbox, "A-1", client=client, approved_at=NOW() - timedelta(hours=1))
    apply_deployments(load_config(only=key))
    with served(workspace, key, f"{client}-invoices") as proc:
        run_id = asyncio.run(_start(f"docroute-sync/{client}-invoices"))
        first = wait_final(run_id, proc)
        assert first.state.type == StateType.COMPLETED, first.state.message
        write_document(workspace.inbox, "A-2", client=client, approved_at=NOW() - timedelta(minutes=30))
        assert asyncio.run(_retry_from_the_ui(run_id, force=False)) == "ACCEPT"  # the v1 UI's request
        again = wait_final(run_id, proc, after_run_count=1)
    assert again.state.type == StateType.COMPLETED and again.run_count == 2, again.state.message
    # the previous attempt completed: the re-run is a normal run of its parameters and finds A-2
    assert (workspace.out / client / "invoice" / "A-2.pdf").exists()
