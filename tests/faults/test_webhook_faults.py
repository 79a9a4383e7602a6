"""The sync flow against the signature-checking webhook receiver: connections broken by a fault
proxy, and a receiver answering 500, 429 with Retry-After, 410, or slowly. Each scenario ends with
every document accepted exactly once after the receiver's dedup on webhook-id (raw duplicates
counted: a webhook is at-least-once), recorded once, and the ledger matching what the receiver saw."""

from __future__ import annotations

import time

import pytest

from blocks.webhook import WebhookConnection
from flows.sync import SyncFailed, sync
from tasks.ledger import DELIVERED, NEEDS_ATTENTION
from tests.connectors.harness_webhook import Receiver, Scripted, new_secret
from tests.faults.helpers import assert_webhook_exactly_once, assert_webhook_reconciles, seed_docs
from tests.faults.proxy import Fault


@pytest.fixture
def receiver():
    secret = new_secret()
    r = Receiver([secret])
    r.secret = secret
    yield r
    r.stop()


def _integration(ws, receiver, url=None, timeout=1.0, **kw):
    name = f"hook-{ws.tag}"
    WebhookConnection(url=url or receiver.url, signing_secrets=[receiver.secret], timeout=timeout).save(name)
    return ws.integration(connection=f"webhook-connection/{name}", retries=3, retry_delay=0.05, **kw)


@pytest.mark.parametrize(
    "fault, duplicates_possible",
    [
        (Fault("drop", after=9_000), False),  # mid-body: the receiver never gets a whole request
        (Fault("reset", after=9_000), False),
        (Fault("drop", after=500, direction="down"), True),  # answers lost: the receiver had accepted
        (Fault("stall", after=9_000, seconds=2.5), True),  # longer than the 1 s timeout; then forwarded
    ],
    ids=["drop-body", "reset-body", "drop-answer", "stall"],
)
def test_webhook_connection_broken_is_retried_and_deduped(workspace, receiver, proxies, fault, duplicates_possible, record_property):
    proxy = proxies(receiver.httpd.server_address[1])
    key = _integration(workspace, receiver, url=f"http://127.0.0.1:{proxy.port}/hooks/docroute")
    ids = seed_docs(workspace, 10)  # ~1.4 kB of JSON per document: the fault lands in the 6th-7th request
    proxy.plan(fault)
    result = sync(integration=key)
    assert proxy.fired == 1 and len(proxy.connections) >= 2
    assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered") == ids
    duplicates = assert_webhook_exactly_once(workspace, key, receiver, ids)
    record_property("raw_duplicates", duplicates)
    print(f"{fault}: {len(receiver.attempts)} requests, {duplicates} raw duplicates deduped by webhook-id")
    assert duplicates <= 1 if duplicates_possible else duplicates == 0
    assert_webhook_reconciles(workspace, key, receiver)


def test_500_then_ok_and_429_with_retry_after(workspace, receiver):
    key = _integration(workspace, receiver)
    ids = seed_docs(workspace, 3)
    receiver.script(Scripted(500, body=b"boom"), Scripted(429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    result = sync(integration=key)
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 honoured (the backoff alone is 0.05 s + 0.1 s)
    assert [o["status"] for o in result["outcomes"]] == ["delivered"] * 3
    assert len(receiver.attempts) == 5  # 500, 429, then the first delivery; then the other two
    assert len({a.headers["webhook-id"] for a in receiver.attempts[:3]}) == 1  # one id on every retry
    assert assert_webhook_exactly_once(workspace, key, receiver, ids) == 0
    assert_webhook_reconciles(workspace, key, receiver)


def test_410_gone_is_parked_not_retried_forever(workspace, receiver):
    key = _integration(workspace, receiver, max_attempts=2)
    ids = seed_docs(workspace, 3)
    receiver.script(Scripted(410, body=b"this hook was removed"))
    with pytest.raises(SyncFailed, match=r"F-0000: .*410.*endpoint gone"):
        sync(integration=key)
    assert len(receiver.attempts) == 3  # the 410 is not retried within the run; the others went through
    receiver.script(Scripted(410))
    with pytest.raises(SyncFailed, match="F-0000"):
        sync(integration=key)
    statuses = {r["doc_id"]: r["status"] for r in workspace.ledger().rows(key)}
    assert statuses == {"F-0000": NEEDS_ATTENTION, "F-0001": DELIVERED, "F-0002": DELIVERED}
    before = len(receiver.attempts)
    assert sync(integration=key)["outcomes"] == []  # parked: not sent again by scheduled runs
    assert len(receiver.attempts) == before == 4
    assert assert_webhook_exactly_once(workspace, key, receiver, ids[1:]) == 0
    assert_webhook_reconciles(workspace, key, receiver)


def test_slow_answers_within_and_beyond_the_client_timeout(workspace, receiver, record_property):
    key = _integration(workspace, receiver, timeout=1.0)
    ids = seed_docs(workspace, 3)
    # slow but in time: one request; too slow: the client gives up and retries, the receiver dedups
    receiver.script(Scripted(None, delay=0.4), Scripted(None, delay=2.0))
    result = sync(integration=key)
    assert [o["status"] for o in result["outcomes"]] == ["delivered"] * 3
    time.sleep(1.2)  # let the abandoned slow request finish on the receiver
    duplicates = assert_webhook_exactly_once(workspace, key, receiver, ids)
    record_property("raw_duplicates", duplicates)
    assert len(receiver.attempts) == 4 and duplicates == 1  # the timed-out request arrived too
    assert_webhook_reconciles(workspace, key, receiver)
