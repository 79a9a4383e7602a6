"""The sync flow against a real webhook receiver: retries with backoff, permanent errors, secrets."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from blocks.webhook import WebhookConnection
from flows.sync import SyncFailed, sync
from tasks.ledger import DELIVERED, FAILED
from tasks.sources.seed import write_document
from tests.connectors.harness_webhook import Receiver, Scripted, new_secret
from tests.test_secrets import _everything_the_server_shows


@pytest.fixture
def hook(workspace):
    secret, token = new_secret(), f"tok-{workspace.tag}-value"
    receiver = Receiver([secret], bearer=token)
    name = f"hook-{workspace.tag}"
    WebhookConnection(url=receiver.url, signing_secrets=[secret], auth="bearer", bearer_token=token, timeout=5).save(name)
    yield receiver, f"webhook-connection/{name}", (secret, token)
    receiver.stop()


def _doc(ws, doc_id):
    write_document(ws.inbox, doc_id, client="acme", approved_at=datetime.now(timezone.utc) - timedelta(hours=1), metadata={"number": doc_id})


def test_transient_errors_are_retried_with_backoff_and_permanent_ones_are_not(workspace, hook):
    receiver, ref, _ = hook
    key = workspace.integration(connection=ref, retries=3, retry_delay=0.05)
    _doc(workspace, "HOOK-A")
    receiver.script(Scripted(503), Scripted(429, headers={"Retry-After": "0"}))
    result = sync(integration=key)
    assert [o["status"] for o in result["outcomes"]] == ["delivered"]
    assert len(receiver.attempts) == 3  # two refusals, then the delivery, all within the run
    ids = {a.headers["webhook-id"] for a in receiver.attempts}
    assert len(ids) == 1  # the same webhook-id on every retry: the receiver's dedup key

    _doc(workspace, "HOOK-B")
    receiver.script(Scripted(404, body=b"no such route"))
    before = len(receiver.attempts)
    with pytest.raises(SyncFailed, match="HOOK-B.*404"):
        sync(integration=key)
    assert len(receiver.attempts) - before == 1  # permanent: not retried within the run
    rows = {r["doc_id"]: r for r in workspace.ledger().rows(key)}
    assert rows["HOOK-A"]["status"] == DELIVERED and rows["HOOK-B"]["status"] == FAILED
    assert rows["HOOK-B"]["attempts"] == 1

    receiver.script(Scripted(500), Scripted(500), Scripted(500), Scripted(500))  # more than `retries`
    with pytest.raises(SyncFailed, match="HOOK-B"):
        sync(integration=key)
    assert workspace.ledger().rows(key, doc_ids=["HOOK-B"])[0]["status"] == FAILED
    assert sync(integration=key)["outcomes"][0]["status"] == "delivered"  # the next run delivers it
    assert sorted(r.document["id"] for r in receiver.deliveries.values()) == ["HOOK-A", "HOOK-B"]


def test_webhook_secrets_never_leak_into_logs_artifacts_or_ledger(workspace, hook):
    receiver, ref, secrets = hook
    key = workspace.integration(name=f"hooksecret-{workspace.tag}", connection=ref, retries=1, retry_delay=0.01)
    _doc(workspace, "HS-1")
    _doc(workspace, "HS-2")
    receiver.script(Scripted(None), Scripted(401, body=b"bad token"))
    with pytest.raises(SyncFailed) as info:
        sync(integration=key)
    shown, revealed = asyncio.run(_everything_the_server_shows(f"hooksecret-{workspace.tag}"))
    dump = json.dumps([list(map(str, e.values())) for e in workspace.ledger().events_of(key)] + [list(map(str, r.values())) for r in workspace.ledger().rows(key)])
    assert "HS-2" in shown and "HS-2" in dump
    for secret in secrets:
        assert secret in revealed  # the block really holds it
        for text in (shown, dump, str(info.value)):
            assert secret not in text and secret.removeprefix("whsec_") not in text
