"""Source conformance harness for Docbits: the local Docbits API (tests/fakes/docbits_api.py).

Two clients are two Docbits organisations (the block's org_clients). A document the suite puts as
approved is in the export queue; a pending one is not yet (status "Pending approval"): the source
sees it in the dashboard listing, and its late approval is its arrival in the queue."""

from __future__ import annotations

import pytest

from blocks.docbits import DocbitsSource
from tasks.sources.docbits import DOCBITS_TYPES, FIELD_MAP
from tasks.sources.seed import pdf_bytes
from tests.fakes.cloud_common import shared
from tests.fakes.docbits_api import DocbitsAPI
from tests.sources.conformance import SourceHarness

ORGS = {"acme": "ORG-ACME", "globex": "ORG-GLOBEX"}
OURS_TO_TYPE = {ours: theirs for theirs, ours in DOCBITS_TYPES.items()}
OURS_TO_FIELD = {ours: theirs for theirs, ours in FIELD_MAP.items()}


def docbits_fake() -> DocbitsAPI:
    return shared("docbits", DocbitsAPI)


def docbits_block(fake: DocbitsAPI, **overrides) -> DocbitsSource:
    fields = dict(api_key=fake.api_key, base_url=fake.url, ca_bundle=fake.ca_bundle,
                  org_clients={org: client for client, org in ORGS.items()}, request_timeout=10)
    fields.update(overrides)
    return DocbitsSource(**fields)


class DocbitsHarness(SourceHarness):
    def __init__(self, fake: DocbitsAPI):
        self.fake = fake
        self.secrets = (fake.api_key,)

    def block(self, **overrides) -> DocbitsSource:
        return docbits_block(self.fake, **overrides)

    def broken_block(self) -> DocbitsSource:
        return docbits_block(self.fake, api_key="not-" + self.fake.api_key[-8:])

    def put(self, doc_id, *, client="acme", doc_type="invoice", status="approved", approved_at=None, fields=None, pdf=None, xml=None):
        files = {f"{doc_id}.pdf": pdf if pdf is not None else pdf_bytes(f"{doc_type} {doc_id}", 20_000)}
        if xml is not None:
            files[f"{doc_id}.xml"] = xml
        self.fake.add(doc_id, doc_type=OURS_TO_TYPE[doc_type], org_id=ORGS[client],
                      fields={OURS_TO_FIELD[k]: v for k, v in (fields or {}).items()}, files=list(files.items()),
                      approved_at=approved_at, pending=status == "approved")
        return files

    def put_unreadable(self, doc_id, client="acme", approved_at=None):
        self.fake.add(doc_id, org_id=ORGS[client], files=[], approved_at=approved_at)  # in the queue, without a file

    def delete(self, doc_id):
        self.fake.delete(doc_id)

    def exported(self, doc_id):
        doc = self.fake.docs.get(doc_id)
        return doc is not None and not doc.pending and doc.status == "Exported"


@pytest.fixture
def docbits_harness():
    fake = docbits_fake()
    fake.clear_faults()
    with fake.lock:
        fake.docs.clear()
    return DocbitsHarness(fake)
