"""What the UBL modules share: the UBL 2.1 namespaces, the Peppol BIS Billing 3.0 specification id,
and a Finding (one broken rule) that the validators report."""

from __future__ import annotations

from dataclasses import dataclass

NS = {
    "Invoice": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "CreditNote": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
}
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
SPEC_ID = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"


@dataclass(frozen=True)
class Finding:
    rule: str  # "UBL-XSD", "BR-CO-15", "PEPPOL-EN16931-R003"
    flag: str  # "fatal" or "warning"
    message: str
    location: str = ""

    @property
    def fatal(self) -> bool:
        return self.flag == "fatal"

    def __str__(self) -> str:
        text = self.message if self.message.startswith(f"[{self.rule}]") else f"[{self.rule}] {self.message}"
        return text + (f" (at {self.location})" if self.location and self.rule == "UBL-XSD" else "")
