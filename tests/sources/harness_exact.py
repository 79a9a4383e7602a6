"""Source conformance harness for Exact Online as a source: the local Exact (tests/fakes/exact_api.py).

Two clients, two divisions (the block's `divisions`; the flow tests take the division from the
client's identifiers). Each block is a fresh authorisation (an access and a rotating refresh
token, as after `docroute connect`). A document is approved when processed (ProposedEntryStatus
50), at its Modified time; its files are its attachments; the suite's ids are the documents' IDs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr

from blocks.exact_online import ExactOnlineSource
from tasks.sources.seed import pdf_bytes
from tests.fakes.cloud_common import shared
from tests.fakes.exact_api import ExactAPI
from tests.sources.conformance import SourceHarness

DIVISIONS = {"acme": 1001, "globex": 1002}
TYPES = {"invoice": 20, "sales_invoice": 10, "credit_note": 21}


def exact_fake() -> ExactAPI:
    """The process's fake Exact Online (started on first use)."""
    return shared("exact", lambda: ExactAPI(minutely=100_000, daily=10_000_000))  # the suite is no rate-limit test


def exact_block(fake: ExactAPI, **overrides) -> ExactOnlineSource:
    tokens = fake.issue()
    fields = dict(client_id=fake.client_id, client_secret=fake.client_secret, base_url=fake.base_url, ca_bundle=fake.ca_bundle,
                  access_token=SecretStr(tokens["access_token"]), refresh_token=SecretStr(tokens["refresh_token"]),
                  expires_at=datetime.now(timezone.utc) + timedelta(seconds=float(tokens["expires_in"])),
                  divisions=dict(DIVISIONS), type_map={21: "credit_note"}, request_timeout=10)
    fields.update(overrides)
    return ExactOnlineSource(**fields)


class ExactHarness(SourceHarness):
    def __init__(self, fake: ExactAPI):
        self.fake = fake
        self.secrets = (fake.client_secret,)
        self.where: dict[str, int] = {}

    def block(self, **overrides) -> ExactOnlineSource:
        return exact_block(self.fake, **overrides)

    def broken_block(self) -> ExactOnlineSource:
        return exact_block(self.fake, client_secret=SecretStr("wrong-secret"), access_token=None, expires_at=None)

    def put(self, doc_id, *, client="acme", doc_type="invoice", status="approved", approved_at=None, fields=None, pdf=None, xml=None):
        files = {f"{doc_id}.pdf": pdf if pdf is not None else pdf_bytes(f"{doc_type} {doc_id}", 20_000)}
        if xml is not None:
            files[f"{doc_id}.xml"] = xml
        fields = fields or {}
        division = DIVISIONS[client]
        self.where[doc_id] = division
        self.fake.put_document(division, id=doc_id, type=TYPES[doc_type], subject=fields.get("number", ""),
                               account_name=fields.get("supplier"), amount=float(fields["total"]) if "total" in fields else None,
                               status=50 if status == "approved" else 20, modified=approved_at, attachments=list(files.items()))
        return files

    def put_unreadable(self, doc_id, client="acme", approved_at=None):
        self.where[doc_id] = DIVISIONS[client]
        self.fake.put_document(DIVISIONS[client], id=doc_id, subject=doc_id, modified=approved_at, attachments=[])  # no attachment

    def delete(self, doc_id):
        self.fake.delete_document(self.where.get(doc_id, DIVISIONS["acme"]), doc_id)

    def exported(self, doc_id):
        return False  # Exact keeps no "exported" state: nothing is written to it


@pytest.fixture
def exact_harness():
    fake = exact_fake()
    fake.clear_faults()
    with fake.lock:
        for div in fake.divisions.values():  # the suite's ids are fixed: each test starts from empty divisions
            div.documents.clear()
            div.attachments.clear()
            div.deleted.clear()
    return ExactHarness(fake)
