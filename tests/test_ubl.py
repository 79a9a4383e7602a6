"""UBL: the vendored official artefacts, Peppol BIS 3.0 invoices and credit notes built from metadata, and the
three validation layers (UBL 2.1 XSD, CEN's EN 16931 rules, docroute's Peppol rules), each naming its rules.
Through the real mapping (tasks/mapping.py map_document) wherever a package is involved."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from lxml import etree

from deployments.config import Config
from deployments.schema import Integration
from tasks.documents import Document, DocumentFile
from tasks.mapping import Lookups, MappingError
from tasks.mapping import map_document as _map
from tasks.ubl.peppol import gln_with_check_digit
from tasks.ubl.validate import SCHEMAS, UblInvalid, check, validate
from tests.connectors.harness_access_point import invoice_values, ubl_for

CBC = "{urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2}"
CAC = "{urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2}"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40


def test_the_vendored_artefacts_are_the_ones_sources_md_lists():
    listed = dict(reversed(line.split()) for line in (SCHEMAS / "SOURCES.md").read_text().splitlines()
                  if re.match(r"^\s+[0-9a-f]{64}\s", line))
    on_disk = {str(p.relative_to(SCHEMAS)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in SCHEMAS.rglob("*") if p.is_file() and p.name != "SOURCES.md"}
    assert on_disk == listed and len(listed) == 17


def map_document(doc, integ, lookups=None):
    return _map(doc, integ, lookups or Lookups(Config(Path("."), {integ.key: integ}, {}), integ))


def document(doc_id="INV-9", doc_type="invoice", xml: bytes | None = None, **fields) -> Document:
    meta = {**{k: v for k, v in invoice_values(doc_id).items() if k not in ("doc_id", "doc_type")}, **fields}
    files = [DocumentFile(name=f"{doc_id}.pdf", media_type="application/pdf", size=len(PDF),
                          sha256=hashlib.sha256(PDF).hexdigest()).with_opener(lambda: io.BytesIO(PDF))]
    if xml is not None:
        files.append(DocumentFile(name=f"{doc_id}.xml", media_type="application/xml", size=len(xml),
                                  sha256=hashlib.sha256(xml).hexdigest()).with_opener(lambda: io.BytesIO(xml)))
    return Document(id=doc_id, client="acme", type=doc_type, status="approved", approved_at=datetime.now(timezone.utc),
                    fields=meta, files=files, version="v1")


def integration(ubl: dict | None = None, **mapping) -> Integration:
    return Integration.model_validate({
        "name": "to-ap", "client": "acme", "source": "x/y", "connection": "access-point-connection/ap",
        "activated_at": "2026-01-01T00:00:00Z", "identifiers": {"vat_number": "BE0123456789"},
        "metadata_fields": ["customer", "lines"],
        "mapping": {"ubl": {"seller": {"name": "{supplier}", "vat": "{supplier_vat}"},
                            "buyer": {"name": "{customer}", "vat": "{vat_number}"}, **(ubl or {})}, **mapping}})


def ubl_of(package) -> bytes:
    [f] = [f for f in package.files if f.name.endswith(".xml")]
    return f.open().read()


def test_an_invoice_built_from_metadata_is_valid_and_carries_the_document():
    package = map_document(document(), integration())
    assert [f.name for f in package.files] == ["INV-9.pdf", "INV-9.xml"]
    data = ubl_of(package)
    assert validate(data) == []  # no finding at all: XSD, EN 16931, Peppol
    root = etree.fromstring(data)
    assert root.findtext(f"{CBC}ID") == "INV-9" and root.findtext(f"{CBC}InvoiceTypeCode") == "380"
    assert root.findtext(f"{CBC}ProfileID") == "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
    seller = root.find(f"{CAC}AccountingSupplierParty/{CAC}Party")
    assert seller.find(f"{CBC}EndpointID").attrib == {"schemeID": "9944"} and seller.findtext(f"{CBC}EndpointID") == "NL812345678B01"
    buyer = root.find(f"{CAC}AccountingCustomerParty/{CAC}Party")
    assert buyer.findtext(f"{CAC}PartyTaxScheme/{CBC}CompanyID") == "BE0123456789"
    totals = root.find(f"{CAC}LegalMonetaryTotal")
    assert (totals.findtext(f"{CBC}TaxExclusiveAmount"), totals.findtext(f"{CBC}PayableAmount")) == ("100.00", "121.00")
    assert root.findtext(f"{CAC}PaymentMeans/{CAC}PayeeFinancialAccount/{CBC}ID") == "NL91ABNA0417164300"
    attached = root.find(f".//{CBC}EmbeddedDocumentBinaryObject")
    assert attached.get("mimeCode") == "application/pdf" and base64.b64decode(attached.text) == PDF


def test_a_credit_note_with_signed_amounts_becomes_a_valid_ubl_credit_note():
    doc = document("CN-3", "credit_note", net="-100.00", tax="-21.00", total="-121.00", invoice_reference="INV-1")
    root = etree.fromstring(ubl_of(map_document(doc, integration())))
    assert root.tag.endswith("}CreditNote") and root.findtext(f"{CBC}CreditNoteTypeCode") == "381"
    assert root.findtext(f"{CAC}BillingReference/{CAC}InvoiceDocumentReference/{CBC}ID") == "INV-1"
    assert root.findtext(f"{CAC}LegalMonetaryTotal/{CBC}PayableAmount") == "121.00"
    assert root.find(f"{CBC}DueDate") is None  # a UBL 2.1 credit note has none
    assert validate(etree.tostring(root)) == []


def test_lines_at_two_rates_give_two_tax_subtotals():
    lines = [{"description": "Paper", "quantity": 10, "unit_price": "4.50", "tax_rate": 21},
             {"description": "Books", "quantity": 3, "net": "30.00", "tax_rate": 6, "unit_code": "H87"}]
    doc = document(lines=lines, net="75.00", tax="11.25", total="86.25")
    root = etree.fromstring(ubl_of(map_document(doc, integration())))
    subs = {(s.findtext(f"{CAC}TaxCategory/{CBC}Percent"), s.findtext(f"{CBC}TaxableAmount"), s.findtext(f"{CBC}TaxAmount"))
            for s in root.iter(f"{CAC}TaxSubtotal")}
    assert subs == {("21", "45.00", "9.45"), ("6", "30.00", "1.80")}
    assert len(root.findall(f"{CAC}InvoiceLine")) == 2
    assert validate(etree.tostring(root)) == []


def test_amounts_that_disagree_with_the_metadata_are_a_mapping_error_naming_the_field():
    with pytest.raises(MappingError) as info:
        map_document(document(total="130.00"), integration())
    assert "document INV-9" in str(info.value) and "mapping.ubl.total" in str(info.value) and "121.00" in str(info.value)


def test_use_gln_addresses_the_party_by_its_gln_and_a_bad_gln_is_named():
    gln = gln_with_check_digit("541234500001")
    ubl = {"buyer": {"name": "{customer}", "vat": "{vat_number}", "gln": gln}, "use_gln": True}
    root = etree.fromstring(ubl_of(map_document(document(), integration(ubl))))
    endpoint = root.find(f"{CAC}AccountingCustomerParty/{CAC}Party/{CBC}EndpointID")
    assert (endpoint.get("schemeID"), endpoint.text) == ("0088", gln)
    wrong = gln[:-1] + str((int(gln[-1]) + 1) % 10)
    with pytest.raises(MappingError) as info:
        map_document(document(), integration({**ubl, "buyer": {"name": "{customer}", "gln": wrong, "country": "BE"}}))
    assert "[PEPPOL-COMMON-R040]" in str(info.value) and wrong in str(info.value)


def test_each_layer_names_its_broken_rules():
    good = ubl_for(invoice_values("V-1"), ("V-1.pdf", "application/pdf", PDF))
    assert check(good, "document V-1") == []
    tampered = (good.replace(b"<cbc:BuyerReference>PO-V-1</cbc:BuyerReference>", b"")
                .replace(b'<cbc:PayableAmount currencyID="EUR">121.00', b'<cbc:PayableAmount currencyID="EUR">120.00')
                .replace(b'schemeID="9944"', b'schemeID="9999"'))
    with pytest.raises(UblInvalid) as info:
        check(tampered, "document V-1, file V-1.xml")
    text = str(info.value)
    assert text.startswith("document V-1, file V-1.xml: UBL is not valid Peppol BIS Billing 3.0")
    for rule in ("[BR-CO-16]", "[PEPPOL-EN16931-R003]", "[PEPPOL-EN16931-CL008]"):
        assert rule in text
    out_of_order = good.replace(b"<cbc:IssueDate>2026-03-02</cbc:IssueDate>", b"")
    rules = {f.rule for f in validate(out_of_order) if f.fatal}
    assert {"UBL-XSD", "BR-03"} <= rules  # the schema (DueDate where IssueDate must be) and EN 16931 (no issue date)
    empty = good.replace(b"<cbc:BuyerReference>PO-V-1</cbc:BuyerReference>",
                         b"<cbc:BuyerReference>PO-V-1</cbc:BuyerReference><cbc:AccountingCost/>")
    assert "PEPPOL-EN16931-R008" in {f.rule for f in validate(empty)}


def test_the_source_s_ubl_is_validated_and_passed_through_byte_for_byte():
    own = ubl_for(invoice_values("INV-9"), None)
    package = map_document(document(xml=own), integration())
    assert [f.name for f in package.files] == ["INV-9.pdf", "INV-9.xml"] and ubl_of(package) == own
    broken = own.replace(b"<cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>", b"")
    with pytest.raises(MappingError) as info:
        map_document(document(xml=broken), integration())
    assert "document INV-9, file INV-9.xml" in str(info.value) and "[BR-05]" in str(info.value)


def test_a_missing_required_value_names_the_document_and_the_field():
    with pytest.raises(MappingError) as info:
        map_document(document(currency=None), integration())
    assert "document INV-9" in str(info.value) and "mapping.ubl.currency" in str(info.value)

