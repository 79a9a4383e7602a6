"""The bad-input catalogue (docs/bad-input.md): one test per case.

Each case is a real sync run on the session Prefect server, with the bad document next to good
ones, and asserts: the good documents are delivered; the error names the document (or, for a
configuration or connection problem, the integration and connection) and says what is wrong; the
bad document stays in the ledger as failed / needs-attention / pending, or, when the run stopped
before touching any document, the cursor did not move so the next run takes everything; and once
fixed it is delivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import tracemalloc
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker

from blocks.local_folder import LocalFolderConnection
from blocks.sftp import SftpConnection, parse_host_key
from blocks.webhook import WebhookConnection
from flows.checks import ConnectionCheckFailed, check_connections
from flows.sync import sync
from tasks.ledger import DELIVERED, FAILED, NEEDS_ATTENTION, PENDING
from tasks.sources.seed import pdf_bytes, write_document
from tests.connectors.harness_webhook import Receiver, new_secret, server_tls_context
from tests.fakes.base import self_signed_cert

MiB = 1024 * 1024
OPEN = (FAILED, NEEDS_ATTENTION, PENDING)


def hour_ago() -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=1)


def put(ws, doc_id: str, **kw) -> Path:
    """One settled inbox document of client acme, approved an hour ago."""
    kw.setdefault("client", "acme")
    kw.setdefault("approved_at", hour_ago())
    kw.setdefault("metadata", {"number": doc_id, "supplier": "Initech", "supplier_number": "S-1"})
    return write_document(ws.inbox, doc_id, **kw)


def goods(ws, n: int = 2, prefix: str = "GOOD") -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    for doc_id in ids:
        put(ws, doc_id)
    return ids


def backdate(*paths: Path) -> None:
    """Older than the inbox's settle time: not "still being written"."""
    old = time.time() - 3600
    for p in paths:
        os.utime(p, (old, old))


def run(key: str, **kw):
    return sync(integration=key, return_state=True, **kw)


def delivered_ids(state_or_result) -> list[str]:
    result = state_or_result.result() if hasattr(state_or_result, "result") else state_or_result
    return sorted(o["doc_id"] for o in result["outcomes"] if o["status"] in ("delivered", "already-present"))


def assert_delivered(ws, ids: list[str], folder: str = "acme/invoice") -> None:
    for doc_id in ids:
        assert (ws.out / folder / f"{doc_id}.pdf").read_bytes() == (ws.inbox / f"{doc_id}.pdf").read_bytes(), doc_id


def open_row(ws, key: str, doc_id: str) -> dict:
    """The document's open ledger row (failed, needs-attention or pending): it was not dropped."""
    rows = [r for r in ws.ledger().rows(key, doc_ids=[doc_id]) if r["status"] in OPEN]
    assert len(rows) == 1, ws.ledger().rows(key, doc_ids=[doc_id])
    return rows[0]


def assert_settled(ws, key: str, doc_id: str) -> None:
    """Delivered, and nothing about it left open."""
    rows = ws.ledger().rows(key, doc_ids=[doc_id])
    assert DELIVERED in {r["status"] for r in rows}, rows
    assert not [r for r in rows if r["status"] in OPEN], rows


def assert_untouched(ws, key: str) -> None:
    """The run stopped before any document: nothing recorded, nothing written, the cursor did not move."""
    assert ws.ledger().rows(key) == []
    assert ws.ledger().cursor(key) is None
    assert not any(ws.out.rglob("*"))


def logs_of(state) -> list[str]:
    APILogWorker.drain_all(timeout=5)

    async def read():
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
            )
            return [log.message for log in logs]

    return asyncio.run(read())


# -- the inbox --------------------------------------------------------------------------------------


