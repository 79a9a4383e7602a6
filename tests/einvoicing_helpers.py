"""Set-ups shared by the accounting and e-invoicing tests: documents with invoice metadata, and integrations
whose connection is the local access point, Exact Online or Debitoor (saved as real blocks on the
session's Prefect server)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from blocks.access_point import AccessPointConnection
from blocks.debitoor import DebitoorConnection
from blocks.exact_online_connection import ExactOnlineConnection
from tasks.sources.seed import write_document
from tests.fakes.access_point import AccessPointAPI, block_fields
from tests.fakes.debitoor_api import DebitoorAPI, debitoor_fields
from tests.fakes.exact_upload_api import ExactAPI, exact_fields

IDENTIFIERS = {"external_id": "EXT1", "vat_number": "BE0123456789", "exact_division": "123456"}
UBL = {"seller": {"name": "{supplier}", "vat": "{supplier_vat}", "city": "Rotterdam"},
       "buyer": {"name": "ACME NV", "vat": "{vat_number}", "city": "Brussels"}}


def invoice_meta(doc_id: str, rng: random.Random | None = None, **over) -> dict:
    rng = rng or random.Random(doc_id)
    net = round(rng.uniform(50, 900), 2)
    tax = round(net * 0.21, 2)
    return {"number": doc_id, "supplier": "Globex Industrial BV", "supplier_vat": "NL812345678B01",
            "issue_date": "2026-03-02", "due_date": "2026-04-01", "currency": "EUR", "net": f"{net:.2f}",
            "tax": f"{tax:.2f}", "total": f"{net + tax:.2f}", "po_number": f"PO-{doc_id}", "iban": "NL91ABNA0417164300", **over}


def seed_invoices(ws, n: int, prefix: str = "E", client: str = "acme", doc_type: str = "invoice", pdf_size: int | None = 4000,
                  **meta) -> list[str]:
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    for doc_id in ids:
        write_document(ws.inbox, doc_id, client=client, doc_type=doc_type, approved_at=when,
                       metadata=invoice_meta(doc_id, **meta), pdf_size=pdf_size)
    return ids


def client_with_identifiers(ws, client: str = "acme", **identifiers) -> None:
    ws.clients.setdefault(client, {"client": client, "identifiers": {**IDENTIFIERS, **identifiers}, "integrations": []})


def access_point_integration(ws, fake: AccessPointAPI, name: str = "to-ap", block: str | None = None, mapping: dict | None = None,
                             company: str | None = None, **overrides) -> tuple[str, str]:
    """(integration key, connection ref) of an integration to the fake access point, with mapping.ubl."""
    client_with_identifiers(ws)
    ref = block or save_access_point(ws, fake, company=company)
    key = ws.integration(name=name, connection=ref, mapping={"folder": "", "filename": "{doc_id}.{ext}", "ubl": UBL, **(mapping or {})},
                         **overrides)
    return key, ref


def save_access_point(ws, fake: AccessPointAPI, suffix: str = "", company: str | None = None, **fields) -> str:
    name = f"ap-{ws.tag}{suffix}"
    AccessPointConnection(**{**block_fields(fake, company), **fields}).save(name, overwrite=True)
    return f"access-point-connection/{name}"


def save_exact(ws, fake: ExactAPI, suffix: str = "", **fields) -> str:
    name = f"exact-{ws.tag}{suffix}"
    ExactOnlineConnection(**{**exact_fields(fake), **fields}).save(name, overwrite=True)
    return f"exact-online-connection/{name}"


def save_debitoor(ws, fake: DebitoorAPI, suffix: str = "", **fields) -> str:
    name = f"debitoor-{ws.tag}{suffix}"
    DebitoorConnection(**{**debitoor_fields(fake), **fields}).save(name, overwrite=True)
    return f"debitoor-connection/{name}"
