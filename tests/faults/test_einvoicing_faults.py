"""Faults at the accounting and e-invoicing destinations, through the sync flow: a sync process killed with
SIGKILL between uploads and their record, then finished by the next run; a rejected document; two
processes needing a token refresh at once (refresh tokens that rotate, reuse revoking the
authorisation); a 429 storm. Afterwards: one document per version at each destination, none lost,
every rejection in the ledger and in docroute status with its reason."""

from __future__ import annotations

import signal
import time

import pytest

from flows.confirm import confirm_deliveries
from flows.status import collect_status
from flows.sync import SyncFailed, sync
from tests.einvoicing_helpers import (
    access_point_integration,
    client_with_identifiers,
    save_access_point,
    save_debitoor,
    save_exact,
    seed_invoices,
)
from tests.fakes.access_point import AccessPointAPI
from tests.fakes.base import Fault
from tests.fakes.debitoor_api import DebitoorAPI
from tests.fakes.exact_upload_api import ExactAPI
from tests.test_sync_flow import start_sync_process


class Destination:
    """One of the three destinations, started for a test: its block, its integration, what it holds per document."""

    def __init__(self, kind: str, ws, token_delay: float = 0.0, name: str = "dest", block: str | None = None, **fields):
        self.kind, self.ws = kind, ws
        client_with_identifiers(ws)
        if kind == "access-point":
            self.fake = AccessPointAPI(processing_seconds=0.3, token_delay=token_delay).start()
            self.ref = block or save_access_point(ws, self.fake, **fields)
            self.key, _ = access_point_integration(ws, self.fake, name=name, block=self.ref, throttle_per_second=20)
        elif kind == "exact":
            self.fake = ExactAPI(minutely=10_000, daily=100_000, token_delay=token_delay).start()
            self.ref = block or save_exact(ws, self.fake, **fields)
            self.key = ws.integration(name=name, connection=self.ref, throttle_per_second=20)
        else:
            self.fake = DebitoorAPI().start()
            self.ref = block or save_debitoor(ws, self.fake, **fields)
            self.key = ws.integration(name=name, connection=self.ref, throttle_per_second=20)

    def stop(self) -> None:
        self.fake.stop()

    def held(self) -> dict[str, int]:
        """document id -> how many documents (files, Exact documents, expenses) the destination holds for it."""
        out: dict[str, int] = {}
        if self.kind == "access-point":
            for up in self.fake.uploads():
                out[up.number] = out.get(up.number, 0) + 1
        elif self.kind == "exact":
            for d in list(self.fake.documents.values()):
                doc_id = d.Subject.split()[1]
                out[doc_id] = out.get(doc_id, 0) + 1
        else:
            for e in list(self.fake.expenses.values()):
                doc_id = e["lines"][0]["description"].split()[-3]
                out[doc_id] = out.get(doc_id, 0) + 1
        return out

    def complete(self, doc_id: str) -> bool:
        """The document's one copy holds its PDF, byte for byte."""
        pdf = (self.ws.inbox / f"{doc_id}.pdf").read_bytes()
        if self.kind == "access-point":
            from tests.connectors.harness_access_point import embedded_pdf

            [up] = self.fake.by_number(doc_id)
            return embedded_pdf(up.payload) == pdf
        if self.kind == "exact":
            [d] = [d for d in self.fake.documents.values() if d.Subject.split()[1] == doc_id]
            return self.fake.files_of(d.ID) == {f"{doc_id}.pdf": [pdf]}
        [e] = [e for e in self.fake.expenses.values() if e["lines"][0]["description"].split()[-3] == doc_id]
        return self.fake.files[e["fileId"]][2] == pdf

    def settle(self) -> None:
        """What the destination decides later is decided (the access point processes, docroute confirms)."""
        if self.kind == "access-point":
            time.sleep(self.fake.processing_seconds + 0.3)
            try:
                confirm_deliveries(integration=self.key)
            except SyncFailed:
                pass  # a rejection: the test looks at it


