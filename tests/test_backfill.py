"""The backfill flow on a real Prefect server: chunks, progress, resume, dedup, force, client-wide, types."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

from flows.backfill import BackfillFailed, backfill, backfill_id, chunks_of, window
from tasks.ledger import DELIVERED
from tasks.sources.seed import write_document
from tests.conftest import confirmations, opened_files, utc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seed_days(ws, client, days, per_day=2, doc_type="invoice", prefix="D", **kw):
    """per_day documents approved at 10:00 and 22:00 UTC of each March 2026 day; returns their ids."""
    ids = []
    for day in days:
        for n in range(per_day):
            doc_id = f"{prefix}{day:02d}-{n}"
            write_document(ws.inbox, doc_id, client=client, doc_type=doc_type, approved_at=utc(2026, 3, day, 10 + 12 * (n % 2)),
                           metadata={"number": doc_id, "supplier": "Initech"}, **kw)
            ids.append(doc_id)
    return ids


def delivered(ws, client, doc_type="invoice"):
    folder = ws.out / client / doc_type
    return sorted(p.stem for p in folder.glob("*.pdf")) if folder.exists() else []


def artifacts(flow_run_id, key):
    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            )

    return asyncio.run(read())


def table(artifact):
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_chunks_and_windows():
    assert [(s.day, e.day, e.hour) for s, e in chunks_of(utc(2026, 3, 1), utc(2026, 3, 3, 23, 59, 59, 999999), timedelta(days=1))] == [
        (1, 1, 23), (2, 2, 23), (3, 3, 23)]
    parts = chunks_of(utc(2026, 3, 1), utc(2026, 3, 2, 5), timedelta(days=1))
    assert parts[-1] == (utc(2026, 3, 2), utc(2026, 3, 2, 5))  # the last chunk is shorter
    assert all(b[0] - a[1] == timedelta(microseconds=1) for a, b in zip(parts, parts[1:]))  # no gap, no overlap

    class Integ:
        activated_at = utc(2026, 2, 1)

    now = utc(2026, 11, 5, 12)
    # a date as `until` covers the whole day; never before activation nor after now
    assert window(utc(2026, 1, 1), utc(2026, 10, 31), Integ, now) == (utc(2026, 2, 1), utc(2026, 10, 31, 23, 59, 59, 999999))
    assert window(utc(2026, 3, 1), utc(2026, 10, 31, 12), Integ, now)[1] == utc(2026, 10, 31, 12)
    assert window(utc(2026, 3, 1), None, Integ, now)[1] == now
    assert window(utc(2026, 3, 1), utc(2027, 1, 1), Integ, now)[1] == now
    a = backfill_id("acme/x", utc(2026, 3, 1), utc(2026, 3, 31), ["invoice", "credit_note"], "1d", False)
    assert a == backfill_id("acme/x", utc(2026, 3, 1), utc(2026, 3, 31), ["credit_note", "invoice"], "24h", False)
    assert a != backfill_id("acme/x", utc(2026, 3, 1), utc(2026, 3, 31), ["invoice"], "1d", False)
    assert a != backfill_id("acme/x", utc(2026, 3, 1), utc(2026, 3, 31), ["invoice", "credit_note"], "1d", True)


def test_backfill_runs_in_chunks_reports_progress_and_a_second_run_delivers_nothing_unless_forced(workspace):
    client = f"b{workspace.tag}"
    key = workspace.integration(client=client)
    inside = seed_days(workspace, client, [1, 2, 3, 4])
    outside = seed_days(workspace, client, [5, 28], prefix="OUT")  # after the range, and a late one...
    write_document(workspace.inbox, "FEB-1", client=client, approved_at=utc(2026, 2, 27, 12))  # ...before it

    state = backfill(integration=key, since=utc(2026, 3, 1), until=utc(2026, 3, 4), chunk="1d", return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert [(c["start"][:10], c["status"]) for c in result["chunks"]] == [
        ("2026-03-01", "done"), ("2026-03-02", "done"), ("2026-03-03", "done"), ("2026-03-04", "done")]
    assert delivered(workspace, client) == sorted(inside)  # the 22:00 documents of the 4th too: a date means the whole day
    assert workspace.ledger().cursor(key) is None  # a backfill never moves the cursor
    assert not set(outside) & set(delivered(workspace, client))

    # one sync run per chunk, each a subflow run with its own window
    runs = {c["run"] for c in result["chunks"]}
    assert len(runs) == 4 and "" not in runs
    run_ids = {e["run"] for e in workspace.ledger().events_of(key) if e["event"] == "delivered"}
    assert run_ids == runs

    flow_run_id = state.state_details.flow_run_id
    (progress,) = artifacts(flow_run_id, f"backfill-progress-{client}-invoices")
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert "4 of 4 chunks" in progress.description
    (chunks,) = artifacts(flow_run_id, f"backfill-{client}-invoices")
    rows = table(chunks)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert rows[0]["outcome"] == "2 delivered" and rows[0]["from"].startswith("2026-03-01T00:00:00")

    # the same backfill again: every chunk looked at, nothing delivered twice
    again = backfill(integration=key, since=utc(2026, 3, 1), until=utc(2026, 3, 4), chunk="1d")
    assert [c["status"] for c in again["chunks"]] == ["done"] * 4
    assert {c["summary"] for c in again["chunks"]} == {"nothing new"}
    assert confirmations(workspace, key) == {i: 1 for i in inside}

    # forced: delivered again, and the files really rewritten
    (workspace.out / client / "invoice" / f"{inside[0]}.pdf").unlink()
    forced = backfill(integration=key, since=utc(2026, 3, 1), until=utc(2026, 3, 4), chunk="2d", force=True)
    assert [c["status"] for c in forced["chunks"]] == ["done"] * 2
    assert confirmations(workspace, key) == {i: 2 for i in inside}
    assert delivered(workspace, client) == sorted(inside)
    assert workspace.ledger().cursor(key) is None


def test_a_failed_chunk_is_done_again_on_resume_and_done_chunks_are_skipped(workspace):
    client = f"f{workspace.tag}"
    key = workspace.integration(client=client, max_attempts=5)
    good = seed_days(workspace, client, [1, 2, 3])
    write_document(workspace.inbox, "BAD-2", client=client, approved_at=utc(2026, 3, 2, 12), pdf=b"")

    state = backfill(integration=key, since=utc(2026, 3, 1), until=utc(2026, 3, 3), chunk="1d", return_state=True)
    assert state.is_failed()
    assert "1 of 3 chunks not done" in state.message and "2026-03-02T00:00:00" in state.message and "BAD-2" in state.message
    with pytest.raises(BackfillFailed):
        state.result()
    assert delivered(workspace, client) == sorted(good)  # the other chunks went on
    (chunks,) = artifacts(state.state_details.flow_run_id, f"backfill-{client}-invoices")
    assert [r["status"] for r in table(chunks)] == ["done", "failed", "done"]

    # fixed at the source; the same backfill again resumes: only the failed chunk runs
    write_document(workspace.inbox, "BAD-2", client=client, approved_at=utc(2026, 3, 2, 12))
    resumed = backfill(integration=key, since=utc(2026, 3, 1), until=utc(2026, 3, 3), chunk="1d")
    assert [c["status"] for c in resumed["chunks"]] == ["resumed", "done", "resumed"]
    assert resumed["chunks"][1]["summary"] == "1 delivered"
    assert delivered(workspace, client) == sorted(good + ["BAD-2"])
    assert confirmations(workspace, key) == {i: 1 for i in good + ["BAD-2"]}
    row, chunks = workspace.ledger().backfill_state(backfill_id(key, utc(2026, 3, 1), utc(2026, 3, 3), None, "1d", False))
    assert row["status"] == "completed" and [c["status"] for c in chunks] == ["done"] * 3


KILLABLE = """
import sys
from datetime import datetime
from flows.backfill import backfill
backfill(integration=sys.argv[1], since=datetime.fromisoformat(sys.argv[2]), until=datetime.fromisoformat(sys.argv[3]), chunk="1d")
"""


def _progress_of_key(key):
    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    return asyncio.run(read())


def test_a_killed_backfill_resumes_where_it_stopped_and_its_progress_moved(workspace):
    client = f"k{workspace.tag}"
    key = workspace.integration(client=client, throttle_per_second=4)
    ids = seed_days(workspace, client, range(1, 7), per_day=2)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, key, "2026-03-01T00:00:00+00:00", "2026-03-06T00:00:00+00:00"],
        env=workspace.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    bid = backfill_id(key, utc(2026, 3, 1), utc(2026, 3, 6), None, "1d", False)
    seen: list[float] = []
    deadline = time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline
            for art in _progress_of_key(f"backfill-progress-{client}-invoices"):
                if not seen or float(art.data) != seen[-1]:
                    seen.append(float(art.data))
            _, chunks = workspace.ledger().backfill_state(bid)
            if len([c for c in chunks if c["status"] == "done"]) >= 2:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _, chunks = workspace.ledger().backfill_state(bid)
    done_before = [c["chunk_start"] for c in chunks if c["status"] == "done"]
    assert 2 <= len(done_before) < 6  # killed mid-way
    assert seen[0] == 0.0 and any(0 < v < 100 for v in seen) and seen == sorted(seen)  # the progress artifact moved

    result = backfill(integration=key, since=utc(2026, 3, 1), until=utc(2026, 3, 6), chunk="1d")
    statuses = [c["status"] for c in result["chunks"]]
    assert statuses[: len(done_before)] == ["resumed"] * len(done_before)
    assert statuses[len(done_before):] == ["done"] * (6 - len(done_before))
    assert delivered(workspace, client) == sorted(ids)
    assert confirmations(workspace, key) == {i: 1 for i in ids}  # the chunk in flight at the kill: not sent twice
    assert {r["status"] for r in workspace.ledger().rows(key)} == {DELIVERED}


def test_client_wide_backfill_covers_its_enabled_integrations_and_the_types_filter(workspace):
    client = f"w{workspace.tag}"
    inv = workspace.integration("invoices", client=client, filters={"document_types": ["invoice"]},
                                mapping={"folder": "inv/{doc_type}", "filename": "{doc_id}.{ext}"})
    cn = workspace.integration("credit-notes", client=client, filters={"document_types": ["credit_note", "invoice"]},
                               mapping={"folder": "cn/{doc_type}", "filename": "{doc_id}.{ext}"})
    alt = workspace.integration("alternate", client=client, enabled=False, mapping={"folder": "alt/{doc_type}", "filename": "{doc_id}.{ext}"})
    invoices = seed_days(workspace, client, [1, 2], per_day=1, prefix="I")
    credits = seed_days(workspace, client, [1, 2], per_day=1, doc_type="credit_note", prefix="C")

    def files(folder):
        return sorted(p.stem for p in (workspace.out / folder).rglob("*.pdf"))

    # only credit notes, every enabled integration of the client, through the CLI
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "backfill", client, "--since", "2026-03-01", "--until", "2026-03-02", "--type", "credit_note", "--chunk", "1d"],
        env=workspace.env(), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{cn} 2026-03-01T00:00:00+00:00 .. 2026-03-01T23:59:59.999999+00:00: done: 1 delivered" in out.stdout
    assert f"{inv} 2026-03-01T00:00:00+00:00 .. 2026-03-01T23:59:59.999999+00:00: done: nothing new" in out.stdout
    assert alt not in out.stdout  # the alternate export runs only when named
    assert files("cn") == sorted(credits) and files("inv") == [] and files("alt") == []
    assert workspace.ledger().cursor(cn) is None and workspace.ledger().cursor(inv) is None

    result = backfill(integration=client, since=utc(2026, 3, 1), until=utc(2026, 3, 2), chunk="1d")
    assert {c["integration"] for c in result["chunks"]} == {inv, cn}
    assert files("inv") == sorted(invoices) and files("cn") == sorted(credits + invoices) and files("alt") == []

    # the alternate export, named: runs on demand; a dry run delivers nothing
    dry = backfill(integration=alt, since=utc(2026, 3, 1), until=utc(2026, 3, 2), chunk="1d", dry_run=True)
    assert [c["summary"] for c in dry["chunks"]] == ["2 would-deliver"] * 2 and files("alt") == []
    backfill(integration=alt, since=utc(2026, 3, 2), until=utc(2026, 3, 2), chunk="1d")
    assert files("alt") == sorted(["I02-0", "C02-0"])


def test_unknown_target_and_bad_chunk_fail_before_any_document_is_touched(workspace):
    from deployments.config import ConfigError

    client = f"u{workspace.tag}"
    workspace.integration(client=client)
    seed_days(workspace, client, [1])
    with pytest.raises(ConfigError, match=rf"no integration '{client}/nope'; known: .*{client}/invoices"):
        backfill(integration=f"{client}/nope", since=utc(2026, 3, 1), chunk="1d")
    with pytest.raises(ConfigError, match="client 'no-such-client' has no enabled integrations"):
        backfill(integration="no-such-client", since=utc(2026, 3, 1), chunk="1d")
    with pytest.raises(ValueError, match="chunk '10s' is too small"):
        backfill(integration=client, since=utc(2026, 3, 1), chunk="10s")
    assert delivered(workspace, client) == []


def test_prefect_deployment_run_with_params_runs_the_backfill_deployment_and_a_ui_retry_resumes_it(workspace):
    """The README's command, against a real server and a served runner of the backfill deployment;
    then the UI's Retry on the failed backfill run resumes it: only the failed chunk runs again."""
    import re

    from deployments.config import load_config
    from deployments.deploy import apply_deployments
    from tests.test_rerun import _retry_from_the_ui, served, wait_final

    client = f"p{workspace.tag}"
    key = workspace.integration(client=client)
    ids = seed_days(workspace, client, [1, 2, 3])
    write_document(workspace.inbox, "BAD-2", client=client, approved_at=utc(2026, 3, 2, 12), pdf=b"")
    names = apply_deployments(load_config(only=key))
    assert "docroute-backfill/backfill" in names
    dep = asyncio.run(_deployment("docroute-backfill/backfill"))
    assert dep.schedules == [] and dep.parameter_openapi_schema["required"] == ["integration"]  # on demand only
    with served(workspace, key, "backfill") as proc:
        out = subprocess.run(
            ["prefect", "deployment", "run", "docroute-backfill/backfill", "--param", f"integration={key}",
             "--param", "since=2026-03-01", "--param", "until=2026-03-02", "--param", "chunk=1d"],
            env=workspace.env(), cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout).group(1)
        run = wait_final(run_id, proc)
        assert run.state.type.value == "FAILED" and "BAD-2" in run.state.message and "1 of 2 chunks not done" in run.state.message
        assert run.name == f"backfill {key} 2026-03-01..2026-03-02"
        # until a date: that whole day; the chunk of the 1st was done, the 2nd's good documents too
        assert delivered(workspace, client) == sorted(i for i in ids if not i.startswith("D03"))
        write_document(workspace.inbox, "BAD-2", client=client, approved_at=utc(2026, 3, 2, 12))  # fixed
        assert asyncio.run(_retry_from_the_ui(run_id)) == "ACCEPT"
        again = wait_final(run_id, proc, after_run_count=1)
    assert again.state.type.value == "COMPLETED", again.state.message
    assert delivered(workspace, client) == sorted([i for i in ids if not i.startswith("D03")] + ["BAD-2"])
    assert confirmations(workspace, key) == {i: 1 for i in ids if not i.startswith("D03")} | {"BAD-2": 1}
    tables = sorted(artifacts(run.id, f"backfill-{client}-invoices"), key=lambda a: a.created)
    assert [[r["status"] for r in table(t)] for t in tables] == [["done", "failed"], ["resumed", "done"]]


async def _deployment(name):
    async with get_client() as client:
        return await client.read_deployment_by_name(name)


def test_each_chunk_reads_only_its_own_documents_metadata_after_the_first(workspace):
    client = f"r{workspace.tag}"
    key = workspace.integration(client=client)
    days = list(range(1, 11))
    ids = seed_days(workspace, client, days)
    inbox = str(workspace.inbox)
    with opened_files() as opened:
        state = backfill(integration=key, since=utc(2026, 3, 1), until=utc(2026, 3, 10), chunk="1d", return_state=True)
        reads = [p for p in opened if p.startswith(inbox) and p.endswith(".json")]
    assert state.is_completed(), state.message
    assert delivered(workspace, client) == sorted(ids)
    # the first chunk reads every metadata file; the nine others only their own day's two (without
    # the index: every file in every chunk, 10 x 20)
    assert len(reads) == len(ids) + 9 * 2, sorted(reads)
