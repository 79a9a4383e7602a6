"""SIGKILL at a random point of a 500-document sync, for several seeds and three destinations,
then a clean run, then reconcile: every document exactly once at a local folder or SFTP server
(deterministic names), each webhook-id exactly once after the receiver's dedup (raw duplicates
counted and reported), no partial file under a final name even right after the kill."""

from __future__ import annotations

import random
import signal
import time

import pytest

from blocks.sftp import SftpConnection
from blocks.webhook import WebhookConnection
from flows.sync import SEND_CHUNK, sync
from tests.connectors.harness_webhook import Receiver, new_secret
from tests.faults.helpers import (
    assert_exactly_once_in_folder,
    assert_reconciles,
    assert_webhook_exactly_once,
    assert_webhook_reconciles,
    seed_docs,
)
from tests.test_sync_flow import start_sync_process

DOCS = 500
SEEDS = [11, 23, 37]


def _kill_after(proc, progress, seed: int) -> int:
    """SIGKILL the sync once `progress()` reaches a seeded random count (plus a seeded jitter)."""
    rng = random.Random(seed)
    target, jitter = rng.randint(1, DOCS - 60), rng.uniform(0, 0.03)
    deadline = time.monotonic() + 240
    while progress() < target:
        assert proc.poll() is None, f"the sync ended before the kill point {target}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    time.sleep(jitter)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL  # really killed mid-run, not finished
    return target


def _whole_or_absent(ws, folder) -> int:
    """Right after the kill: every file under a final name is byte-identical to its source."""
    finals = [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []
    for p in finals:
        assert p.read_bytes() == (ws.inbox / p.name).read_bytes(), f"{p.name} is partial under its final name"
    return len(finals)


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_local_folder(workspace, seed, record_property):
    key = workspace.integration()
    ids = seed_docs(workspace, DOCS)
    folder = workspace.out / "acme" / "invoice"
    proc = start_sync_process(workspace, key)
    target = _kill_after(proc, lambda: len(list(folder.glob("*.pdf"))) if folder.exists() else 0, seed)
    at_kill = _whole_or_absent(workspace, folder)
    assert target <= at_kill < DOCS
    result = sync(integration=key)
    present = sum(1 for o in result["outcomes"] if o["status"] == "already-present")
    assert present <= SEND_CHUNK  # only the chunk in flight: found by lookup, not written again
    record_property("killed_after", at_kill)
    assert_exactly_once_in_folder(workspace, key, folder, ids)
    assert_reconciles(key, n_files=DOCS)


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_sftp(workspace, sftp_server, sftp_dest, seed, record_property):
    name = f"sftp-{workspace.tag}"
    SftpConnection(
        host="127.0.0.1", port=sftp_server.port, username=sftp_server.user, password=sftp_server.password,
        host_key=sftp_server.known_hosts_line, base_folder=str(sftp_dest), connect_timeout=5, timeout=5,
    ).save(name)
    key = workspace.integration(connection=f"sftp-connection/{name}")
    ids = seed_docs(workspace, DOCS)
    folder = sftp_dest / "acme" / "invoice"
    proc = start_sync_process(workspace, key)
    target = _kill_after(proc, lambda: len(list(folder.glob("*.pdf"))) if folder.exists() else 0, seed)
    at_kill = _whole_or_absent(workspace, folder)
    assert target <= at_kill < DOCS
    record_property("killed_after", at_kill)
    sync(integration=key)
    assert_exactly_once_in_folder(workspace, key, folder, ids)
    assert_reconciles(key, n_files=DOCS)


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_webhook(workspace, seed, record_property):
    secret = new_secret()
    receiver = Receiver([secret])
    try:
        name = f"hook-{workspace.tag}"
        WebhookConnection(url=receiver.url, signing_secrets=[secret], timeout=5).save(name)
        key = workspace.integration(connection=f"webhook-connection/{name}")
        ids = seed_docs(workspace, DOCS)
        proc = start_sync_process(workspace, key)
        _kill_after(proc, lambda: len(receiver.deliveries), seed)
        sync(integration=key)
        duplicates = assert_webhook_exactly_once(workspace, key, receiver, ids)
        # at-least-once: what the killed run had sent but not yet recorded is sent again, and deduped
        assert duplicates <= SEND_CHUNK
        record_property("raw_duplicates", duplicates)
        print(f"seed {seed}: {len(receiver.attempts)} requests for {DOCS} documents, {duplicates} raw duplicates deduped by webhook-id")
        assert_webhook_reconciles(workspace, key, receiver)
    finally:
        receiver.stop()
