"""The sync flow to a real OpenSSH sshd through a fault proxy: connections dropped mid-transfer,
reset, stalled. Every scenario ends with each document delivered exactly once under its final name,
no temp file left, and a reconcile run that finds no difference."""

from __future__ import annotations

import dataclasses
import re

import pytest

from blocks.sftp import SftpConnection
from flows.reconcile import PARTIAL, ReconcileFailed, reconcile
from flows.sync import SyncFailed, sync
from tests.faults.helpers import assert_exactly_once_in_folder, assert_reconciles, seed_docs
from tests.faults.proxy import Fault

MAPPING = {"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}", "sidecar": True}
DOC_SIZE = 20_000  # bytes per PDF: a fault at 60 kB lands inside the third or fourth upload


def _integration(ws, server, root, port, pool_size=4, **kw):
    name = f"sftp-{ws.tag}"
    SftpConnection(
        host="127.0.0.1", port=port, username=server.user, password=server.password,
        host_key=server.known_hosts_line, base_folder=str(root), connect_timeout=3, timeout=1.5, pool_size=pool_size,
    ).save(name)
    return ws.integration(connection=f"sftp-connection/{name}", mapping=MAPPING, retries=3, retry_delay=0.05, **kw)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("drop", after=60_000),
        Fault("reset", after=60_000),
        Fault("stall", after=60_000, seconds=4),  # longer than the connector's 1.5 s timeout
        # the answers stop 1 kB after the login (an exchange's answers are ~2.8 kB): confirmations are lost
        Fault("drop", after=1_000, direction="down"),
    ],
    ids=["drop-upload", "reset-upload", "stall-upload", "drop-answers"],
)
def test_sftp_connection_broken_mid_transfer_is_retried_and_delivers_exactly_once(workspace, sftp_server, sftp_dest, proxies, fault):
    proxy = proxies(sftp_server.port)
    key = _integration(workspace, sftp_server, sftp_dest, proxy.port)
    ids = seed_docs(workspace, 12, pdf_size=DOC_SIZE)
    if fault.direction == "down":  # count the answers from the end of the login, whatever its size
        probe = SftpConnection.load(f"sftp-{workspace.tag}").connector()
        probe.open()
        login = proxy.connections[-1].down
        probe.close()
        proxy.connections.clear()
        fault = dataclasses.replace(fault, after=login + fault.after)
    proxy.plan(fault)
    result = sync(integration=key)  # the retry within the run reconnects through a healthy connection
    assert proxy.fired == 1 and len(proxy.connections) >= 2  # the fault really hit, then a new connection
    assert sorted(o["doc_id"] for o in result["outcomes"]) == ids
    assert_exactly_once_in_folder(workspace, key, sftp_dest / "acme" / "invoice", ids, sidecar=True)
    assert_reconciles(key, n_files=2 * len(ids))


def test_a_pipelined_exchange_broken_mid_upload_is_sent_again_as_one_exchange(workspace, sftp_server, sftp_dest, proxies, caplog):
    proxy = proxies(sftp_server.port)
    key = _integration(workspace, sftp_server, sftp_dest, proxy.port, pool_size=1)
    ids = seed_docs(workspace, 6, pdf_size=DOC_SIZE)
    proxy.plan(Fault("reset", after=60_000))  # inside the exchange's writes: no document has its final name yet
    mark = len(sftp_server.sftp_log())
    with caplog.at_level("INFO"):
        result = sync(integration=key)
    assert proxy.fired == 1 and [o["status"] for o in result["outcomes"]] == ["delivered"] * 6
    retried = re.findall(r"document (\S+): transient error, retry 1 in", caplog.text)
    assert sorted(retried) == ids and "retry 2" not in caplog.text  # all of them, once
    # the six went again in one exchange: all twelve temp files (PDF + sidecar) opened before the next write
    requests = sftp_server.sftp_log()[mark:]
    retry = requests[requests.rindex("remove name"):]  # after removing the broken exchange's temp files
    opens, writes = [m.start() for m in re.finditer(r"(?m)^open ", retry)], [m.start() for m in re.finditer(r" write ", retry)]
    assert len(opens) == 12 and max(opens) < min(writes)
    assert_exactly_once_in_folder(workspace, key, sftp_dest / "acme" / "invoice", ids, sidecar=True)


def test_sftp_faults_on_every_connection_fail_the_run_then_a_clean_run_finishes(workspace, sftp_server, sftp_dest, proxies):
    proxy = proxies(sftp_server.port)
    key = _integration(workspace, sftp_server, sftp_dest, proxy.port)
    ids = seed_docs(workspace, 8, pdf_size=DOC_SIZE)
    # the first connection breaks mid-upload, and so does every reconnect: retries run out
    proxy.plan(Fault("reset", after=45_000), *[Fault("drop", after=6_000) for _ in range(20)])
    state = sync(integration=key, return_state=True)
    assert state.is_failed() and "connection to 127.0.0.1" in state.message
    partial_names = [p.name for p in (sftp_dest / "acme" / "invoice").iterdir() if not p.name.startswith(".")]
    for name in partial_names:  # whatever has a final name is whole
        assert (sftp_dest / "acme/invoice" / name).stat().st_size > 0
    with proxy._lock:
        proxy._plan.clear()
    sync(integration=key)
    assert_exactly_once_in_folder(workspace, key, sftp_dest / "acme" / "invoice", ids, sidecar=True)
    assert_reconciles(key, n_files=2 * len(ids))


def test_sftp_connection_dropped_during_login_fails_before_any_document_then_recovers(workspace, sftp_server, sftp_dest, proxies):
    proxy = proxies(sftp_server.port)
    key = _integration(workspace, sftp_server, sftp_dest, proxy.port)
    ids = seed_docs(workspace, 3)
    proxy.plan(Fault("drop", after=300, direction="down"))  # inside the SSH handshake
    with pytest.raises(SyncFailed, match="cannot open connection"):
        sync(integration=key)
    assert workspace.ledger().rows(key) == []  # nothing touched
    sync(integration=key)
    assert_exactly_once_in_folder(workspace, key, sftp_dest / "acme" / "invoice", ids, sidecar=True)
    assert_reconciles(key, n_files=2 * len(ids))
    # what an interrupted upload leaves on the server is found by the reconcile (over the proxy)
    leftover = sftp_dest / "acme" / "invoice" / f".{ids[1]}.json.1234abcd.partial"
    leftover.write_bytes(b'{"doc_id": ')
    with pytest.raises(ReconcileFailed, match=rf"1 differences.*{PARTIAL}: {ids[1]} acme/invoice/\.{ids[1]}\.json\.1234abcd\.partial"):
        reconcile(integration=key)
