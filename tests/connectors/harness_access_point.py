"""Conformance harness for the access point connector: the local access point (tests/fakes/access_point.py).

An access point takes one file per document, the UBL invoice, with the PDF inside it: the harness's
packages are what an integration with mapping.ubl maps (the PDF, then the UBL built from realistic
metadata by tasks/ubl/generate.py, the PDF embedded), and `received` reads the payload the access
point holds for a package (by its senderReference) and the PDF embedded in it."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path

import pytest
from lxml import etree

from blocks.access_point import AccessPointConnection
from deployments.ubl import UblMapping, UblParty
from tasks.connectors.base import Mode, Package, PackageFile
from tasks.ubl.generate import build
from tests.connectors.conformance import Harness, file_opener
from tests.fakes.access_point import AccessPointAPI, block_fields
from tests.fakes.cloud_common import shared

CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
SPEC = UblMapping(seller=UblParty(name="{supplier}", vat="{supplier_vat}", city="Rotterdam"),
                  buyer=UblParty(name="{customer}", vat="{vat_number}", city="Brussels"))


def invoice_values(doc_id: str, **over) -> dict:
    return {"doc_id": doc_id, "doc_type": "invoice", "number": doc_id, "supplier": "Globex Industrial BV",
            "supplier_vat": "NL812345678B01", "customer": "ACME NV", "vat_number": "BE0123456789",
            "issue_date": "2026-03-02", "due_date": "2026-04-01", "currency": "EUR", "net": "100.00", "tax": "21.00",
            "total": "121.00", "po_number": f"PO-{doc_id}", "iban": "NL91ABNA0417164300", **over}


def ubl_for(values: dict, pdf: tuple[str, str, bytes] | None, doc_type: str = "invoice") -> bytes:
    def render(template: str, field: str, required: bool) -> str:
        try:
            return template.format_map(values)
        except KeyError:
            if required:
                raise
            return ""

    return build(doc_type, values, SPEC, render, pdf)


def ubl_package(tmp_path: Path, doc_id: str = "INV-1001", *, pdf_size: int = 60_000, integration: str = "acme/invoices",
                mode: Mode = Mode.PRODUCTION, **_ignored) -> Package:
    """A document as an integration with mapping.ubl maps it: PDF, then the UBL with the PDF inside."""
    pdf = b"%PDF-1.7\n" + os.urandom(pdf_size)
    values = invoice_values(doc_id)
    xml = ubl_for(values, (f"{doc_id}.pdf", "application/pdf", pdf))
    files = []
    for name, data, role, media in ((f"{doc_id}.pdf", pdf, "document", "application/pdf"),
                                     (f"{doc_id}.xml", xml, "attachment", "application/xml")):
        path = tmp_path / f"src-{doc_id}-{name}"
        path.write_bytes(data)
        files.append(PackageFile(name=name, role=role, media_type=media, size=len(data),
                                 sha256=hashlib.sha256(data).hexdigest(), opener=file_opener(path)))
    return Package(doc_id=doc_id, version="v1", client=integration.split("/")[0], integration=integration, folder="",
                   files=files, fields={"number": doc_id}, mode=mode, document_type="invoice",
                   values={k: v for k, v in values.items() if isinstance(v, str)})


def embedded_pdf(payload: bytes) -> bytes | None:
    root = etree.fromstring(payload)
    node = root.find(f".//{{{CBC}}}EmbeddedDocumentBinaryObject")
    return base64.b64decode(node.text) if node is not None else None


class AccessPointHarness(Harness):
    def __init__(self, fake: AccessPointAPI, company: str):
        self.fake, self.company = fake, company
        self.fields = block_fields(fake, company)
        self.secrets = (self.fields["client_secret"], self.fields["refresh_token"])

    def make_package(self, tmp_path, doc_id="INV-1001", **kw) -> Package:
        return ubl_package(tmp_path, doc_id, **kw)

    def connection(self, **overrides) -> AccessPointConnection:
        return AccessPointConnection(**{**self.fields, **overrides})

    def bad_credentials(self) -> AccessPointConnection:
        return self.connection(client_secret="wrong-" + self.fields["client_secret"])

    def _uploads(self, package: Package):
        return self.fake.uploads(package.idempotency_key)

    def received(self, package: Package, f: PackageFile) -> bytes | None:
        uploads = self._uploads(package)
        if not uploads:
            return None
        payload = uploads[-1].payload
        if f.name.endswith(".xml"):
            return payload
        return embedded_pdf(payload) if f.role == "document" else None

    def copies(self, package: Package) -> int:
        return len(self._uploads(package))


def access_point_fake() -> AccessPointAPI:
    """The process's fake access point (started on first use); each harness uses its own company."""
    fake = shared("access-point", lambda: AccessPointAPI(processing_seconds=0.2))
    return fake


@pytest.fixture
def access_point_harness():
    fake = access_point_fake()
    fake.clear_faults()
    company = f"CO-{uuid.uuid4().hex[:8]}"
    with fake.lock:
        fake.companies.add(company)
    return AccessPointHarness(fake, company)
