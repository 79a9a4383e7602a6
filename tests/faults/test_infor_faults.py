"""Faults at the Infor ION API gateway, through the sync flow: a 504 during an upload that in fact succeeded,
connections cut before and after the gateway did the work, a BOD published then answered 504, and a sync
process killed with SIGKILL mid-run. Afterwards: exactly one IDM item and one BOD per document version,
each recorded delivered exactly once."""

from __future__ import annotations

import random
import signal
import time

import pytest

from blocks.infor import InforIdmConnection, InforIdmIonConnection
from flows.sync import SEND_CHUNK, sync
from tasks.ledger import DELIVERED
from tests.conftest import confirmations
from tests.fakes.base import Fault
from tests.fakes.infor_gateway import InforGateway
from tests.test_infor import IDM_MAPPING
from tests.test_infor_sync import save_blocks, write_mappings
from tests.test_sync_flow import seed as seed_invoices
from tests.test_sync_flow import start_sync_process

UPLOAD = "POST .*/IDM/api/items$"
BOD = "POST .*/multipartMessage$"


@pytest.fixture
def gateway():
    gw = InforGateway("ACME_TST").start()
    yield gw
    gw.stop()


def integration(ws, gw, cls=InforIdmIonConnection, **overrides) -> str:
    ref = save_blocks(ws, gw, cls, **({"accounting_entity": "infor.ln.100"} if cls is InforIdmIonConnection else {}))
    options = write_mappings(ws)
    if cls is InforIdmConnection:
        options.pop("bod_mapping")
    spec = {"connection": ref, "connection_options": options, "identifiers": {"company": "100"}, "retry_delay": 0.05,
            **overrides}
    return ws.integration("to-infor", **spec)


def assert_exactly_once(ws, gw, key: str, ids: list[str], bods: bool = True) -> None:
    """One item per document (by its correlation id), one BOD per document carrying that item's PID, each
    document recorded delivered once."""
    correlation = IDM_MAPPING.get("correlation_attribute", "BOD_AlternateDocumentID_1")
    by_doc = {}
    for item in gw.items:
        by_doc.setdefault(item.attrs["SupplierInvoiceNumber"], []).append(item)
    assert sorted(by_doc) == sorted(ids)
    assert {d: len(items) for d, items in by_doc.items()} == {d: 1 for d in ids}, "an IDM item was stored twice"
    for doc_id in ids:
        (item,) = by_doc[doc_id]
        assert item.resources[f"INV_{doc_id}.pdf"] == (ws.inbox / f"{doc_id}.pdf").read_bytes()
        if bods:
            bod = gw.bods[item.attrs[correlation]]
            assert bod.fields()["IDMItemPID"] == item.pid and bod.fields()["InvoiceNumber"] == doc_id
    if bods:
        assert len(gw.bods) == len(ids)
    assert confirmations(ws, key) == {i: 1 for i in ids}
    assert {r["doc_id"]: r["status"] for r in ws.ledger().rows(key)} == {i: DELIVERED for i in ids}


def test_a_504_after_a_successful_upload_and_cut_connections_leave_one_item_and_one_bod_each(workspace, gateway):
    key = integration(workspace, gateway)
    ids = seed_invoices(workspace, 6)
    gateway.fault(
        Fault(kind="after", status=504, match=UPLOAD),  # stored, then the gateway's timeout
        Fault(kind="cut-after", match=UPLOAD),  # stored, then the connection dropped
        Fault(kind="cut", match=UPLOAD),  # dropped before it reached IDM: really not stored
        Fault(kind="cut", match=BOD),  # the BOD never arrived
        Fault(kind="after", status=504, match=BOD),  # the BOD published, then a 504
        Fault(status=503, match=BOD),
        Fault(kind="after", status=502, match=UPLOAD),
    )
    result = sync(integration=key, return_state=True)
    if not result.is_completed():  # a transient failure left for the next run is allowed; a duplicate is not
        sync(integration=key)
    assert gateway.faults == []  # every fault was met
    assert_exactly_once(workspace, gateway, key, ids)
    assert gateway.upload_requests() == len(ids) + 1  # only the upload cut before IDM saw it went again
    assert sum(gateway.repeats.values()) == 1  # the BOD answered 504 after publishing: sent again, kept once


def _kill_when(proc, progress, target: int) -> None:
    deadline = time.monotonic() + 240
    while progress() < target:
        assert proc.poll() is None, f"the sync ended before the kill point {target}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kind,seed", [("idm+ion", 11), ("idm+ion", 23), ("idm", 37)])
def test_sigkill_mid_run_then_a_clean_run_leaves_one_item_and_one_bod_per_document(workspace, gateway, kind, seed):
    docs = 90
    cls = InforIdmIonConnection if kind == "idm+ion" else InforIdmConnection
    key = integration(workspace, gateway, cls, throttle_per_second=30)
    ids = seed_invoices(workspace, docs)
    target = random.Random(seed).randint(5, docs - 20)  # items stored when the process is killed
    proc = start_sync_process(workspace, key)
    _kill_when(proc, lambda: len(gateway.items), target)
    at_kill = len(gateway.items)
    assert target <= at_kill < docs
    result = sync(integration=key)
    assert_exactly_once(workspace, gateway, key, ids, bods=kind == "idm+ion")
    present = sum(1 for o in result["outcomes"] if o["status"] == "already-present")
    assert present <= SEND_CHUNK  # only what the killed run had in flight was found by lookup
    assert sum(gateway.repeats.values()) <= SEND_CHUNK  # BODs the killed run had sent but not recorded: kept once
    print(f"{kind} seed {seed}: killed after {at_kill} items; {gateway.upload_requests()} uploads, "
          f"{gateway.bod_requests()} BOD requests, {sum(gateway.repeats.values())} repeated message ids")
