"""The Peppol BIS Billing 3.0 rules docroute checks itself (OpenPeppol's own Schematron is not shipped by
any package this project can install: schemas/SOURCES.md). Each rule is a small XPath check on the
parsed document, reported under OpenPeppol's rule id with the rule's meaning, so an error names the
rule a Peppol access point would name.

Checked (all "fatal" unless said): document level R001, R002, R003, R004, R005, R007, R008, R053, R054,
R080 (credit notes); parties R010, R020; allowances and charges R040, R041, R042, R043, R044, R046;
payment R061; currency R051; lines R100, R101, R110, R111, R120, R121, R130; code lists CL001 (MIME
codes of attachments), CL007 (ISO 4217 currencies), CL008 (electronic address schemes, EAS),
F001 (dates YYYY-MM-DD), P0100 / P0101 (type codes of profile 01); identifiers PEPPOL-COMMON-R040
(GLN check digit), R041 (Norwegian organisation number), R042 (Danish CVR), R043 (Belgian enterprise
number, mod 97), R049 (Swedish organisation number), R050 (Australian ABN).

Not checked: the national rules (NO-R-*, DK-R-*, IT-R-*, GR-R-*, IS-R-*, NL-R-*, SE-R-*, DE-R-*) and
the Italian identifier warnings (PEPPOL-COMMON-R044..R047): an access point checks those.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation

from tasks.ubl.common import CAC, CBC, NS, SPEC_ID, Finding

X = {"cbc": CBC, "cac": CAC, "inv": NS["Invoice"], "cn": NS["CreditNote"]}

PROFILE = re.compile(r"^urn:fdc:peppol\.eu:2017:poacc:billing:([0-9]{2}):1\.0$")
MIME = {"application/pdf", "image/png", "image/jpeg", "text/csv",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/vnd.oasis.opendocument.spreadsheet"}
# Electronic Address Scheme codes Peppol BIS 3.0 allows for an EndpointID (the code list of the rule CL008).
EAS = set(("0002 0007 0009 0037 0060 0088 0096 0097 0106 0130 0135 0142 0151 0183 0184 0188 0190 0191 0192 0193 0195 "
           "0196 0198 0199 0200 0201 0202 0204 0208 0209 0210 0211 0212 0213 0215 0216 0218 0221 0230 9901 9910 9913 "
           "9914 9915 9918 9919 9920 9922 9923 9924 9925 9926 9927 9928 9929 9930 9931 9932 9933 9934 9935 9936 9937 "
           "9938 9939 9940 9941 9942 9943 9944 9945 9946 9947 9948 9949 9950 9951 9952 9953 9957 9959").split())
ISO4217 = set(("AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
               "CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP "
               "GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW "
               "KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRO MUR MVR MWK MXN MXV MYR MZN NAD "
               "NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLL "
               "SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UZS VEF VND VUV "
               "WST XAF XAG XAU XBA XBB XBC XBD XCD XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWL").split())
INVOICE_TYPES = set("71 80 82 84 102 218 219 331 380 382 383 386 388 393 395 553 575 623 780 817 870 875 876 877".split())
CREDIT_NOTE_TYPES = {"381", "396", "81", "83", "532"}
AMOUNTS = ("Amount", "BaseAmount", "PriceAmount", "TaxableAmount", "LineExtensionAmount", "TaxExclusiveAmount",
           "TaxInclusiveAmount", "AllowanceTotalAmount", "ChargeTotalAmount", "PrepaidAmount", "PayableRoundingAmount",
           "PayableAmount")
DATES = ("IssueDate", "DueDate", "TaxPointDate", "StartDate", "EndDate", "ActualDeliveryDate")


def _dec(value: str | None) -> Decimal | None:
    try:
        return Decimal((value or "").strip())
    except InvalidOperation:
        return None


def _text(node, path: str) -> str:
    found = node.xpath(path, namespaces=X)
    if not found:
        return ""
    first = found[0]
    return (first if isinstance(first, str) else (first.text or "")).strip()


def _where(node) -> str:
    return node.getroottree().getpath(node)


# -- identifier checks (PEPPOL-COMMON-R04x) -------------------------------------------------------------------
def gln_ok(value: str) -> bool:
    """GS1 check digit: weights 3,1,3,... from the right of the body."""
    if not value.isdigit() or len(value) < 2:
        return False
    body, check = value[:-1], int(value[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def gln_with_check_digit(body: str) -> str:
    """A 13-digit GLN from its first 12 digits (for tests and examples)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def _mod11(value: str) -> bool:
    if not value.isdigit() or int(value) == 0:
        return False
    body, check = value[:-1], int(value[-1])
    total = sum(int(d) * ((i % 6) + 2) for i, d in enumerate(reversed(body)))
    return (11 - total % 11) % 11 == check