def assert_once_each(dest: Destination, ids: list[str], rejected: dict[str, str] | None = None) -> None:
    rejected = rejected or {}
    assert dest.held() == {i: 1 for i in ids}, "a document missing or twice at the destination"
    for doc_id in ids:
        assert dest.complete(doc_id), doc_id
    rows = {r["doc_id"]: r for r in dest.ws.ledger().rows(dest.key)}
    assert {i: rows[i]["status"] for i in ids} == {i: "failed" if i in rejected else "delivered" for i in ids}
    for doc_id, reason in rejected.items():
        assert reason in rows[doc_id]["last_error"]


KINDS = ["access-point", "exact", "debitoor"]


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_between_submit_and_record_then_the_next_run_leaves_one_document_each(workspace, kind):
    dest = Destination(kind, workspace)
    try:
        ids = seed_invoices(workspace, 40, prefix="K")
        rejected = {}
        if kind == "access-point":
            dest.fake.outcomes[ids[1]] = ["error: buyer endpoint 9925:BE0123456789 unknown"]
            rejected = {ids[1]: "buyer endpoint 9925:BE0123456789 unknown"}
        proc = start_sync_process(workspace, dest.key)
        deadline = time.monotonic() + 180
        while sum(dest.held().values()) < 8:
            assert proc.poll() is None, f"the sync ended before the kill point: {proc.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        at_kill = sum(dest.held().values())
        recorded = {r["doc_id"] for r in workspace.ledger().rows(dest.key) if r["status"] in ("submitted", "delivered")}
        assert at_kill > len(recorded)  # killed between uploads and their record: the chunk in flight is unrecorded
        try:
            sync(integration=dest.key)
        except SyncFailed:
            assert rejected  # only the access point's rejection fails a run here
        dest.settle()
        assert_once_each(dest, ids, rejected)
        if rejected:
            [row] = [r for r in collect_status(client="acme") if r["integration"] == dest.key]
            assert row["failed"] == 1 and "buyer endpoint 9925:BE0123456789 unknown" in row["last error"]
    finally:
        dest.stop()


@pytest.mark.parametrize("kind", ["access-point", "exact"])
def test_two_processes_needing_a_token_refresh_at_once_refresh_once(workspace, kind):
    first = Destination(kind, workspace, token_delay=1.0, name="first")  # a slow token endpoint: the two would overlap
    try:
        second_key = workspace.integration(name="second", connection=first.ref, throttle_per_second=20,
                                           mapping={**workspace.clients["acme"]["integrations"][0]["mapping"], "folder": "second"})
        ids = seed_invoices(workspace, 6, prefix="T")
        procs = [start_sync_process(workspace, key) for key in (first.key, second_key)]
        outputs = [p.communicate(timeout=240)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert first.fake.grants["refresh_token"] == 1, outputs  # one refresh; the other process adopted its token
        assert first.fake.errors == []  # never an invalid_grant: a rotated refresh token was never reused
        fam = next(f for f in first.fake.families if f.spent)
        assert not fam.revoked
        first.settle()
        if kind == "access-point":
            confirm_deliveries(integration=second_key)
        for key in (first.key, second_key):
            assert {r["doc_id"]: r["status"] for r in workspace.ledger().rows(key)} == {i: "delivered" for i in ids}
        assert first.held() == {i: 2 for i in ids}  # one per integration: each its own idempotency key
    finally:
        first.stop()


STORMS = {
    "access-point": r"^POST /file/v1/files$",
    "exact": r"^POST /api/v1/\d+/documents/Documents$",
    "debitoor": r"^POST /api/expenses/v4$",
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_429_storm_is_waited_out_and_every_document_arrives_once(workspace, kind):
    dest = Destination(kind, workspace)
    try:
        ids = seed_invoices(workspace, 5, prefix="S")
        dest.fake.fault(Fault(status=429, headers={"Retry-After": "1", "Content-Type": "application/json"},
                              body=b'{"error": "too many requests"}', times=6, match=STORMS[kind]))
        sync(integration=dest.key)
        assert dest.fake.faults == []  # the whole storm was met
        dest.settle()
        assert_once_each(dest, ids)
    finally:
        dest.stop()

