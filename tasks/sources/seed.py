"""Writes documents into a capture inbox the way a capture system does: files first, JSON last.

Used by the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import json
import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SUPPLIERS = [
    ("S-1001", "Globex Industrial BV", "NL812345678B01"),
    ("S-1002", "Initech Office Supplies GmbH", "DE298765432"),
    ("S-1003", "Umbrella Logistics NV", "BE0456789123"),
    ("S-1004", "Stark Components Ltd", "GB123456789"),
    ("S-1005", "Société Générale d'Électricité SA", "FR40303265045"),
    ("S-1006", "Wayne Facility Services", "BE0987654321"),
]


def pdf_bytes(title: str, size: int | None = None) -> bytes:
    """A small valid PDF showing `title`; padded with a comment block to `size` bytes if asked."""
    text = title.replace("(", "[").replace(")", "]")
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    if size and size > len(out) + 200:
        pad = size - len(out) - 200
        out += b"%" + os.urandom(pad // 2).hex().encode()[: pad - 2] + b"\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write_document(
    inbox: Path,
    doc_id: str,
    *,
    client: str,
    doc_type: str = "invoice",
    status: str = "approved",
    approved_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    sub_organisation: str | None = None,
    tags: list[str] | None = None,
    pdf: bytes | None = None,
    pdf_size: int | None = None,
    xml: bool = False,
    version: str | None = None,
    settled: bool = True,
) -> Path:
    """Write <id>.pdf (and <id>.xml), then <id>.json. `settled` backdates the files' mtime."""
    inbox.mkdir(parents=True, exist_ok=True)
    files = [f"{doc_id}.pdf"]
    (inbox / files[0]).write_bytes(pdf if pdf is not None else pdf_bytes(f"{doc_type} {doc_id}", pdf_size))
    if xml:
        files.append(f"{doc_id}.xml")
        (inbox / files[1]).write_text(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">'
            f"<ID>{doc_id}</ID></Invoice>\n"
        )
    meta = {
        "client": client,
        "type": doc_type,
        "sub_organisation": sub_organisation,
        "tags": tags or [],
        "status": status,
        "approved_at": approved_at.isoformat() if approved_at else None,
        "metadata": metadata or {},
        "files": files,
    }
    if version:
        meta["version"] = version
    path = inbox / f"{doc_id}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)  # the JSON appears whole, after the files
    if settled:
        old = datetime.now().timestamp() - 3600
        for name in files + [path.name]:
            os.utime(inbox / name, (old, old))
    return path


def invoice_metadata(rng: random.Random, number: str, issued: datetime) -> dict[str, Any]:
    supplier_number, supplier, vat = rng.choice(SUPPLIERS)
    net = round(rng.uniform(50, 9000), 2)
    tax = round(net * 0.21, 2)
    return {
        "number": number,
        "supplier": supplier,
        "supplier_number": supplier_number,
        "supplier_vat": vat,
        "issue_date": issued.date().isoformat(),
        "due_date": (issued + timedelta(days=30)).date().isoformat(),
        "currency": "EUR",
        "net": f"{net:.2f}",
        "tax": f"{tax:.2f}",
        "total": f"{net + tax:.2f}",
        "po_number": f"PO-{rng.randint(40000, 49999)}",
    }


def seed_demo_inbox(inbox: Path, now: datetime | None = None, seed: int = 7) -> dict[str, int]:
    """Two clients, a few dozen invoices, credit notes and order confirmations; some not yet
    approved, two approved before their integration's activation, one malformed."""
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    counts = {"approved": 0, "pending": 0, "malformed": 0, "before_activation": 0}
    plan = [("acme", "ACME", 24, ["finance", "logistics"]), ("globex", "GLX", 18, [None]), ("initech", "INI", 8, [None])]
    for client, prefix, n, suborgs in plan:
        for i in range(1, n + 1):
            doc_type = rng.choices(["invoice", "credit_note", "order_confirmation"], weights=[6, 2, 2])[0]
            code = {"invoice": "INV", "credit_note": "CN", "order_confirmation": "OC"}[doc_type]
            doc_id = f"{prefix}-{code}-{1000 + i}"
            approved_at = now - timedelta(hours=rng.uniform(1, 40))
            status = "approved" if rng.random() > 0.15 else "pending"
            counts["approved" if status == "approved" else "pending"] += 1
            write_document(
                inbox,
                doc_id,
                client=client,
                doc_type=doc_type,
                status=status,
                approved_at=approved_at if status == "approved" else None,
                metadata=invoice_metadata(rng, f"{code}-2026-{1000 + i}", approved_at),
                sub_organisation=rng.choice(suborgs),
                tags=rng.sample(["urgent", "recurring", "capex", "opex"], k=rng.randint(0, 2)),
                xml=doc_type == "invoice" and rng.random() < 0.5,
                pdf_size=rng.randint(30_000, 90_000),
            )
        # approved long before the client's integrations were activated: never exported
        before = datetime(2025, 12, 15, 9, 30, tzinfo=timezone.utc)  # the sample configs activate 2026-01-01
        write_document(
            inbox,
            f"{prefix}-INV-0999",
            client=client,
            approved_at=before,
            metadata=invoice_metadata(rng, "INV-2025-0999", before),
            sub_organisation=suborgs[0],
        )
        counts["before_activation"] += 1
    # the capture system wrote this one's metadata but its PDF never arrived
    write_document(
        inbox, "ACME-INV-2001", client="acme", approved_at=now - timedelta(hours=2),
        metadata=invoice_metadata(rng, "INV-2026-2001", now), sub_organisation="finance",
    )
    (inbox / "ACME-INV-2001.pdf").unlink()
    counts["malformed"] += 1
    return counts
