"""A Peppol BIS Billing 3.0 UBL 2.1 invoice or credit note from a document's metadata and the integration's
UBL mapping (deployments/ubl.py), with the document's PDF embedded.

Amounts are computed from the lines (or from the one line of a document without lines), with
decimals rounded half up: line net amounts, the tax subtotal per (category, rate) as taxable amount
times rate, the totals (EN 16931 BR-CO-10..16). The metadata's own net, tax and total are checked
against them (at most 0.02 apart): a document whose UBL would say other amounts than its capture
system is a mapping error, not a silent correction.

    xml = build(doc_type, values, spec, render, pdf=(name, media_type, data))
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from deployments.ubl import UblMapping, UblParty
from tasks.ubl.common import CAC, CBC, NS, SPEC_ID

PROFILE_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
CENT = Decimal("0.01")
# Electronic Address Scheme of a VAT number, by its country prefix (Peppol's EAS list; GR's VAT prefix is EL).
VAT_SCHEMES = {
    "AD": "9922", "AL": "9923", "AT": "9914", "BA": "9924", "BE": "9925", "BG": "9926", "CH": "9927", "CY": "9928",
    "CZ": "9929", "DE": "9930", "EE": "9931", "ES": "9920", "FR": "9957", "GB": "9932", "EL": "9933", "GR": "9933",
    "HR": "9934", "HU": "9910", "IE": "9935", "IT": "0211", "LI": "9936", "LT": "9937", "LU": "9938", "LV": "9939",
    "MC": "9940", "ME": "9941", "MK": "9942", "MT": "9943", "NL": "9944", "PL": "9945", "PT": "9946", "RO": "9947",
    "RS": "9948", "SI": "9949", "SK": "9950", "SM": "9951", "TR": "9952", "VA": "9953", "DK": "0184",
}
EXEMPT = {"E", "AE", "K", "G", "O"}  # categories that need an exemption reason (BR-E-10, BR-AE-10, BR-IC-10, BR-G-10, BR-O-10)

Render = Callable[[str, str, bool], str]  # (template, field name, required) -> text ("" for an optional one that is absent)


class UblMappingError(ValueError):
    """The metadata cannot make a UBL document (a required value missing, amounts that disagree)."""


def amount(text: Any, what: str) -> Decimal:
    try:
        value = Decimal(str(text).strip().replace(",", ".")) if not isinstance(text, Decimal) else text
    except InvalidOperation:
        raise UblMappingError(f"{what} {text!r} is not a number") from None
    if not value.is_finite():
        raise UblMappingError(f"{what} {text!r} is not a number")
    return value


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def fmt(value: Decimal) -> str:
    return f"{money(value):.2f}"


def fmt_rate(value: Decimal) -> str:
    text = f"{value.quantize(CENT, rounding=ROUND_HALF_UP):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass
class Line:
    name: str
    quantity: Decimal
    unit: str
    price: Decimal
    net: Decimal
    category: str
    rate: Decimal
    item_id: str = ""


def build(doc_type: str, values: Mapping[str, Any], spec: UblMapping, render: Render,
          pdf: tuple[str, str, bytes] | None = None) -> bytes:
    """The UBL document's bytes (UTF-8, with an XML declaration)."""
    from lxml import etree

    credit = doc_type in spec.credit_note_types
    kind = "CreditNote" if credit else "Invoice"
    flip = credit and spec.negative_credit_notes == "flip"
    currency = render(spec.currency, "mapping.ubl.currency", True).upper()
    lines = _lines(values, spec, render, flip)
    totals = _totals(lines)
    _cross_check(values, spec, render, totals, flip)

    E = _Builder(currency)
    root = etree.Element(f"{{{NS[kind]}}}{kind}", nsmap={None: NS[kind], "cac": CAC, "cbc": CBC})
    E.text(root, "CustomizationID", SPEC_ID)
    E.text(root, "ProfileID", PROFILE_ID)
    E.text(root, "ID", render(spec.number, "mapping.ubl.number", True))
    E.text(root, "IssueDate", _date(render(spec.issue_date, "mapping.ubl.issue_date", True), "mapping.ubl.issue_date"))
    due = render(spec.due_date, "mapping.ubl.due_date", False)
    if due and not credit:
        E.text(root, "DueDate", _date(due, "mapping.ubl.due_date"))
    E.text(root, "CreditNoteTypeCode" if credit else "InvoiceTypeCode", "381" if credit else spec.invoice_type_code)
    note = render(spec.note, "mapping.ubl.note", False)
    if note:
        E.text(root, "Note", note)
    E.text(root, "DocumentCurrencyCode", currency)
    buyer_ref = render(spec.buyer_reference, "mapping.ubl.buyer_reference", False)
    if buyer_ref:
        E.text(root, "BuyerReference", buyer_ref)
    order_ref = render(spec.order_reference, "mapping.ubl.order_reference", False)
    if order_ref:
        E.text(E.agg(root, "OrderReference"), "ID", order_ref)
    invoice_ref = render(spec.invoice_reference, "mapping.ubl.invoice_reference", False) if credit else ""
    if invoice_ref:
        E.text(E.agg(E.agg(root, "BillingReference"), "InvoiceDocumentReference"), "ID", invoice_ref)
    if pdf is not None and spec.embed_pdf:
        name, media_type, data = pdf
        ref = E.agg(root, "AdditionalDocumentReference")
        E.text(ref, "ID", render(spec.number, "mapping.ubl.number", True))
        E.text(ref, "DocumentDescription", f"{'Credit note' if credit else 'Invoice'} {name}")
        attachment = E.agg(ref, "Attachment")
        obj = E.text(attachment, "EmbeddedDocumentBinaryObject", base64.b64encode(data).decode("ascii"))
        obj.set("mimeCode", media_type)
        obj.set("filename", name)
    E.party(E.agg(root, "AccountingSupplierParty"), spec.seller, "seller", spec.use_gln, render)
    E.party(E.agg(root, "AccountingCustomerParty"), spec.buyer, "buyer", spec.use_gln, render)
    iban = render(spec.iban, "mapping.ubl.iban", False).replace(" ", "")
    if iban:
        means = E.agg(root, "PaymentMeans")
        E.text(means, "PaymentMeansCode", spec.payment_means_code)
        payment_id = render(spec.payment_id, "mapping.ubl.payment_id", False)
        if payment_id:
            E.text(means, "PaymentID", payment_id)
        E.text(E.agg(means, "PayeeFinancialAccount"), "ID", iban)
    terms = render(spec.payment_terms, "mapping.ubl.payment_terms", False)
    if not terms and credit:
        terms = f"Credit note {render(spec.number, 'mapping.ubl.number', True)}"
    if terms:
        E.text(E.agg(root, "PaymentTerms"), "Note", terms)
    tax_total = E.agg(root, "TaxTotal")
    E.amount(tax_total, "TaxAmount", totals["tax"])
    exemption = render(spec.exemption_reason, "mapping.ubl.exemption_reason", False)
    exemption_code = render(spec.exemption_reason_code, "mapping.ubl.exemption_reason_code", False)
    for (category, rate), (taxable, tax) in totals["groups"].items():
        sub = E.agg(tax_total, "TaxSubtotal")
        E.amount(sub, "TaxableAmount", taxable)
        E.amount(sub, "TaxAmount", tax)
        cat = E.agg(sub, "TaxCategory")
        E.text(cat, "ID", category)
        if category != "O":
            E.text(cat, "Percent", fmt_rate(rate))
        if category in EXEMPT:
            if exemption_code:
                E.text(cat, "TaxExemptionReasonCode", exemption_code)
            if exemption or not exemption_code:
                E.text(cat, "TaxExemptionReason", exemption or "Exempt")
        E.text(E.agg(cat, "TaxScheme"), "ID", "VAT")
    monetary = E.agg(root, "LegalMonetaryTotal")
    E.amount(monetary, "LineExtensionAmount", totals["net"])
    E.amount(monetary, "TaxExclusiveAmount", totals["net"])
    E.amount(monetary, "TaxInclusiveAmount", totals["net"] + totals["tax"])
    E.amount(monetary, "PayableAmount", totals["net"] + totals["tax"])
    for i, line in enumerate(lines, 1):
        node = E.agg(root, "CreditNoteLine" if credit else "InvoiceLine")
        E.text(node, "ID", str(i))
        qty = E.text(node, "CreditedQuantity" if credit else "InvoicedQuantity", _plain(line.quantity))
        qty.set("unitCode", line.unit)
        E.amount(node, "LineExtensionAmount", line.net)
        item = E.agg(node, "Item")
        E.text(item, "Name", line.name)
        if line.item_id:
            E.text(E.agg(item, "SellersItemIdentification"), "ID", line.item_id)
        cat = E.agg(item, "ClassifiedTaxCategory")
        E.text(cat, "ID", line.category)
        if line.category != "O":
            E.text(cat, "Percent", fmt_rate(line.rate))
        E.text(E.agg(cat, "TaxScheme"), "ID", "VAT")
        price = E.agg(node, "Price")
        price_node = etree.SubElement(price, f"{{{CBC}}}PriceAmount", currencyID=currency)
        price_node.text = _plain(line.price)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