def test_malformed_json(workspace):
    key = workspace.integration()
    good = goods(workspace)
    put(workspace, "BAD-JSON")
    (workspace.inbox / "BAD-JSON.json").write_text('{"client": "acme", "type": "inv')  # cut off mid-write
    backdate(workspace.inbox / "BAD-JSON.json")

    state = run(key)
    assert state.is_failed()
    assert "BAD-JSON: BAD-JSON.json is not valid UTF-8 JSON (Unterminated string" in state.message
    assert_delivered(workspace, good)
    row = open_row(workspace, key, "BAD-JSON")
    assert row["status"] == FAILED and "not valid UTF-8 JSON" in row["last_error"]

    put(workspace, "BAD-JSON")  # the capture system writes it again, whole
    assert delivered_ids(sync(integration=key)) == ["BAD-JSON"]
    assert_delivered(workspace, ["BAD-JSON"])
    assert_settled(workspace, key, "BAD-JSON")


def test_missing_pdf(workspace):
    key = workspace.integration()
    good = goods(workspace)
    put(workspace, "NO-PDF")
    (workspace.inbox / "NO-PDF.pdf").unlink()

    state = run(key)
    assert state.is_failed() and "NO-PDF: NO-PDF.pdf is missing (metadata without file)" in state.message
    assert_delivered(workspace, good)
    assert "NO-PDF.pdf is missing" in open_row(workspace, key, "NO-PDF")["last_error"]

    (workspace.inbox / "NO-PDF.pdf").write_bytes(pdf_bytes("NO-PDF"))  # the PDF arrives late
    backdate(workspace.inbox / "NO-PDF.pdf")
    assert delivered_ids(sync(integration=key)) == ["NO-PDF"]
    assert_delivered(workspace, ["NO-PDF"])
    assert_settled(workspace, key, "NO-PDF")


def test_zero_byte_pdf(workspace):
    key = workspace.integration()
    good = goods(workspace)
    put(workspace, "EMPTY", pdf=b"")

    state = run(key)
    assert state.is_failed() and "EMPTY: EMPTY.pdf is empty (0 bytes)" in state.message
    assert_delivered(workspace, good)
    assert not (workspace.out / "acme/invoice/EMPTY.pdf").exists()
    assert "is empty (0 bytes)" in open_row(workspace, key, "EMPTY")["last_error"]

    (workspace.inbox / "EMPTY.pdf").write_bytes(pdf_bytes("EMPTY"))
    backdate(workspace.inbox / "EMPTY.pdf")
    assert delivered_ids(sync(integration=key)) == ["EMPTY"]
    assert_delivered(workspace, ["EMPTY"])
    assert_settled(workspace, key, "EMPTY")


def _write_big_pdf(path: Path, size: int) -> tuple[str, int]:
    """A PDF header, `size` bytes of binary comment, a trailer; written and hashed in 1 MiB chunks."""
    digest, total = hashlib.sha256(), 0
    with path.open("wb") as fh:
        head = b"%PDF-1.7\n%"
        fh.write(head)
        digest.update(head)
        total = len(head)
        while total < size:
            chunk = os.urandom(min(MiB, size - total))
            fh.write(chunk)
            digest.update(chunk)
            total += len(chunk)
        tail = b"\n%%EOF\n"
        fh.write(tail)
        digest.update(tail)
    return digest.hexdigest(), total + len(tail)


