"""The sync flow on a real Prefect server: the five guarantees, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from prefect.client.orchestration import get_client

from flows.sync import SyncFailed, sync
from tasks.ledger import DELIVERED, FAILED, NEEDS_ATTENTION
from tasks.sources.seed import invoice_metadata, write_document
from tests.conftest import utc

NOW = lambda: datetime.now(timezone.utc)  # noqa: E731


def seed(ws, n, client="acme", prefix="INV", approved=None, **kw):
    import random

    rng = random.Random(n)
    ids = []
    for i in range(n):
        doc_id = f"{prefix}-{i:04d}"
        when = approved or NOW() - timedelta(hours=1)
        write_document(ws.inbox, doc_id, client=client, approved_at=when, metadata=invoice_metadata(rng, doc_id, when), **kw)
        ids.append(doc_id)
    return ids


def delivered_files(ws, client="acme", doc_type="invoice"):
    folder = ws.out / client / doc_type
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_delivers_new_approved_documents_and_records_them(workspace):
    key = workspace.integration()
    ids = seed(workspace, 5)
    result = sync(integration=key)
    assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered") == ids
    assert delivered_files(workspace) == [f"{i}.pdf" for i in ids]
    for i in ids:
        assert (workspace.out / "acme/invoice" / f"{i}.pdf").read_bytes() == (workspace.inbox / f"{i}.pdf").read_bytes()
    rows = workspace.ledger().rows(key)
    assert {r["doc_id"]: r["status"] for r in rows} == {i: DELIVERED for i in ids}
    assert all(r["remote_ref"].endswith(f"{r['doc_id']}.pdf") for r in rows)
    # a second run finds nothing new and delivers nothing again
    again = sync(integration=key)
    assert again["outcomes"] == []