def be_enterprise_ok(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9]{10}", value)) and int(value[8:]) == 97 - int(value[:8]) % 97


def _se_orgnr_ok(value: str) -> bool:
    if not re.fullmatch(r"[0-9]{10}", value):
        return False
    digits = [int(d) for d in value[:9]]
    total = 0
    for pos, d in enumerate(reversed(digits), 1):
        total += (d * 2) % 10 + (d * 2) // 10 if pos % 2 == 1 else d
    return (10 - total % 10) % 10 == int(value[9])


def _abn_ok(value: str) -> bool:
    if not re.fullmatch(r"[0-9]{11}", value):
        return False
    weights = (10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
    digits = [int(d) for d in value]
    digits[0] -= 1
    return sum(w * d for w, d in zip(weights, digits)) % 89 == 0


IDENTIFIER_RULES: dict[str, tuple[str, Callable[[str], bool], str]] = {
    "0088": ("PEPPOL-COMMON-R040", gln_ok, "GLN must have a valid format according to GS1 rules."),
    "0192": ("PEPPOL-COMMON-R041", lambda v: bool(re.fullmatch(r"[0-9]{9}", v)) and _mod11(v),
             "Norwegian organization number MUST be stated in the correct format."),
    "0184": ("PEPPOL-COMMON-R042", lambda v: bool(re.fullmatch(r"DK[0-9]{8}", v)),
             "Danish organization number (CVR) MUST be stated in the correct format."),
    "0208": ("PEPPOL-COMMON-R043", be_enterprise_ok, "Belgian enterprise number MUST be stated in the correct format."),
    "0007": ("PEPPOL-COMMON-R049", _se_orgnr_ok, "Swedish organization number MUST be stated in the correct format."),
    "0151": ("PEPPOL-COMMON-R050", _abn_ok, "Australian Business Number (ABN) MUST be stated in the correct format."),
}


# -- the rules ------------------------------------------------------------------------------------------------
def peppol_findings(tree) -> list[Finding]:
    root = tree.getroot()
    invoice = root.tag == f"{{{NS['Invoice']}}}Invoice"
    line_tag, qty_tag = ("InvoiceLine", "InvoicedQuantity") if invoice else ("CreditNoteLine", "CreditedQuantity")
    out: list[Finding] = []

    def fail(rule: str, message: str, node=None, flag: str = "fatal") -> None:
        out.append(Finding(rule, flag, f"[{rule}] {message}", _where(node) if node is not None else ""))

    # empty elements
    for node in root.iter():
        if isinstance(node.tag, str) and len(node) == 0 and not (node.text or "").strip():
            fail("PEPPOL-EN16931-R008", f"Document MUST not contain empty elements ({node.tag.split('}')[-1]}).", node)
    # document level
    profile = _text(root, "cbc:ProfileID")
    if not profile:
        fail("PEPPOL-EN16931-R001", "Business process MUST be provided.", root)
    match = PROFILE.match(profile)
    if not match:
        fail("PEPPOL-EN16931-R007", "Business process MUST be in the format 'urn:fdc:peppol.eu:2017:poacc:billing:NN:1.0' "
             "where NN indicates the process number.", root)
    if len(root.xpath("cbc:Note", namespaces=X)) > 1:
        fail("PEPPOL-EN16931-R002", "No more than one note is allowed on document level.", root)
    if not (root.xpath("cbc:BuyerReference", namespaces=X) or _text(root, "cac:OrderReference/cbc:ID")):
        fail("PEPPOL-EN16931-R003", "A buyer reference or purchase order reference MUST be provided.", root)
    if not _text(root, "cbc:CustomizationID").startswith(SPEC_ID):
        fail("PEPPOL-EN16931-R004", f"Specification identifier MUST have the value '{SPEC_ID}'.", root)
    if len(root.xpath("cac:TaxTotal[cac:TaxSubtotal]", namespaces=X)) != 1:
        fail("PEPPOL-EN16931-R053", "Only one tax total with tax subtotals MUST be provided.", root)
    tax_currency = _text(root, "cbc:TaxCurrencyCode")
    doc_currency = _text(root, "cbc:DocumentCurrencyCode")
    if len(root.xpath("cac:TaxTotal[not(cac:TaxSubtotal)]", namespaces=X)) != (1 if tax_currency else 0):
        fail("PEPPOL-EN16931-R054", "Only one tax total without tax subtotals MUST be provided when tax currency code is provided.", root)
    if tax_currency and tax_currency == doc_currency:
        fail("PEPPOL-EN16931-R005", "VAT accounting currency code MUST be different from invoice currency code when provided.", root)
    if not invoice and len(root.xpath("cac:AdditionalDocumentReference[cbc:DocumentTypeCode='50']", namespaces=X)) > 1:
        fail("PEPPOL-EN16931-R080", "Only one project reference is allowed on document level.", root)
    # parties
    for party, rule, who in (("AccountingCustomerParty", "PEPPOL-EN16931-R010", "Buyer"),
                             ("AccountingSupplierParty", "PEPPOL-EN16931-R020", "Seller")):
        for node in root.xpath(f"cac:{party}/cac:Party", namespaces=X):
            if not node.xpath("cbc:EndpointID", namespaces=X):
                fail(rule, f"{who} electronic address MUST be provided", node)
    # allowances and charges (document and line level)
    charges = root.xpath(f"cac:AllowanceCharge | cac:{line_tag}/cac:AllowanceCharge", namespaces=X)
    for ac in charges:
        factor, base = _text(ac, "cbc:MultiplierFactorNumeric"), _text(ac, "cbc:BaseAmount")
        if factor and not base:
            fail("PEPPOL-EN16931-R041", "Allowance/charge base amount MUST be provided when allowance/charge percentage is provided.", ac)
        if base and not factor:
            fail("PEPPOL-EN16931-R042", "Allowance/charge percentage MUST be provided when allowance/charge base amount is provided.", ac)
        if factor and base:
            amount, b, f = _dec(_text(ac, "cbc:Amount")) or Decimal(0), _dec(base), _dec(factor)
            if b is not None and f is not None and abs(amount - b * f / 100) > Decimal("0.02"):
                fail("PEPPOL-EN16931-R040", "Allowance/charge amount must equal base amount * percentage/100 if base amount and "
                     "percentage exists", ac)
        if _text(ac, "cbc:ChargeIndicator") not in ("true", "false"):
            fail("PEPPOL-EN16931-R043", "Allowance/charge ChargeIndicator value MUST equal 'true' or 'false'", ac)
    for ac in root.xpath(".//cac:Price/cac:AllowanceCharge", namespaces=X):
        if _text(ac, "cbc:ChargeIndicator") != "false":
            fail("PEPPOL-EN16931-R044", "Charge on price level is NOT allowed. Only value 'false' allowed.", ac)
        base, amount, price = _dec(_text(ac, "cbc:BaseAmount")), _dec(_text(ac, "cbc:Amount")), _dec(_text(ac, "../cbc:PriceAmount"))
        if _text(ac, "cbc:BaseAmount") and not (base is not None and amount is not None and price == base - amount):
            fail("PEPPOL-EN16931-R046", "Item net price MUST equal (Gross price - Allowance amount) when gross price is provided.", ac)
    # payment
    for pm in root.xpath("cac:PaymentMeans", namespaces=X):
        if _text(pm, "cbc:PaymentMeansCode") in ("49", "59") and not _text(pm, "cac:PaymentMandate/cbc:ID"):
            fail("PEPPOL-EN16931-R061", "Mandate reference MUST be provided for direct debit.", pm)
    # currency of every amount (the VAT total in accounting currency excepted)
    for name in AMOUNTS:
        for node in root.iter(f"{{{CBC}}}{name}"):
            _currency(node, doc_currency, fail)
    for node in root.xpath("cac:TaxTotal[cac:TaxSubtotal]/cbc:TaxAmount | .//cac:TaxSubtotal/cbc:TaxAmount", namespaces=X):
        _currency(node, doc_currency, fail)
    # lines
    period_start, period_end = _text(root, "cac:InvoicePeriod/cbc:StartDate"), _text(root, "cac:InvoicePeriod/cbc:EndDate")
    for line in root.xpath(f"cac:{line_tag}", namespaces=X):
        _line(line, qty_tag, fail)
        start, end = _text(line, "cac:InvoicePeriod/cbc:StartDate"), _text(line, "cac:InvoicePeriod/cbc:EndDate")
        if period_start and start and start < period_start:
            fail("PEPPOL-EN16931-R110", "Start date of line period MUST be within invoice period.", line)
        if period_end and end and end > period_end:
            fail("PEPPOL-EN16931-R111", "End date of line period MUST be within invoice period.", line)
    # code lists and formats
    for node in root.iter(f"{{{CBC}}}EmbeddedDocumentBinaryObject"):
        if node.get("mimeCode") is not None and node.get("mimeCode") not in MIME:
            fail("PEPPOL-EN16931-CL001", f"Mime code must be according to subset of IANA code list ({node.get('mimeCode')}).", node)
    for node in _amount_nodes(root):
        if node.get("currencyID") not in ISO4217:
            fail("PEPPOL-EN16931-CL007", f"Currency code must be according to ISO 4217:2005 ({node.get('currencyID')}).", node)
    for name in DATES:
        for node in root.iter(f"{{{CBC}}}{name}"):
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", (node.text or "").strip()) or not _is_date(node.text.strip()):
                fail("PEPPOL-EN16931-F001", f"A date MUST be formatted YYYY-MM-DD ({name} {node.text!r}).", node)
    for node in root.iter(f"{{{CBC}}}EndpointID"):
        scheme = node.get("schemeID")
        if scheme is not None and scheme not in EAS:
            fail("PEPPOL-EN16931-CL008", f"Electronic address identifier scheme must be from the codelist \"Electronic Address "
                 f"Identifier Scheme\" ({scheme}).", node)
    if match and match.group(1) == "01":
        code = _text(root, "cbc:InvoiceTypeCode" if invoice else "cbc:CreditNoteTypeCode")
        if code and code not in (INVOICE_TYPES if invoice else CREDIT_NOTE_TYPES):
            fail("PEPPOL-EN16931-P0100" if invoice else "PEPPOL-EN16931-P0101",
                 f"{'Invoice' if invoice else 'Credit note'} type code MUST be set according to the profile ({code}).", root)
    for node in _identifier_nodes(root):
        rule = IDENTIFIER_RULES.get(node.get("schemeID") or "")
        if rule is not None and not rule[1]((node.text or "").strip()):
            fail(rule[0], f"{rule[2]} ({(node.text or '').strip()})", node)
    return out


def _currency(node, doc_currency: str, fail) -> None:
    if node.get("currencyID") != doc_currency:
        fail("PEPPOL-EN16931-R051", "All currencyID attributes must have the same value as the invoice currency code (BT-5), "
             f"except for the invoice total VAT amount in accounting currency (BT-111) ({node.tag.split('}')[-1]} "
             f"{node.get('currencyID')}).", node)


def _amount_nodes(root) -> Iterable:
    for name in (*AMOUNTS, "TaxAmount"):
        yield from root.iter(f"{{{CBC}}}{name}")


def _identifier_nodes(root) -> Iterable:
    yield from root.iter(f"{{{CBC}}}EndpointID")
    yield from root.xpath(".//cac:PartyIdentification/cbc:ID | .//cbc:CompanyID", namespaces=X)


def _is_date(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text)
        return True
    except ValueError:
        return False


def _line(line, qty_tag: str, fail) -> None:
    amount = _dec(_text(line, "cbc:LineExtensionAmount")) or Decimal(0)
    qty_text = _text(line, f"cbc:{qty_tag}")
    quantity = _dec(qty_text) if qty_text else Decimal(1)
    price = _dec(_text(line, "cac:Price/cbc:PriceAmount")) or Decimal(0)
    base_text = _text(line, "cac:Price/cbc:BaseQuantity")
    base = _dec(base_text) if base_text else None
    divisor = base if base not in (None, Decimal(0)) else Decimal(1)
    allowances = sum((_dec(t) or Decimal(0) for t in line.xpath("cac:AllowanceCharge[normalize-space(cbc:ChargeIndicator)='false']"
                                                                "/cbc:Amount/text()", namespaces=X)), Decimal(0))
    charges = sum((_dec(t) or Decimal(0) for t in line.xpath("cac:AllowanceCharge[normalize-space(cbc:ChargeIndicator)='true']"
                                                             "/cbc:Amount/text()", namespaces=X)), Decimal(0))
    if quantity is not None:
        expected = quantity * (price / divisor) + round(charges, 2) - round(allowances, 2)
        if abs(amount - expected) > Decimal("0.02"):
            fail("PEPPOL-EN16931-R120", "Invoice line net amount MUST equal (Invoiced quantity * (Item net price/item price base "
                 f"quantity) + Sum of invoice line charge amount - sum of invoice line allowance amount ({amount} against "
                 f"{expected:.2f})", line)
    if base_text and not (base is not None and base > 0):
        fail("PEPPOL-EN16931-R121", "Base quantity MUST be a positive number above zero.", line)
    refs = line.xpath("cac:DocumentReference", namespaces=X)
    if len(refs) > 1:
        fail("PEPPOL-EN16931-R100", "Only one invoiced object is allowed pr line", line)
    if refs and _text(line, "cac:DocumentReference/cbc:DocumentTypeCode") != "130":
        fail("PEPPOL-EN16931-R101", "Element Document reference can only be used for Invoice line object", line)
    for bq in line.xpath("cac:Price/cbc:BaseQuantity[@unitCode]", namespaces=X):
        qty_nodes = line.xpath(f"cbc:{qty_tag}", namespaces=X)
        if qty_nodes and bq.get("unitCode") != qty_nodes[0].get("unitCode"):
            fail("PEPPOL-EN16931-R130", "Unit code of price base quantity MUST be same as invoiced quantity.", line)