class _Builder:
    def __init__(self, currency: str):
        self.currency = currency

    @staticmethod
    def agg(parent, name: str):
        from lxml import etree

        return etree.SubElement(parent, f"{{{CAC}}}{name}")

    @staticmethod
    def text(parent, name: str, value: str):
        from lxml import etree

        node = etree.SubElement(parent, f"{{{CBC}}}{name}")
        node.text = value
        return node

    def amount(self, parent, name: str, value: Decimal):
        node = self.text(parent, name, fmt(value))
        node.set("currencyID", self.currency)
        return node

    def party(self, parent, spec: UblParty, who: str, use_gln: bool, render: Render) -> None:
        where = f"mapping.ubl.{who}"
        name = render(spec.name, f"{where}.name", True)
        vat = re.sub(r"[\s.]", "", render(spec.vat, f"{where}.vat", False)).upper()
        gln = re.sub(r"\s", "", render(spec.gln, f"{where}.gln", False))
        endpoint = render(spec.endpoint, f"{where}.endpoint", False).strip()
        endpoint_scheme = render(spec.endpoint_scheme, f"{where}.endpoint_scheme", False).strip()
        country = render(spec.country, f"{where}.country", False).strip().upper()
        if not country and re.match(r"^[A-Z]{2}", vat):
            country = "GR" if vat[:2] == "EL" else vat[:2]
        if gln and (use_gln or not (endpoint or vat)):
            scheme, address = "0088", gln
        elif endpoint:
            if not endpoint_scheme:
                raise UblMappingError(f"{where}.endpoint_scheme: the electronic address {endpoint!r} needs its scheme (EAS), "
                                      f"e.g. 0208")
            scheme, address = endpoint_scheme, endpoint
        elif vat:
            scheme = VAT_SCHEMES.get(vat[:2])
            if scheme is None:
                raise UblMappingError(f"{where}: no Peppol address scheme is known for VAT numbers of {vat[:2]!r} ({vat}); set "
                                      f"{where}.endpoint and endpoint_scheme, or a GLN")
            address = vat
        elif gln:
            scheme, address = "0088", gln
        else:
            raise UblMappingError(f"{where}: the {who} has no electronic address (Peppol PEPPOL-EN16931-R0{'2' if who == 'seller' else '1'}0): "
                                  f"give it a vat, a gln or an endpoint")
        party = self.agg(parent, "Party")
        ep = self.text(party, "EndpointID", address)
        ep.set("schemeID", scheme)
        if gln:
            pid = self.text(self.agg(party, "PartyIdentification"), "ID", gln)
            pid.set("schemeID", "0088")
        trading = render(spec.trading_name, f"{where}.trading_name", False)
        if trading:
            self.text(self.agg(party, "PartyName"), "Name", trading)
        address_node = self.agg(party, "PostalAddress")
        for field_name, element in (("street", "StreetName"), ("city", "CityName"), ("postal_code", "PostalZone")):
            value = render(getattr(spec, field_name), f"{where}.{field_name}", False)
            if value:
                self.text(address_node, element, value)
        if not country:
            raise UblMappingError(f"{where}.country: the {who}'s country is not known (EN 16931 BR-{'09' if who == 'seller' else '11'}); "
                                  f"set it, or give a VAT number with its country prefix")
        self.text(self.agg(address_node, "Country"), "IdentificationCode", country)
        if vat:
            tax = self.agg(party, "PartyTaxScheme")
            self.text(tax, "CompanyID", vat)
            self.text(self.agg(tax, "TaxScheme"), "ID", "VAT")
        legal = self.agg(party, "PartyLegalEntity")
        self.text(legal, "RegistrationName", name)
        company = render(spec.company_id, f"{where}.company_id", False)
        if company:
            node = self.text(legal, "CompanyID", company)
            if spec.company_id_scheme:
                node.set("schemeID", spec.company_id_scheme)
        email = render(spec.email, f"{where}.email", False)
        if email:
            self.text(self.agg(party, "Contact"), "ElectronicMail", email)


