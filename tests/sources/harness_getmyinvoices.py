"""Source conformance harness for GetMyInvoices: the local accounts API v3 (tests/fakes/getmyinvoices_api.py).

The suite puts several clients' documents into one source, so the block is a shared account whose
documents carry a 'client:<id>' tag (client_tag_prefix); the flow tests use the one-client form.
Documents are named by the suite's ids (the fake takes a chosen documentUid; the source treats it
as text). Approval is the workflow's completion, at the time the suite gives."""

from __future__ import annotations

import pytest

from blocks.getmyinvoices import GetMyInvoicesSource
from tasks.sources.getmyinvoices import FIELDS, GMI_TYPES
from tasks.sources.seed import pdf_bytes
from tests.fakes.cloud_common import shared
from tests.fakes.getmyinvoices_api import GetMyInvoicesAPI
from tests.sources.conformance import SourceHarness

OURS_TO_GMI_TYPE = {ours: theirs for theirs, ours in GMI_TYPES.items()}
OURS_TO_GMI_FIELD = {ours: theirs for ours, theirs, _ in FIELDS}


def gmi_fake() -> GetMyInvoicesAPI:
    """The process's fake GetMyInvoices (started on first use); each harness uses its own API key."""
    return shared("getmyinvoices", GetMyInvoicesAPI)


def gmi_block(fake: GetMyInvoicesAPI, key: str, **overrides) -> GetMyInvoicesSource:
    fields = dict(api_key=key, base_url=fake.base_url, ca_bundle=fake.ca_bundle, client_tag_prefix="client:",
                  calls_per_minute=None, request_timeout=10)
    fields.update(overrides)
    return GetMyInvoicesSource(**fields)


class GetMyInvoicesHarness(SourceHarness):
    def __init__(self, fake: GetMyInvoicesAPI, key: str, tag: str, **block_fields):
        self.fake, self.key, self.tag, self.block_fields = fake, key, tag, block_fields
        self.secrets = (key,)

    def uid(self, doc_id: str) -> str:
        return f"{doc_id}{self.tag}" if self.tag else doc_id

    def block(self, **overrides) -> GetMyInvoicesSource:
        return gmi_block(self.fake, self.key, **{**self.block_fields, **overrides})

    def broken_block(self) -> GetMyInvoicesSource:
        return gmi_block(self.fake, "not-a-key-" + self.key[-6:])

    def put(self, doc_id, *, client="acme", doc_type="invoice", status="approved", approved_at=None, fields=None, pdf=None, xml=None):
        files = {f"{doc_id}.pdf": pdf if pdf is not None else pdf_bytes(f"{doc_type} {doc_id}", 20_000)}
        if xml is not None:
            files[f"{doc_id}.xml"] = xml
        theirs = {OURS_TO_GMI_FIELD[k]: v for k, v in (fields or {}).items()}
        self.fake.add(uid=doc_id, document_type=OURS_TO_GMI_TYPE.get(doc_type, doc_type.upper()), data=files[f"{doc_id}.pdf"],
                      filename=f"{doc_id}.pdf", fields=theirs, tags=[f"client:{client}", "conformance"],
                      approved=status == "approved", completed_at=approved_at,
                      attachments=[(f"{doc_id}.xml", xml)] if xml is not None else None)
        return files

    def put_unreadable(self, doc_id, client="acme", approved_at=None):
        self.fake.add(uid=doc_id, data=b"", filename=None, tags=[f"client:{client}", "conformance"], approved=True,
                      completed_at=approved_at)  # a document without a file

    def delete(self, doc_id):
        self.fake.delete(doc_id)

    def exported(self, doc_id):
        doc = self.fake.doc(doc_id)
        return doc is not None and doc.archived


@pytest.fixture
def getmyinvoices_harness():
    fake = gmi_fake()
    fake.clear_faults()
    with fake.lock:
        fake.docs.clear()  # the suite's ids are fixed: each test starts from an empty account
        key = f"gmi-{len(fake.keys)}-conformance"
        fake.keys[key] = "ok"
    return GetMyInvoicesHarness(fake, key, "")
