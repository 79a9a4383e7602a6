"""The UBL mapping of an integration (`mapping.ubl` in a client file or template): how a document's metadata
becomes a Peppol BIS Billing 3.0 invoice or credit note (tasks/ubl/generate.py).

Every text is a template of the document's values, as file names are ({number}, {supplier_vat}, the
client's identifiers such as {vat_number} or {gln}, mapped fields). A template whose placeholder the
document does not have leaves an optional element out (a GLN, a due date, an address line) and is a
mapping error for a required one (the seller's name, the invoice number, the issue date, the
currency). The defaults suit a capture inbox's metadata (tasks/documents.py STANDARD_METADATA_FIELDS)
for purchase invoices: the supplier is the seller, the client the buyer.

    mapping:
      ubl:
        seller: {name: "{supplier}", vat: "{supplier_vat}", gln: "{supplier_gln}", city: "{supplier_city}"}
        buyer: {name: "ACME NV", vat: "{vat_number}", gln: "{gln}", country: BE}
        use_gln: true                   # Business Central's "use GLN": the GLN is the electronic address (0088)
        buyer_reference: "{po_number}"
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UblParty(_Strict):
    """A party (seller or buyer): names, identifiers and address, each a template (empty: left out)."""

    name: str = Field(description="Registration name (BT-27 / BT-44), required.")
    trading_name: str = Field(default="", description="Trading name (BT-28 / BT-45), if other than the registration name.")
    vat: str = Field(default="", description="VAT number with its country prefix (BT-31 / BT-48), e.g. BE0123456789.")
    gln: str = Field(default="", description="Global Location Number (13 digits, GS1 check digit): a party identifier (0088), "
                     "and the electronic address when use_gln is on or no other is known.")
    company_id: str = Field(default="", description="Legal registration number (BT-30 / BT-47), e.g. an enterprise number.")
    company_id_scheme: str = Field(default="", description="ICD scheme of company_id (e.g. 0208 Belgian enterprise number, "
                                   "0106 Dutch KVK); empty: no scheme.")
    endpoint: str = Field(default="", description="Electronic address (BT-34 / BT-49) when it is neither the GLN nor the VAT "
                          "number; with endpoint_scheme.")
    endpoint_scheme: str = Field(default="", description="Electronic Address Scheme (EAS) of endpoint, e.g. 0208, 0088, 9925.")
    street: str = Field(default="", description="Street and number (BT-35 / BT-50).")
    city: str = Field(default="", description="City (BT-37 / BT-52).")
    postal_code: str = Field(default="", description="Post code (BT-38 / BT-53).")
    country: str = Field(default="", description="ISO 3166-1 alpha-2 country code (BT-40 / BT-55); empty: the VAT number's "
                         "prefix (EL is Greece, GR).")
    email: str = Field(default="", description="Contact e-mail (BT-43 / BT-58).")


class UblLine(_Strict):
    """The keys of one line in the metadata list `lines_field` (each line a JSON object)."""

    description: str = Field(default="description", description="Key of the item name (BT-153).")
    quantity: str = Field(default="quantity", description="Key of the quantity (BT-129); absent: 1.")
    unit_code: str = Field(default="unit_code", description="Key of the UN/ECE rec 20 unit (BT-130); absent: default_unit_code.")
    unit_price: str = Field(default="unit_price", description="Key of the net unit price (BT-146); absent: net / quantity.")
    net: str = Field(default="net", description="Key of the line net amount (BT-131); absent: quantity * unit_price.")
    tax_rate: str = Field(default="tax_rate", description="Key of the VAT rate in percent (BT-152).")
    tax_category: str = Field(default="tax_category", description="Key of the VAT category code (BT-151: S, Z, E, AE, K, G, O, L, M).")
    item_id: str = Field(default="item_id", description="Key of the seller's item identifier (BT-155).")


class UblMapping(_Strict):
    """How a document becomes a Peppol BIS Billing 3.0 UBL invoice or credit note (see the module docstring)."""

    seller: UblParty = Field(default_factory=lambda: UblParty(name="{supplier}", vat="{supplier_vat}"),
                             description="The seller (AccountingSupplierParty). Default: the document's supplier.")
    buyer: UblParty = Field(default_factory=lambda: UblParty(name="{customer}", vat="{vat_number}", gln="{gln}"),
                            description="The buyer (AccountingCustomerParty). Default: the document's customer, with the "
                            "client's identifiers vat_number and gln.")
    use_gln: bool = Field(default=False, description="Business Central's \"use GLN\": a party with a GLN is addressed by it "
                          "(EndpointID scheme 0088) rather than by its VAT number.")
    number: str = Field(default="{number}", description="Invoice number (BT-1), required.")
    issue_date: str = Field(default="{issue_date}", description="Issue date YYYY-MM-DD (BT-2), required.")
    due_date: str = Field(default="{due_date}", description="Payment due date (BT-9); invoices only (a UBL credit note has none).")
    currency: str = Field(default="{currency}", description="ISO 4217 currency (BT-5), required.")
    buyer_reference: str = Field(default="{po_number}", description="Buyer reference (BT-10). Peppol needs it or order_reference.")
    order_reference: str = Field(default="{order_number}", description="Purchase order reference (BT-13).")
    invoice_reference: str = Field(default="{invoice_reference}", description="Credit notes: the invoice credited (BT-25).")
    note: str = Field(default="", description="A note (BT-22), at most one.")
    payment_terms: str = Field(default="", description="Payment terms text (BT-20). A credit note without one says "
                               "\"Credit note <number>\": EN 16931 wants terms or a due date when an amount is due.")
    payment_means_code: str = Field(default="30", description="UNCL 4461 payment means (BT-81): 30 credit transfer, 58 SEPA "
                                    "credit transfer, ...; sent when an IBAN is known.")
    iban: str = Field(default="{iban}", description="Account to pay into (BT-84).")
    payment_id: str = Field(default="{reference}", description="Remittance information (BT-83), e.g. a structured reference.")
    lines_field: str = Field(default="lines", description="Metadata field holding the lines (a list of objects, keys as `line` "
                             "says). Absent: one line for the whole net amount, named by line_description.")
    line: UblLine = Field(default_factory=UblLine, description="The keys of a line in the lines field.")
    line_description: str = Field(default="{doc_type} {number}", description="Name of the one line of a document without lines.")
    net: str = Field(default="{net}", description="Total net amount, for a document without lines, and checked against the lines.")
    tax: str = Field(default="{tax}", description="Total VAT amount, checked against the computed one (0.02 apart at most).")
    total: str = Field(default="{total}", description="Total including VAT, checked against the computed one.")
    tax_rate: str = Field(default="", description="VAT rate of a document without lines (or of lines without one); empty: "
                          "the metadata's tax / net, rounded to 2 decimals.")
    tax_category: str = Field(default="", description="VAT category of lines that give none; empty: S, or Z for a 0% rate.")
    exemption_reason: str = Field(default="", description="VAT exemption reason text (BT-120), needed for categories E, AE, K, G, O.")
    exemption_reason_code: str = Field(default="", description="VAT exemption reason code (BT-121), e.g. VATEX-EU-AE.")
    default_unit_code: str = Field(default="C62", description="Unit of lines that give none (C62: one, H87: piece).")
    credit_note_types: list[str] = Field(default_factory=lambda: ["credit_note"],
                                         description="Document types that become a UBL CreditNote (type code 381).")
    invoice_type_code: str = Field(default="380", description="UNCL 1001 invoice type (BT-3): 380 commercial invoice.")
    embed_pdf: bool = Field(default=True, description="Embed the document's main file (the PDF) as an "
                            "AdditionalDocumentReference attachment (BT-125).")
    file_name: str = Field(default="{doc_id}.xml", description="Name of the generated UBL file in the package.")
    negative_credit_notes: Literal["flip", "keep"] = Field(
        default="flip", description="A credit note whose metadata amounts are negative (some capture systems sign them): "
        "flip takes their absolute value, as a UBL credit note's amounts are positive; keep leaves them (they then fail).")
