"""Checks every fault scenario ends with: exactly once (or counted duplicates), no partial file
under a final name, and a reconcile run that finds no difference."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flows.reconcile import reconcile
from tasks.ledger import DELIVERED
from tasks.sources.seed import write_document
from tests.conftest import confirmations


def seed_docs(ws, n: int, prefix: str = "F", pdf_size: int | None = None) -> list[str]:
    """n approved invoices of client acme, approved an hour ago; ids <prefix>-0000..."""
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    for doc_id in ids:
        write_document(ws.inbox, doc_id, client="acme", approved_at=when, metadata={"number": doc_id, "supplier": "Globex"}, pdf_size=pdf_size)
    return ids


def assert_exactly_once_in_folder(ws, key: str, folder: Path, ids: list[str], sidecar: bool = False) -> None:
    """One file per document under its final name, byte-identical to the source (so never a partial
    one), no temp file left, every document recorded delivered exactly once."""
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert [n for n in names if n.startswith(".")] == [], "temp/partial files left behind"
    expected = sorted([f"{i}.pdf" for i in ids] + ([f"{i}.json" for i in ids] if sidecar else []))
    assert names == expected
    for doc_id in ids:
        assert (folder / f"{doc_id}.pdf").read_bytes() == (ws.inbox / f"{doc_id}.pdf").read_bytes(), doc_id
        if sidecar:
            assert json.loads((folder / f"{doc_id}.json").read_text())["doc_id"] == doc_id
    assert confirmations(ws, key) == {i: 1 for i in ids}
    assert {r["doc_id"]: r["status"] for r in ws.ledger().rows(key)} == {i: DELIVERED for i in ids}


def assert_reconciles(key: str, n_files: int) -> dict:
    """The reconcile flow finds no difference and has compared every delivered file."""
    result = reconcile(integration=key)
    assert result["listable"] and result["differences"] == [], result
    assert result["listed"] == n_files and result["partial"] == 0
    return result


def assert_webhook_exactly_once(ws, key: str, receiver, ids: list[str]) -> int:
    """Each document accepted exactly once by the receiver after dedup on webhook-id, with the
    exact bytes of its PDF (a cut-off body never passes the signature check); every delivered
    document recorded once. Returns the raw duplicates the receiver counted (at-least-once)."""
    got = sorted(r.document["id"] for r in receiver.deliveries.values())
    assert got == sorted(ids)  # one webhook-id per document, each received
    for r in receiver.deliveries.values():
        doc_id = r.document["id"]
        assert r.files[f"{doc_id}.pdf"] == (ws.inbox / f"{doc_id}.pdf").read_bytes(), doc_id
    assert confirmations(ws, key) == {i: 1 for i in ids}
    return sum(receiver.repeats.values())


def assert_webhook_reconciles(ws, key: str, receiver) -> None:
    """A webhook cannot be listed: the flow says so; the ledger is compared with what the receiver saw."""
    from flows.reconcile import ExpectedDoc, compare
    from tasks.connectors.base import RemoteFile

    result = reconcile(integration=key)
    assert result["listable"] is False and "cannot be listed" in result["message"]
    # The ledger holds the receiver's id for the delivery ("rcv-<webhook-id>"), or the webhook-id itself
    # when the answer's body was cut off after its 2xx status line: both name the webhook-id.
    rows = ws.ledger().rows(key, statuses=(DELIVERED,))
    expected = [ExpectedDoc(r["doc_id"], r["version"], r["remote_ref"].removeprefix("rcv-")) for r in rows]
    seen = [RemoteFile(wid, sum(map(len, r.files.values())), wid) for wid, r in receiver.deliveries.items()]
    diffs, counts = compare(expected, seen)
    assert diffs == [] and counts["delivered"] == len(seen), (diffs, counts)
