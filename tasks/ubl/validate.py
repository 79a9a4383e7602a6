"""Validation of a UBL 2.1 invoice or credit note before it is sent, in three layers:

1. the OASIS UBL 2.1 XML Schemas (schemas/ubl-2.1/maindoc, lxml), rule id "UBL-XSD";
2. the EN 16931 business rules as CEN publishes them for UBL (schemas/en16931/EN16931-UBL-validation.xslt,
   the Schematron compiled to XSLT 2.0, run by Saxon through tasks/xslt.py): BR-*, BR-CO-*, BR-<category>-*,
   UBL-CR-*, UBL-SR-*, UBL-DT-* and the code lists (BR-CL-*), each reported under its own id;
3. the Peppol BIS Billing 3.0 rules docroute implements (tasks/ubl/peppol.py): PEPPOL-EN16931-R*, -CL*, -F*,
   -P*, PEPPOL-COMMON-R04*.

A finding flagged "fatal" (the Schematron's flag; every schema error) makes the document invalid;
"warning" findings are reported (docroute preview) but do not stop it. `check()` raises UblInvalid
naming the document and every broken rule; the engine records it as the document's permanent error.
Results are remembered per content (SHA-256), so the connector's check of what the mapping already
checked costs nothing.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

from tasks.ubl.common import NS, Finding
from tasks.ubl.peppol import peppol_findings
from tasks.xslt import XsltError, compile_stylesheet, parse_xml

SCHEMAS = Path(__file__).with_name("schemas")
XSD = {
    "Invoice": SCHEMAS / "ubl-2.1" / "maindoc" / "UBL-Invoice-2.1.xsd",
    "CreditNote": SCHEMAS / "ubl-2.1" / "maindoc" / "UBL-CreditNote-2.1.xsd",
}
CEN_XSLT = SCHEMAS / "en16931" / "EN16931-UBL-validation.xslt"
SVRL = "http://purl.oclc.org/dsdl/svrl"
CHECKED = ("UBL 2.1 schema (OASIS XSD), EN 16931 rules (CEN UBL validation artefact 1.3.16), "
           "Peppol BIS Billing 3.0 rules (docroute's tasks/ubl/peppol.py)")
MAX_LISTED = 25  # broken rules named in one error message (all are in the findings)


class UblInvalid(ValueError):
    """A UBL document that breaks rules; `findings` holds every one (fatal and warnings)."""

    def __init__(self, message: str, findings: list[Finding]):
        super().__init__(message)
        self.findings = findings


def root_kind(data: bytes) -> str | None:
    """"Invoice" or "CreditNote" when `data` is a UBL 2.1 invoice or credit note (by its root), else None."""
    head = data[:4096]
    if b"urn:oasis:names:specification:ubl:schema:xsd:" not in head:
        return None
    try:
        root = parse_xml(data, "UBL").getroot()
    except XsltError:
        return None
    for kind, ns in NS.items():
        if root.tag == f"{{{ns}}}{kind}":
            return kind
    return None


_schemas: dict[str, object] = {}
_schema_lock = threading.Lock()


def _schema(kind: str):
    from lxml import etree

    with _schema_lock:
        if kind not in _schemas:
            _schemas[kind] = etree.XMLSchema(etree.parse(str(XSD[kind])))
        return _schemas[kind]


def schema_findings(tree, kind: str) -> list[Finding]:
    schema = _schema(kind)
    with _schema_lock:  # an lxml XMLSchema keeps its error log on the object: one validation at a time
        ok = schema.validate(tree)
        errors = list(schema.error_log)
    if ok:
        return []
    return [Finding("UBL-XSD", "fatal", " ".join(e.message.split()), f"line {e.line}") for e in errors]


def cen_findings(data: bytes) -> list[Finding]:
    """The EN 16931 rules: the CEN artefact's SVRL failed asserts (and successful reports), with their flags."""
    from lxml import etree

    sheet = compile_stylesheet(CEN_XSLT)  # compiled once per process (tasks/xslt.py caches it)
    svrl = etree.fromstring(sheet.transform(data, what="UBL document"))
    out = []
    for node in svrl.iter(f"{{{SVRL}}}failed-assert", f"{{{SVRL}}}successful-report"):
        text = " ".join("".join(node.itertext()).split())
        out.append(Finding(node.get("id") or "EN16931", (node.get("flag") or "fatal").lower(), text, node.get("location") or ""))
    return out


_memo: OrderedDict[str, list[Finding]] = OrderedDict()
_memo_lock = threading.Lock()


def validate(data: bytes) -> list[Finding]:
    """Every finding of the three layers for a UBL invoice or credit note (empty: valid, no warning)."""
    digest = hashlib.sha256(data).hexdigest()
    with _memo_lock:
        if digest in _memo:
            _memo.move_to_end(digest)
            return list(_memo[digest])
    try:
        tree = parse_xml(data, "UBL document")
    except XsltError as exc:
        return [Finding("UBL-XSD", "fatal", str(exc))]
    kind = next((k for k, ns in NS.items() if tree.getroot().tag == f"{{{ns}}}{k}"), None)
    if kind is None:
        return [Finding("UBL-XSD", "fatal", f"the root element {tree.getroot().tag} is not a UBL 2.1 Invoice or CreditNote")]

    findings = schema_findings(tree, kind) + cen_findings(data) + peppol_findings(tree)
    with _memo_lock:
        _memo[digest] = findings
        while len(_memo) > 256:
            _memo.popitem(last=False)
    return list(findings)


def check(data: bytes, what: str) -> list[Finding]:
    """Validate; raise UblInvalid naming `what` (the document and file) and each fatal rule. Returns the
    warnings of a valid document."""
    findings = validate(data)
    fatal = [f for f in findings if f.fatal]
    if fatal:
        listed = "; ".join(str(f) for f in fatal[:MAX_LISTED])
        more = f"; and {len(fatal) - MAX_LISTED} more" if len(fatal) > MAX_LISTED else ""
        raise UblInvalid(f"{what}: UBL is not valid Peppol BIS Billing 3.0 ({len(fatal)} broken rule"
                         f"{'s' if len(fatal) != 1 else ''}): {listed}{more}", findings)
    return [f for f in findings if not f.fatal]
