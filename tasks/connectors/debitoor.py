"""Debitoor (SumUp Invoices) connector: each document becomes an expense with its main file attached
(tasks/debitoor_api.py; what the public contract lacks: blocks/debitoor.py, docs/accounting-and-einvoicing.md).

Per document: every file is read and checked first; the main file is uploaded to the block's
`files_url` [?] and the expense posted to POST /api/expenses/v4?autonumber=true with its fileId, the
supplier (name, VAT number, country), the date and its lines (the metadata's lines, else one line of
the net amount at the document's VAT rate), the first line's description ending in
"[docroute <idempotency key>]". Debitoor publishes no idempotency key and no filter on the expense
list, so before any retry sends anything (a repeat, the next run after a failure, a crash between
upload and record) the list is read and an expense carrying the key is the delivery already made.
A file uploaded by an attempt that then failed stays unused in Debitoor (no delete is published).
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from blocks.debitoor import NO_UPLOAD
from tasks.connectors.api_common import not_processed, read_package, render
from tasks.connectors.base import (
    CheckResult,
    Connector,
    ConnectorOptions,
    Delivery,
    Package,
    PermanentDeliveryError,
)
from tasks.debitoor_api import DebitoorClient
from tasks.errors import RemoteError


class DebitoorOptions(ConnectorOptions):
    """An integration's Debitoor settings (connection_options)."""

    description: str = "{supplier} {number}"  # the expense line's description (GetMyInvoices asks what goes there)


def _dec(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value).strip().replace(",", ".")) if value not in (None, "") else None
    except InvalidOperation:
        return None


