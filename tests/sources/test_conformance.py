"""Every source runs this one suite against its real server (like the connector suite, and the Singer SDK's tap tests).

Adding a source: write tests/sources/harness_<name>.py with a fixture returning a SourceHarness,
and add the fixture's name below. One line.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from tasks.documents import Candidate, Document, SourceProblem
from tasks.sources.base import Scan, Source, SourceAbility, Window

SOURCE_HARNESSES = [
    "folder_inbox_harness",
    "sftp_inbox_harness",
    "s3_inbox_harness",
    "dropbox_inbox_harness",
    "onedrive_inbox_harness",
    "gdrive_inbox_harness",
    "smb_inbox_harness",
    "getmyinvoices_harness",
    "exact_harness",
    "docbits_harness",
]

NOW = datetime.now(timezone.utc).replace(microsecond=0)  # whole seconds: what API sources' timestamps carry
APPROVED = NOW - timedelta(hours=3)


@pytest.fixture(params=SOURCE_HARNESSES)
def harness(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def source(harness):
    with harness.block().source() as src:
        yield src


def window(start: datetime = NOW - timedelta(days=30), end: datetime | None = None) -> Window:
    return Window(start, end or datetime.now(timezone.utc))


def scan(source: Source, client: str = "acme", cursor: str | None = None, w: Window | None = None) -> Scan:
    result = source.scan(client, cursor, w or window())
    assert result.cursor is None or isinstance(result.cursor, str)
    return result


def changed(result: Scan, seen: dict[str, str]) -> set[str]:
    """What a scan brings that the engine has not seen: new ids, or known ids with another fingerprint."""
    return {c.doc_id for c in result.candidates if seen.get(c.doc_id) != c.fingerprint}


def test_check_passes_against_the_real_server(source):
    result = source.check()
    assert result.ok, result.message
    assert source.label in result.message


def test_a_broken_source_fails_its_check_clearly_without_a_secret(harness):
    block = harness.broken_block()
    if block is None:
        pytest.skip("no broken variant")
    src = block.source()
    try:
        result = src.check()
    finally:
        src.close()
    assert not result.ok
    assert src.label in result.message
    for secret in harness.secrets:
        assert secret not in result.message


def test_lists_the_clients_documents_with_their_fields(harness, source):
    harness.put("C-1", approved_at=APPROVED, fields={"number": "INV-1", "supplier": "Globex BV", "total": "121.00"})
    harness.put("C-2", doc_type="credit_note", approved_at=APPROVED)
    harness.put("C-3", status="pending")
    harness.put("G-1", client="globex", approved_at=APPROVED)
    result = scan(source)
    found = {c.doc_id: c for c in result.candidates}
    assert set(found) == {"C-1", "C-2", "C-3"} and result.problems == []
    one = found["C-1"]
    assert (one.client, one.type, one.status, one.approved_at) == ("acme", "invoice", "approved", APPROVED)
    assert one.approved and one.fields == {"number": "INV-1", "supplier": "Globex BV", "total": "121.00"}
    assert found["C-2"].type == "credit_note"
    assert found["C-3"].status == "pending" and not found["C-3"].approved
    assert all(c.fingerprint for c in found.values())
    assert [c.doc_id for c in scan(source, "globex").candidates] == ["G-1"]


def test_a_second_scan_from_the_cursor_brings_only_what_is_new_or_changed(harness, source):
    harness.put("R-1", approved_at=APPROVED)
    harness.put("R-2", approved_at=APPROVED)
    first = scan(source)
    seen = {c.doc_id: c.fingerprint for c in first.candidates}
    assert set(seen) == {"R-1", "R-2"}
    again = scan(source, cursor=first.cursor, w=window(end=datetime.now(timezone.utc)))
    assert changed(again, seen) == set()  # nothing happened: nothing to look at
    harness.put("R-3", approved_at=APPROVED)
    harness.put("R-2", approved_at=APPROVED, pdf=b"%PDF-1.7\ncorrected version\n")
    third = scan(source, cursor=again.cursor or first.cursor, w=window(end=datetime.now(timezone.utc)))
    assert changed(third, seen) == {"R-2", "R-3"}
    if not type(source).lists_everything:
        assert {c.doc_id for c in third.candidates} <= {"R-2", "R-3"}


def test_a_late_approval_is_found_on_the_next_scan(harness, source):
    harness.put("L-1", status="pending")
    first = scan(source)
    pending = {c.doc_id: c for c in first.candidates}["L-1"]
    assert not pending.approved
    approved_at = NOW - timedelta(days=2)  # approved late, with an approval time before the last scan
    harness.put("L-1", approved_at=approved_at)
    late = {c.doc_id: c for c in scan(source, cursor=first.cursor).candidates}["L-1"]
    assert late.approved and late.approved_at == approved_at
    assert late.fingerprint != pending.fingerprint


def test_problems_are_reported_on_every_scan_and_never_dropped(harness, source):
    harness.put("P-OK", approved_at=APPROVED)
    harness.put_unreadable("P-BAD", approved_at=APPROVED)
    first = scan(source)
    assert [c.doc_id for c in first.candidates] == ["P-OK"]
    assert [p.doc_id for p in first.problems] == ["P-BAD"]
    problem = first.problems[0]
    assert "P-BAD" in problem.message and problem.message.startswith("document P-BAD")
    second = scan(source, cursor=first.cursor)
    assert [p.doc_id for p in second.problems] == ["P-BAD"]  # still there: reported again
    found = source.find("P-BAD", "acme")
    assert isinstance(found, SourceProblem) and found.doc_id == "P-BAD"


def test_files_stream_with_their_size_and_sha256(harness, source):
    xml = b'<?xml version="1.0"?><Invoice><ID>F-1</ID></Invoice>'
    contents = harness.put("F-1", approved_at=APPROVED, pdf=b"%PDF-1.7\n" + bytes(range(256)) * 1200, xml=xml)
    cand = source.find("F-1", "acme")
    assert isinstance(cand, Candidate)
    doc = source.fetch(cand)
    assert isinstance(doc, Document)
    assert [f.name for f in doc.files] == list(contents)  # main file first
    assert doc.files[0].media_type == "application/pdf" and doc.files[1].media_type == "application/xml"
    for f, data in zip(doc.files, contents.values()):
        assert (f.size, f.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        for _ in range(2):  # every open() is a fresh stream from the start
            with f.open() as fh:
                assert fh.read() == data
    assert doc.version == source.fetch(source.find("F-1", "acme")).version  # stable while unchanged
    harness.put("F-1", approved_at=APPROVED, pdf=b"%PDF-1.7\nnew content\n", xml=xml)
    changed_doc = source.fetch(source.find("F-1", "acme"))
    assert changed_doc.version != doc.version


def test_find_is_per_client(harness, source):
    harness.put("N-1", approved_at=APPROVED)
    assert isinstance(source.find("N-1", "acme"), Candidate)
    assert source.find("N-1", "globex") is None  # another client's document is not there for it
    unknown = source.find("N-404", "acme")
    assert unknown is None or (isinstance(unknown, SourceProblem) and "N-404" in unknown.message)


def test_a_document_gone_between_scan_and_fetch_is_a_problem_not_an_error(harness, source):
    harness.put("D-1", approved_at=APPROVED)
    cand = {c.doc_id: c for c in scan(source).candidates}["D-1"]
    harness.delete("D-1")
    gone = source.fetch(cand)
    assert isinstance(gone, SourceProblem) and "D-1" in gone.message


def test_mark_exported_is_idempotent(harness, source):
    if SourceAbility.MARK_EXPORTED not in source.abilities:
        pytest.skip("source cannot mark documents exported")
    harness.put("X-1", approved_at=APPROVED)
    harness.put("X-2", approved_at=APPROVED)
    doc = source.fetch(source.find("X-1", "acme"))
    source.mark_exported(doc)
    source.mark_exported(doc)  # again: a retry after a crash between marking and recording
    assert harness.exported("X-1") and not harness.exported("X-2")
    assert source.find("X-1", "acme") is None  # exported: no longer a document to take, nor a problem
    assert [c.doc_id for c in scan(source).candidates] == ["X-2"]