def _plain(value: Decimal) -> str:
    """A quantity or price without trailing zeros and never in exponent form (2, 1.5, 0.3333)."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _date(text: str, field: str) -> str:
    match = re.match(r"^(\d{4}-\d{2}-\d{2})", text.strip())
    if not match:
        raise UblMappingError(f"{field}: {text!r} is not a date (YYYY-MM-DD)")
    return match.group(1)


def _rate_of(values: Mapping[str, Any], spec: UblMapping, render: Render) -> Decimal:
    given = render(spec.tax_rate, "mapping.ubl.tax_rate", False)
    if given:
        return amount(given, "mapping.ubl.tax_rate")
    net, tax = render(spec.net, "mapping.ubl.net", False), render(spec.tax, "mapping.ubl.tax", False)
    if net and tax:
        n, t = amount(net, "mapping.ubl.net"), amount(tax, "mapping.ubl.tax")
        return money(t / n * 100) if n else Decimal(0)
    raise UblMappingError("mapping.ubl.tax_rate: the VAT rate is not known: give lines with a tax rate, the metadata's net "
                          "and tax, or mapping.ubl.tax_rate")


def _category(rate: Decimal, given: str, spec: UblMapping, render: Render) -> str:
    category = (given or render(spec.tax_category, "mapping.ubl.tax_category", False)).strip().upper()
    return category or ("S" if rate > 0 else "Z")


def _lines(values: Mapping[str, Any], spec: UblMapping, render: Render, flip: bool) -> list[Line]:
    raw = values.get(spec.lines_field)
    out: list[Line] = []
    if raw:
        if not isinstance(raw, list) or not all(isinstance(x, Mapping) for x in raw):
            raise UblMappingError(f"metadata field {spec.lines_field!r} must be a list of objects (the lines)")
        keys = spec.line
        default_rate = None
        for i, item in enumerate(raw, 1):
            where = f"line {i} ({spec.lines_field}[{i - 1}])"
            qty = amount(item.get(keys.quantity, 1), f"{where} {keys.quantity}")
            net = item.get(keys.net)
            price = item.get(keys.unit_price)
            if net is None and price is None:
                raise UblMappingError(f"{where}: give {keys.net} or {keys.unit_price}")
            net_d = money(amount(net, f"{where} {keys.net}")) if net is not None else money(qty * amount(price, f"{where} {keys.unit_price}"))
            price_d = amount(price, f"{where} {keys.unit_price}") if price is not None else (net_d / qty if qty else net_d)
            if flip and net_d < 0:
                net_d, qty = -net_d, abs(qty)
                price_d = abs(price_d)
            rate_v = item.get(keys.tax_rate)
            if rate_v is None:
                default_rate = default_rate if default_rate is not None else _rate_of(values, spec, render)
                rate = default_rate
            else:
                rate = amount(rate_v, f"{where} {keys.tax_rate}")
            name = str(item.get(keys.description) or "").strip() or f"line {i}"
            out.append(Line(name, qty, str(item.get(keys.unit_code) or spec.default_unit_code), _price(price_d), net_d,
                            _category(rate, str(item.get(keys.tax_category) or ""), spec, render), rate,
                            str(item.get(keys.item_id) or "")))
        return out
    net_text = render(spec.net, "mapping.ubl.net", False)
    if not net_text:
        raise UblMappingError(f"mapping.ubl.net: the document has no lines (metadata field {spec.lines_field!r}) and no net "
                              f"amount: one of them is needed")
    net = money(amount(net_text, "mapping.ubl.net"))
    if flip and net < 0:
        net = -net
    if net < 0:
        raise UblMappingError(f"mapping.ubl.net: a negative net amount ({net}) on an invoice: send it as a credit note "
                              f"(mapping.ubl.credit_note_types)")
    rate = _rate_of(values, spec, render)
    rate = abs(rate)
    return [Line(render(spec.line_description, "mapping.ubl.line_description", True), Decimal(1), spec.default_unit_code,
                 net, net, _category(rate, "", spec, render), rate)]


def _price(value: Decimal) -> Decimal:
    """A unit price, to 4 decimals (PEPPOL-EN16931-R120 allows 0.02 between quantity * price and the line's net)."""
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _totals(lines: list[Line]) -> dict[str, Any]:
    groups: dict[tuple[str, Decimal], list[Decimal]] = {}
    for line in lines:
        key = (line.category, line.rate if line.category != "O" else Decimal(0))
        groups.setdefault(key, [Decimal(0), Decimal(0)])[0] += line.net
    out_groups = {}
    for key, (taxable, _) in groups.items():
        tax = money(taxable * key[1] / 100) if key[0] not in EXEMPT | {"Z"} else Decimal(0)
        out_groups[key] = (money(taxable), tax)
    net = money(sum((line.net for line in lines), Decimal(0)))
    tax = money(sum((t for _, t in out_groups.values()), Decimal(0)))
    return {"net": net, "tax": tax, "groups": out_groups}


def _cross_check(values: Mapping[str, Any], spec: UblMapping, render: Render, totals: dict[str, Any], flip: bool) -> None:
    expected = {"net": totals["net"], "tax": totals["tax"], "total": totals["net"] + totals["tax"]}
    for key in ("net", "tax", "total"):
        text = render(getattr(spec, key), f"mapping.ubl.{key}", False)
        if not text:
            continue
        given = amount(text, f"mapping.ubl.{key}")
        if flip and given < 0:
            given = -given
        if abs(given - expected[key]) > Decimal("0.02"):
            raise UblMappingError(f"mapping.ubl.{key}: the metadata says {given} but the lines make {fmt(expected[key])} "
                                  f"(net {fmt(totals['net'])}, VAT {fmt(totals['tax'])}); the UBL would contradict the document")