class DebitoorConnector(Connector):
    options_model = DebitoorOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._api: DebitoorClient | None = None
        self._lock = threading.Lock()
        self._tried: set[str] = set()
        self._known: dict[str, str] = {}
        self._absent: set[str] = set()  # keys just looked up and not found

    @property
    def api(self) -> DebitoorClient:
        if self._api is None:
            self._api = DebitoorClient(self.connection, self.label)
        return self._api

    def open(self) -> None:
        self.api.http.check_tls()

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    def check(self) -> CheckResult:
        try:
            count = len(self.api.expenses("connection check"))
        except RemoteError as exc:
            return CheckResult(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        block = self.connection
        if block.attach_file and not block.files_url:
            return CheckResult(False, f"{self.label}: the token works ({count} expenses), but files cannot be attached: {NO_UPLOAD}")
        files = f"files uploaded to {block.files_url}" if block.attach_file else "expenses created WITHOUT their file (attach_file: false)"
        return CheckResult(True, f"{self.label}: token accepted, {count} expenses listed; {files}")

    @staticmethod
    def marker(package: Package) -> str:
        return f"[docroute {package.idempotency_key}]"

    def _find(self, package: Package) -> str | None:
        marker = self.marker(package)
        for expense in self.api.expenses(f"document {package.doc_id}: lookup"):
            lines = expense.get("lines") or []
            if not expense.get("deletedDate") and any(marker in str(line.get("description") or "") for line in lines):
                return str(expense["id"])
        return None

    def _values(self, package: Package) -> dict[str, Any]:
        return {**package.fields, **{k: v for k, v in package.values.items() if v not in (None, "")}}

    def _lines(self, package: Package, values: dict[str, Any]) -> list[dict[str, Any]]:
        block = self.connection
        description = render(self.options.description, values) or package.doc_id
        raw = values.get("lines")
        lines: list[dict[str, Any]] = []
        if isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
            for item in raw:
                net, rate = _dec(item.get("net")), _dec(item.get("tax_rate"))
                if net is None or rate is None:
                    raise PermanentDeliveryError(f"document {package.doc_id}: every line needs net and tax_rate for a Debitoor expense")
                lines.append({"description": str(item.get("description") or description), "netAmount": float(net),
                              "taxRate": float(rate), "priceDisplayType": "net"})
        else:
            net, tax, total = _dec(values.get("net")), _dec(values.get("tax")), _dec(values.get("total"))
            if net is not None and tax is not None and net != 0:
                rate = (tax / net * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
                lines.append({"description": description, "netAmount": float(net), "taxRate": float(rate), "priceDisplayType": "net"})
            elif total is not None and block.default_tax_rate is not None:
                lines.append({"description": description, "grossAmount": float(total), "taxRate": block.default_tax_rate,
                              "priceDisplayType": "gross"})
            else:
                raise PermanentDeliveryError(
                    f"document {package.doc_id}: a Debitoor expense needs its amounts: the metadata's net and tax, or lines, or "
                    f"a total with the connection's default_tax_rate")
        for line in lines:
            if block.category_id:
                line["categoryId"] = block.category_id
        lines[0]["description"] = f"{lines[0]['description']} {self.marker(package)}".strip()
        return lines

    def _expense(self, package: Package, file_id: str | None) -> dict[str, Any]:
        values = self._values(package)
        issued = str(values.get("issue_date") or datetime.now(timezone.utc).date().isoformat())[:10]
        expense: dict[str, Any] = {"date": issued, "lines": self._lines(package, values)}
        if file_id:
            expense["fileId"] = file_id
        supplier, vat = values.get("supplier"), values.get("supplier_vat")
        if supplier:
            expense["supplierName"] = str(supplier)
        if vat:
            vat = re.sub(r"\s", "", str(vat)).upper()
            expense["supplierCiNumber"] = vat
            if re.match(r"^[A-Z]{2}", vat):
                expense["supplierCountry"] = "GR" if vat[:2] == "EL" else vat[:2]
        return expense

    def deliver(self, package: Package) -> Delivery:
        contents = read_package(package)  # every file verified before anything is sent
        block, key, what = self.connection, package.idempotency_key, f"document {package.doc_id}"
        with self._lock:
            known, repeat = self._known.get(key), key in self._tried and key not in self._absent
            self._tried.add(key)
            self._absent.discard(key)
        found = known or (self._find(package) if repeat else None)
        main = package.main
        others = [f.name for f in package.files[1:]]
        if found:
            return Delivery(remote_ref=f"debitoor:expense/{found}", already_present=True,
                            detail={"expense": found, "not_attached": others})
        file_id = None
        if block.attach_file:
            if not block.files_url:
                raise PermanentDeliveryError(f"{what}: {self.label}: {NO_UPLOAD}")
            answer = not_processed(lambda: self.api.http.json(self.api.http.post(
                block.files_url, what=f"{what}: file upload", files={"file": (main.name, contents[main.name], main.media_type)}),
                f"{what}: file upload"))
            file_id = str((answer or {}).get("id") or "")
            if not file_id:
                raise PermanentDeliveryError(f"{what}: {self.label} answered the file upload without an id: {answer!r:.200}")
        body = self._expense(package, file_id)
        made = not_processed(lambda: self.api.http.json(self.api.http.post(
            "expenses/v4", what=f"{what}: expense", params={"autonumber": "true"}, json=body), f"{what}: expense"))
        expense_id = str((made or {}).get("id") or "")
        if not expense_id:
            raise PermanentDeliveryError(f"{what}: {self.label} answered the expense without an id: {made!r:.200}")
        with self._lock:
            self._known[key] = expense_id
        return Delivery(remote_ref=f"debitoor:expense/{expense_id}",
                        detail={"expense": expense_id, "file": file_id, "number": (made or {}).get("number"), "not_attached": others})

    def lookup(self, package: Package) -> Delivery | None:
        found = self._find(package)
        with self._lock:
            self._tried.add(package.idempotency_key)
            if found:
                self._known[package.idempotency_key] = found
            else:
                self._absent.add(package.idempotency_key)
        if not found:
            return None
        return Delivery(remote_ref=f"debitoor:expense/{found}", already_present=True,
                        detail={"expense": found, "not_attached": [f.name for f in package.files[1:]]})

    def remove_partial(self, package: Package) -> None:
        """Before a retry of a failed attempt: find an expense the attempt made (its answer lost), so the retry does
        not make a second one. Nothing is removed from Debitoor (no delete of a file or an expense is used)."""
        with self._lock:
            settled = package.idempotency_key in self._known or package.idempotency_key in self._absent
        if not settled:
            self.lookup(package)