def _sha256_of(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def test_200_mb_pdf_is_streamed_and_delivered_intact(workspace):
    key = workspace.integration()
    good = goods(workspace)
    put(workspace, "BIG-200MB")
    expected = _write_big_pdf(workspace.inbox / "BIG-200MB.pdf", 200 * MiB)
    backdate(workspace.inbox / "BIG-200MB.pdf")

    tracemalloc.start()
    try:
        result = sync(integration=key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # read whole even once, the file alone would be 200 MiB: everything is streamed in 1 MiB chunks
    assert peak < 20 * MiB, f"peak Python memory {peak / MiB:.0f} MiB"
    assert delivered_ids(result) == sorted(good + ["BIG-200MB"])
    assert _sha256_of(workspace.out / "acme/invoice/BIG-200MB.pdf") == expected
    assert_delivered(workspace, good)
    assert_settled(workspace, key, "BIG-200MB")
    assert list((workspace.out / "acme/invoice").glob(".*")) == []  # no temp file left behind


def test_unknown_document_type(workspace):
    key = workspace.integration(filters={"document_types": ["invoice", "credit_note"]})
    good = goods(workspace)
    put(workspace, "ODD-TYPE", doc_type="delivery_note")  # a type no integration of the client takes
    meta_path = put(workspace, "NO-TYPE")
    meta = json.loads(meta_path.read_text())
    meta["type"] = None  # no type at all
    meta_path.write_text(json.dumps(meta))
    backdate(meta_path)

    state = run(key)
    assert state.is_failed()
    assert "NO-TYPE: bad metadata in NO-TYPE.json: field 'type' is missing or not a string" in state.message
    assert "ODD-TYPE" not in state.message  # not this integration's document: not a failure of its run ...
    warnings = [m for m in logs_of(state) if "ODD-TYPE" in m]
    assert warnings == [  # ... but never silently ignored: nobody takes it, and the run says so
        "document ODD-TYPE: type 'delivery_note' is taken by no integration of client acme; add it to an "
        "integration's filters.document_types, then backfill (docroute sync ... --since)"
    ]
    assert_delivered(workspace, good)
    assert "field 'type' is missing" in open_row(workspace, key, "NO-TYPE")["last_error"]
    assert workspace.ledger().rows(key, doc_ids=["ODD-TYPE"]) == []  # stays in the inbox, untouched
    assert (workspace.inbox / "ODD-TYPE.json").exists()

    # fixed: the capture system sends a type, and the client's integration takes delivery notes too
    meta["type"] = "invoice"
    meta_path.write_text(json.dumps(meta))
    backdate(meta_path)
    workspace.integration(filters={"document_types": ["invoice", "credit_note", "delivery_note"]})
    assert delivered_ids(sync(integration=key)) == ["NO-TYPE", "ODD-TYPE"]
    assert_delivered(workspace, ["NO-TYPE"])
    assert_delivered(workspace, ["ODD-TYPE"], folder="acme/delivery_note")
    assert_settled(workspace, key, "NO-TYPE")


def test_non_utf8_metadata(workspace):
    key = workspace.integration(mapping={"folder": "{client}/{doc_type}", "filename": "{supplier}_{number}.{ext}"})
    for doc_id in ("GOOD-0", "GOOD-1"):
        put(workspace, doc_id, metadata={"number": doc_id, "supplier": "Initech"})
    latin = put(workspace, "LATIN-1", metadata={"number": "L1", "supplier": "Société Générale"})
    latin.write_bytes(latin.read_text(encoding="utf-8").encode("latin-1"))  # a capture system writing Latin-1
    surrogate = put(workspace, "SURR-1", metadata={"number": "S1", "supplier": "SURROGATE"})
    # valid JSON, but "\udce9" is half a character: no file system, database or UTF-8 encoder takes it
    surrogate.write_text(surrogate.read_text().replace("SURROGATE", "Soci\\udce9t\\udce9"))
    backdate(latin, surrogate)

    state = run(key)
    assert state.is_failed()
    assert "LATIN-1: LATIN-1.json is not valid UTF-8 JSON ('utf-8' codec can't decode byte 0xe9" in state.message
    assert "SURR-1: SURR-1.json is not valid UTF-8 JSON (lone surrogate" in state.message
    assert sorted(p.name for p in (workspace.out / "acme/invoice").iterdir()) == ["Initech_GOOD-0.pdf", "Initech_GOOD-1.pdf"]
    assert open_row(workspace, key, "LATIN-1")["status"] == FAILED
    assert open_row(workspace, key, "SURR-1")["status"] == FAILED

    latin.write_bytes(latin.read_bytes().decode("latin-1").encode("utf-8"))  # fixed: UTF-8 as it should be
    surrogate.write_text(surrogate.read_text().replace("\\udce9", "\\u00e9"))
    backdate(latin, surrogate)
    assert delivered_ids(sync(integration=key)) == ["LATIN-1", "SURR-1"]
    names = sorted(unicodedata.normalize("NFC", p.name) for p in (workspace.out / "acme/invoice").iterdir())
    assert "Société Générale_L1.pdf" in names and "Société_S1.pdf" in names
    assert_settled(workspace, key, "LATIN-1")
    assert_settled(workspace, key, "SURR-1")


def test_very_long_supplier_names(workspace):
    key = workspace.integration(
        mapping={"folder": "{client}/{supplier}", "filename": "{supplier}_{number}.{ext}", "sidecar": True}
    )
    suppliers = {
        "LONG-ASCII": "Globex Industrial Holding International " * 40,  # 1600 characters
        "LONG-CJK": "株式会社グローバル産業ホールディングス" * 30,  # 3 bytes a character
        "LONG-UMLAUT": "Ü" * 1000,  # 2 bytes a character
    }
    for doc_id, supplier in suppliers.items():
        put(workspace, doc_id, metadata={"number": doc_id, "supplier": supplier})
    put(workspace, "GOOD-0", metadata={"number": "GOOD-0", "supplier": "Initech"})

    result = sync(integration=key)
    assert delivered_ids(result) == sorted([*suppliers, "GOOD-0"])
    files = [p for p in workspace.out.rglob("*") if p.is_file()]
    assert len(files) == 2 * 4  # PDF and sidecar each
    for p in files:
        for name in p.relative_to(workspace.out).parts:
            # a file system takes 255 bytes per name: 150 characters of 株 would be 450
            assert len(name) <= 150 and len(name.encode()) <= 200, name
    for doc_id, supplier in suppliers.items():
        (pdf,) = [p for p in files if p.name.endswith(f"_{doc_id}.pdf") or (p.suffix == ".pdf" and supplier[:20] in p.name)]
        assert pdf.read_bytes() == (workspace.inbox / f"{doc_id}.pdf").read_bytes()
        assert pdf.with_suffix(".json").is_file()  # the sidecar keeps the shortened stem
        row = workspace.ledger().rows(key, doc_ids=[doc_id])[0]
        assert row["status"] == DELIVERED and row["supplier"] == supplier[:300]


# -- mapping ----------------------------------------------------------------------------------------

EVIL = [
    "../../../../../../tmp/docroute-escaped",
    "/etc/cron.d/docroute",
    "..",
    "a\\b/../../c",
    "..\\..\\..\\Windows\\System32",
    "C:\\evil",
    "~root/.ssh",
    "\r\n../x",
    "\u2025/\uff0e\uff0e\uff0fetc",  # "‥" and fullwidth "../": NFKD makes real dots and a slash of them
    " . ",
]
# every placeholder a folder or file name can use: built-ins, identifiers, metadata (standard and
# declared), mapped fields (lookup, constant, template) and dates
FOLDER = ("{external_id}/{client}/{integration}/{doc_type}/{sub_org}/{supplier}/{project}/{vendor}/{const}/"
          "{label}/{version}/{original_name}/{number}/{issue_date}/{approved_at:%Y/%m}/{year}")
FOLDER_LEVELS = 17


def test_path_traversal_in_every_placeholder(workspace):
    lookups = workspace.config_dir / "lookups" / "vendors.csv"
    lookups.write_text("supplier_number,vendor_code\nS-1,V-1\n" + "".join(
        f"EVIL-{i},{json.dumps(v)}\n" for i, v in enumerate(EVIL)))
    key = workspace.integration(
        identifiers={"external_id": "../../ext\\id\x00/.."},  # NUL too: YAML can carry one
        metadata_fields=["project"],
        mapping={
            "fields": {
                "vendor": {"lookup": "vendors", "key": "{supplier_number}", "column": "vendor_code"},
                "const": {"constant": "../../const"},
                "label": "{supplier}/{number}",
            },
            "lookups": {"vendors": {"file": "vendors.csv", "key": "supplier_number"}},
            "folder": FOLDER,
            "filename": "{doc_id}_{number}_{original_name}.{ext}",
            "sidecar": True,
        },
    )
    clean = {"number": "N-1", "supplier": "Initech", "supplier_number": "S-1", "project": "P", "issue_date": "2026-03-01"}
    put(workspace, "GOOD-0", metadata=clean, sub_organisation="finance", version="1")
    ids = []
    for i, value in enumerate(EVIL):
        doc_id = f"EVIL-{i}..\\..\\x"  # a document id is a file name: no "/" or NUL, but anything else
        meta_path = put(workspace, doc_id, doc_type=value, sub_organisation=value, version=value,
                        metadata={k: value for k in ("number", "supplier", "project", "issue_date")} | {"supplier_number": f"EVIL-{i}"})
        evil_name = f"..\\{i}\\..\\scan.p\\df" if i % 2 else f"-{i} ..\\.pdf"  # the PDF's own name is a value too
        (workspace.inbox / f"{doc_id}.pdf").rename(workspace.inbox / evil_name)
        meta = json.loads(meta_path.read_text())
        meta["files"] = [evil_name]
        meta_path.write_text(json.dumps(meta))
        backdate(meta_path, workspace.inbox / evil_name)
        ids.append(doc_id)
    # a NUL in a document's metadata is refused (PostgreSQL would refuse it in the ledger), by name
    put(workspace, "NUL-1", metadata=clean | {"supplier": "a\x00b/../../c"}, sub_organisation="finance", version="1")
    outside_before = sorted(p.name for p in workspace.root.parent.iterdir())
    root_before = sorted(p.name for p in workspace.root.iterdir() if not p.name.startswith("ledger"))

    state = run(key)
    assert state.is_failed() and "NUL-1: NUL-1.json is not valid UTF-8 JSON (a NUL character" in state.message
    assert open_row(workspace, key, "NUL-1")["status"] == FAILED
    delivered = sorted(r["doc_id"] for r in workspace.ledger().rows(key, statuses=(DELIVERED,)))
    assert delivered == sorted(ids + ["GOOD-0"])  # sanitised, so delivered: nothing to fix
    files = [p for p in workspace.out.rglob("*") if p.is_file()]
    assert len(files) == 2 * (len(EVIL) + 1)
    for p in files:
        rel = p.relative_to(workspace.out)  # rglob never leaves out/; resolve() follows no symlink out either
        assert p.resolve().is_relative_to(workspace.out.resolve())
        assert len(rel.parts) == FOLDER_LEVELS + 1, rel  # a value never adds or removes a folder level
        for seg in rel.parts:
            assert seg not in (".", "..") and ".." not in seg and not seg.startswith((".", " ")), rel
            assert "\\" not in seg and not any(unicodedata.category(c) == "Cc" for c in seg), rel
    assert sorted(p.name for p in workspace.root.parent.iterdir()) == outside_before
    assert sorted(p.name for p in workspace.root.iterdir() if not p.name.startswith("ledger")) == root_before
    assert not Path("/tmp/docroute-escaped").exists() and not Path("/etc/cron.d/docroute").exists()
    for doc_id in ids:
        assert_settled(workspace, key, doc_id)

    put(workspace, "NUL-1", metadata=clean | {"supplier": "a b/../../c"}, sub_organisation="finance", version="1")  # fixed
    assert delivered_ids(sync(integration=key)) == ["NUL-1"]
    assert_settled(workspace, key, "NUL-1")


def test_same_document_id_with_different_content_is_a_new_version(workspace):
    key = workspace.integration()
    put(workspace, "VER-1", pdf=pdf_bytes("VER-1 first"))
    put(workspace, "GOOD-0")
    assert delivered_ids(sync(integration=key)) == ["GOOD-0", "VER-1"]

    put(workspace, "VER-1", pdf=pdf_bytes("VER-1 corrected"))  # same id, new content
    put(workspace, "GOOD-1")
    assert delivered_ids(sync(integration=key)) == ["GOOD-1", "VER-1"]
    assert_delivered(workspace, ["VER-1"])  # the destination holds the new version
    rows = workspace.ledger().rows(key, doc_ids=["VER-1"])
    assert [r["status"] for r in rows] == [DELIVERED, DELIVERED] and rows[0]["version"] != rows[1]["version"]

    # a destination that refuses to replace a file (if_exists=fail): a clear error, the others go on
    LocalFolderConnection(base_folder=str(workspace.out), if_exists="fail").save(f"out-{workspace.tag}", overwrite=True)
    put(workspace, "VER-1", pdf=pdf_bytes("VER-1 third"))
    put(workspace, "GOOD-2")
    state = run(key)
    assert state.is_failed()
    assert "VER-1: " in state.message and "already exists with other content (connection policy if_exists=fail)" in state.message
    assert_delivered(workspace, ["GOOD-2"])
    assert open_row(workspace, key, "VER-1")["status"] == FAILED
    assert b"corrected" in (workspace.out / "acme/invoice/VER-1.pdf").read_bytes()  # left as it was

    (workspace.out / "acme/invoice/VER-1.pdf").unlink()  # the receiver took the old version away
    assert delivered_ids(sync(integration=key)) == ["VER-1"]
    assert_delivered(workspace, ["VER-1"])
    assert_settled(workspace, key, "VER-1")


def test_approved_at_in_the_future(workspace):
    key = workspace.integration()
    good = goods(workspace)
    future = datetime.now(timezone.utc) + timedelta(days=2)
    put(workspace, "FUTURE-1", approved_at=future)

    state = run(key)
    result = state.result()
    outcome = {o["doc_id"]: o for o in result["outcomes"]}["FUTURE-1"]
    expected = f"document FUTURE-1: approved_at {future.isoformat()} is in the future"
    assert outcome["status"] == "waiting" and outcome["error"].startswith(expected)
    assert any(m.startswith(expected) for m in logs_of(state))
    assert_delivered(workspace, good)
    assert not (workspace.out / "acme/invoice/FUTURE-1.pdf").exists()
    row = open_row(workspace, key, "FUTURE-1")
    assert row["status"] == PENDING and "is in the future" in row["last_error"]
    # it keeps waiting, visibly, run after run
    again = {o["doc_id"]: o["status"] for o in sync(integration=key)["outcomes"]}
    assert again == {"FUTURE-1": "waiting"}

    put(workspace, "FUTURE-1", approved_at=hour_ago())  # the capture system corrects the time
    assert delivered_ids(sync(integration=key)) == ["FUTURE-1"]
    assert_delivered(workspace, ["FUTURE-1"])
    assert_settled(workspace, key, "FUTURE-1")


def test_broken_lookup_table(workspace):
    csv = workspace.config_dir / "lookups" / "vendors.csv"
    csv.write_text("supplier_number,vendor_code\nS-1,V-1\nS-2,V-2,oops,extra\n")  # a ragged row
    key = workspace.integration(mapping={
        "fields": {"vendor": {"lookup": "vendors", "key": "{supplier_number}", "column": "vendor_code"}},
        "lookups": {"vendors": {"file": "vendors.csv", "key": "supplier_number"}},
        "folder": "{client}/{doc_type}",
        "filename": "{doc_id}.{ext}",
    })
    good = goods(workspace)
    put(workspace, "LOOKUP-MISS", metadata={"number": "LM", "supplier": "Unknown Ltd", "supplier_number": "S-9"})

    state = run(key)
    assert state.is_failed()
    assert (f"integration 'acme/invoices': mapping.lookups.vendors.file: cannot read CSV {csv}: ParserError: "
            "Error tokenizing data. C error: Expected 2 fields in line 3, saw 4") in state.message
    assert_untouched(workspace, key)  # a table problem is the integration's: no document touched

    csv.write_text("supplier_number,vendor_code\nS-1,V-1\n")  # fixed, but S-9 is not in it
    state = run(key)
    assert state.is_failed()
    assert ("LOOKUP-MISS: mapping.fields.vendor: key 'S-9' not found in lookup table 'vendors' "
            f"({csv}); add it to the CSV or give the field a default") in state.message
    assert_delivered(workspace, good)
    assert "key 'S-9' not found" in open_row(workspace, key, "LOOKUP-MISS")["last_error"]

    # S-9 twice with different codes: ambiguous, never last-wins; the same row twice (S-1) is harmless
    csv.write_text("supplier_number,vendor_code\nS-1,V-1\nS-9,V-9\nS-1,V-1\nS-9,V-99\n")
    state = run(key)
    assert state.is_failed()
    assert ("LOOKUP-MISS: mapping.fields.vendor: key 'S-9' is on 2 rows with different values in lookup table "
            f"'vendors' ({csv}, lines 3, 5); keep one row per key") in state.message
    warnings = [m for m in logs_of(state) if "has 1 key(s) on rows with different values" in m]
    assert warnings and "'S-9' on lines 3, 5" in warnings[0]

    csv.write_text("supplier_number,vendor_code\nS-1,V-1\nS-9,V-9\nS-1,V-1\n")
    assert delivered_ids(sync(integration=key)) == ["LOOKUP-MISS"]
    assert_settled(workspace, key, "LOOKUP-MISS")


# -- configuration and connections ------------------------------------------------------------------


def test_unknown_block(workspace):
    from deployments.config import ConfigError

    tag = workspace.tag
    other = workspace.integration("elsewhere", mapping={"folder": "elsewhere/{doc_type}", "filename": "{doc_id}.{ext}"})
    key = workspace.integration(source=f"capture-inbox-folder/gone-{tag}", connection=f"sftp-connection/gone-{tag}")
    typo = workspace.integration("typo", connection=f"ftp-connection/x-{tag}", filters={"document_types": ["credit_note"]})
    good = goods(workspace)

    state = run(key)
    assert state.is_failed()
    with pytest.raises(ConfigError) as info:
        state.result()
    text = str(info.value)
    where = f"{workspace.config_dir / 'clients' / 'acme.yaml'}: integration 'invoices'"
    assert f"{where}: source: block 'capture-inbox-folder/gone-{tag}' does not exist on the Prefect server" in text
    assert f"{where}: connection: block 'sftp-connection/gone-{tag}' does not exist on the Prefect server" in text
    assert "create it in the Prefect UI (Blocks)" in text
    assert_untouched(workspace, key)
    with pytest.raises(ConfigError, match=r"integration 'typo': connection: unknown block type 'ftp-connection'; known types: "):
        sync(integration=typo)
    assert workspace.ledger().rows(typo) == []

    assert delivered_ids(sync(integration=other)) == good  # the client's other integration goes on
    workspace.integration(source=workspace.source_ref, connection=workspace.connection_ref)  # fixed
    assert delivered_ids(sync(integration=key)) == good
    assert_delivered(workspace, good)


@pytest.fixture
def sftp_target(workspace, sftp_server):
    """A folder on the real sshd, and a function saving the workspace's SFTP block with overrides."""
    server = sftp_server
    root = server.mkdir(f"bad-{workspace.tag}")
    name = f"sftp-{workspace.tag}"

    def save(**overrides) -> str:
        fields = dict(host=server.host, port=server.port, username=server.user, password=server.password,
                      host_key=server.known_hosts_line, base_folder=str(root), connect_timeout=10, timeout=10)
        SftpConnection(**{**fields, **overrides}).save(name, overwrite=True)
        return f"sftp-connection/{name}"

    return server, root, save


def test_wrong_password(workspace, sftp_target):
    server, root, save = sftp_target
    wrong = "wrong-" + server.password
    ref = save(password=wrong)
    key = workspace.integration(connection=ref)
    other = workspace.integration("to-folder", mapping={"folder": "folder/{doc_type}", "filename": "{doc_id}.{ext}"})
    good = goods(workspace, 3)

    state = run(key)
    assert state.is_failed()
    assert state.message.endswith(
        f"acme/invoices: cannot open connection {ref}: sftp {server.user}@127.0.0.1:{server.port}{root}: "
        f"authentication failed for user {server.user} on 127.0.0.1:{server.port} (wrong password or key)"
    )
    assert wrong not in state.message and server.password not in state.message
    assert_untouched(workspace, key)  # the documents wait for the next run; none is parked for it
    assert list(root.iterdir()) == []
    assert delivered_ids(sync(integration=other)) == good  # other integrations go on

    save()  # the right password
    assert delivered_ids(sync(integration=key)) == good
    for doc_id in good:
        assert (root / "acme/invoice" / f"{doc_id}.pdf").read_bytes() == (workspace.inbox / f"{doc_id}.pdf").read_bytes()


def test_host_key_mismatch(workspace, sftp_target):
    server, root, save = sftp_target
    other_key = (server.workdir / "user_plain.pub").read_text().split()[:2]  # a real ed25519 key, not the host's
    ref = save(host_key=f"[127.0.0.1]:{server.port} {' '.join(other_key)}")
    key = workspace.integration(connection=ref)
    good = goods(workspace)
    logins = server.logins()

    state = run(key)
    assert state.is_failed()
    _, pinned = parse_host_key(" ".join(other_key))
    _, actual = parse_host_key(server.host_key_pub)
    assert state.message.startswith(f"acme/invoices: cannot open connection {ref}: sftp {server.user}@127.0.0.1:{server.port}")
    assert (f"host key mismatch for 127.0.0.1:{server.port}: pinned {pinned}, server presented ssh-ed25519 {actual}. "
            "Connection refused; if the server's key really changed, update host_key on the connection") in state.message
    assert server.logins() == logins  # never logged in: the password never went to that server
    assert_untouched(workspace, key)
    assert list(root.iterdir()) == []

    save()  # the real host key pinned
    assert delivered_ids(sync(integration=key)) == good
    assert sorted(p.name for p in (root / "acme/invoice").iterdir()) == [f"{i}.pdf" for i in good]


def test_wrong_webhook_credentials(workspace):
    """A webhook has no login: a wrong token shows on the first POST (401). The run stops there and
    fails naming the connection; no document is parked for it, however many runs fail so."""
    secret = new_secret()
    receiver = Receiver([secret], bearer="the-right-token")
    try:
        name = f"auth-{workspace.tag}"
        WebhookConnection(url=receiver.url, signing_secrets=[secret], auth="bearer", bearer_token="a-wrong-token", timeout=5).save(name)
        ref = f"webhook-connection/{name}"
        key = workspace.integration(connection=ref, max_attempts=2)
        good = goods(workspace, 4)
        for n in range(1, 4):  # more runs than max_attempts
            state = run(key)
            assert state.is_failed()
            assert f"acme/invoices: connection {ref} refused the credentials: document GOOD-0: webhook" in state.message
            assert "answered 401" in state.message and "credentials refused" in state.message
            assert "Fix the connection block" in state.message and "none is parked" in state.message
            assert "a-wrong-token" not in state.message and "the-right-token" not in state.message
            assert len(receiver.attempts) == n  # one refused POST per run, then it stops sending
            rows = {d: open_row(workspace, key, d) for d in good}
            assert {d: r["status"] for d, r in rows.items()} == {d: FAILED for d in good}  # never needs-attention
            assert "not sent: " + ref + " refused the credentials" in rows["GOOD-1"]["last_error"]
        WebhookConnection(url=receiver.url, signing_secrets=[secret], auth="bearer", bearer_token="the-right-token", timeout=5).save(name, overwrite=True)
        assert delivered_ids(sync(integration=key)) == good
        assert sorted(r.document["id"] for r in receiver.deliveries.values()) == good
    finally:
        receiver.stop()


def test_invalid_tls_certificate(workspace, tmp_path):
    cert, key_file = self_signed_cert(tmp_path)
    secret = new_secret()
    receiver = Receiver([secret], tls=server_tls_context(cert, key_file))
    try:
        name = f"tls-{workspace.tag}"
        WebhookConnection(url=receiver.url, signing_secrets=[secret], timeout=5).save(name)
        ref = f"webhook-connection/{name}"
        key = workspace.integration(connection=ref)
        good = goods(workspace)

        state = run(key)
        assert state.is_failed()
        assert state.message.endswith(
            f"acme/invoices: cannot open connection {ref}: TLS certificate of webhook {receiver.url} not accepted: "
            "self-signed certificate. Fix the endpoint's certificate, or set ca_bundle on the connection to the CA "
            "that issued it"
        )
        assert_untouched(workspace, key)  # a certificate problem parks no document
        assert receiver.attempts == [] and receiver.deliveries == {}
        with pytest.raises(ConnectionCheckFailed, match=rf"{name}.*self-signed certificate|self-signed certificate"):
            check_connections(connections=[ref])

        WebhookConnection(url=receiver.url, signing_secrets=[secret], timeout=5, ca_bundle=str(cert)).save(name, overwrite=True)
        assert delivered_ids(sync(integration=key)) == good
        received = {r.document["id"]: r.files for r in receiver.deliveries.values()}
        for doc_id in good:
            assert received[doc_id][f"{doc_id}.pdf"] == (workspace.inbox / f"{doc_id}.pdf").read_bytes()
    finally:
        receiver.stop()
