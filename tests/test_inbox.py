"""Capture inbox folder source, beyond the source conformance suite: what the inbox convention
reads and refuses (malformed metadata, files outside the inbox, young files), versions and
fingerprints, streams, archive after transfer, and the windowed scan's skipping."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from blocks.capture_inbox import CaptureInboxFolder
from tasks.documents import Candidate, Document, SourceProblem
from tasks.sources.base import Source, Window
from tasks.sources.seed import pdf_bytes, write_document
from tests.conftest import opened_files, utc

APPROVED = utc(2026, 3, 5, 10, 30)


@pytest.fixture
def inbox(tmp_path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def source(inbox) -> Source:
    return CaptureInboxFolder(path=str(inbox), settle_seconds=2.0).source()


def backdate(*paths: Path, seconds: float = 3600) -> None:
    old = time.time() - seconds
    for p in paths:
        os.utime(p, (old, old))


def write(inbox: Path, doc_id: str, client: str = "acme", **kw) -> Path:
    kw.setdefault("approved_at", APPROVED)
    kw.setdefault("metadata", {"number": doc_id, "supplier": "Globex"})
    return write_document(inbox, doc_id, client=client, **kw)


def write_meta(inbox: Path, doc_id: str, meta: dict | bytes | str, settled: bool = True) -> Path:
    path = inbox / f"{doc_id}.json"
    if isinstance(meta, dict):
        meta = json.dumps(meta)
    if isinstance(meta, str):
        meta = meta.encode()
    path.write_bytes(meta)
    if settled:
        backdate(path)
    return path


def document(source: Source, doc_id: str, client: str = "acme") -> Document | SourceProblem:
    cand = source.find(doc_id, client)
    assert isinstance(cand, Candidate), cand
    return source.fetch(cand)


EVERYTHING = Window(utc(2000, 1, 1), utc(2100, 1, 1))


def candidates(source: Source, client: str, window: Window = EVERYTHING) -> tuple[list[Candidate], list[SourceProblem]]:
    scan = source.scan(client, None, window)
    return scan.candidates, scan.problems


# -- candidates -----------------------------------------------------------------------------------


def test_candidates_are_only_the_wanted_clients_documents(inbox, source):
    write(inbox, "ACME-1", sub_organisation="finance", tags=["urgent"])
    write(inbox, "ACME-2", doc_type="credit_note")
    write(inbox, "GLX-1", client="globex")
    found, problems = candidates(source, "acme")
    assert problems == []
    assert [c.doc_id for c in found] == ["ACME-1", "ACME-2"]
    assert found[0].client == "acme" and found[0].sub_organisation == "finance" and found[0].tags == ["urgent"]
    assert found[1].type == "credit_note"
    assert all(c.approved_at == APPROVED and c.approved_at.tzinfo is not None for c in found)
    assert [c.doc_id for c in candidates(source, "globex")[0]] == ["GLX-1"]
    assert candidates(source, "initech") == ([], [])
    assert source.find("GLX-1", "acme") is None  # not this client's
    assert isinstance(source.find("GLX-1", "globex"), Candidate)


def test_a_scan_with_a_window_skips_metadata_known_to_fall_outside_it(inbox, source):
    from datetime import timedelta

    march = Window(utc(2026, 3, 1), utc(2026, 3, 31), ranged=True)  # a backfill chunk's window
    write(inbox, "IN-1")  # approved in March
    write(inbox, "OUT-1", approved_at=APPROVED - timedelta(days=60))
    write(inbox, "GLX-1", client="globex")
    write_meta(inbox, "NOT-APPROVED", {"client": "acme", "type": "invoice", "status": "draft"})
    (inbox / "NOT-APPROVED.pdf").write_bytes(pdf_bytes("x"))
    write_meta(inbox, "BROKEN", "{not json")
    backdate(*inbox.iterdir())
    first, _ = candidates(source, "acme", march)  # reads every metadata file once
    assert sorted(c.doc_id for c in first) == ["IN-1", "NOT-APPROVED", "OUT-1"]  # the window is the caller's to apply

    with opened_files() as opened:
        found, problems = candidates(source, "acme", march)
    read = sorted(Path(p).name for p in opened if p.endswith(".json"))
    assert read == ["BROKEN.json", "IN-1.json"]  # unreadable ones are always read again: their problem is reported
    assert [c.doc_id for c in found] == ["IN-1"] and [p.doc_id for p in problems] == ["BROKEN"]

    # a changed file is read again: OUT-1 approved again in March now
    meta = json.loads((inbox / "OUT-1.json").read_text())
    meta["approved_at"] = APPROVED.isoformat()
    write_meta(inbox, "OUT-1", meta)
    assert sorted(c.doc_id for c in candidates(source, "acme", march)[0]) == ["IN-1", "OUT-1"]
    # a scheduled run's scan skips nothing for its window (every document counts, whenever approved),
    # only what it knows to be another client's
    with opened_files() as opened:
        assert sorted(c.doc_id for c in candidates(source, "acme")[0]) == ["IN-1", "NOT-APPROVED", "OUT-1"]
    assert sorted(Path(p).name for p in opened if p.endswith(".json")) == ["BROKEN.json", "IN-1.json", "NOT-APPROVED.json", "OUT-1.json"]


def test_naive_approval_time_is_utc_and_unapproved_has_none(inbox, source):
    write_meta(inbox, "A", {"client": "acme", "type": "invoice", "status": "approved", "approved_at": "2026-03-05T10:30:00"})
    (inbox / "A.pdf").write_bytes(pdf_bytes("A"))
    backdate(inbox / "A.pdf")
    write(inbox, "B", status="pending", approved_at=None)
    found, problems = candidates(source, "acme")
    assert problems == []
    assert {c.doc_id: c.approved_at for c in found} == {"A": APPROVED, "B": None}


def test_missing_inbox_folder_is_an_error(tmp_path):
    src = CaptureInboxFolder(path=str(tmp_path / "nope")).source()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        candidates(src, "acme")


def test_hidden_and_temporary_files_are_ignored(inbox, source):
    write(inbox, "ACME-1")
    write_meta(inbox, ".ACME-2", {"client": "acme", "type": "invoice", "status": "approved"})
    (inbox / ".ACME-3.json.tmp").write_text("{")
    found, problems = candidates(source, "acme")
    assert [c.doc_id for c in found] == ["ACME-1"] and problems == []


# -- problems ---------------------------------------------------------------------------------------


def test_invalid_json_is_transient_while_young_and_permanent_when_old(inbox, source):
    write(inbox, "GOOD")
    path = write_meta(inbox, "BAD", '{"client": "acme", "type": ', settled=False)
    found, problems = candidates(source, "acme")
    assert [c.doc_id for c in found] == ["GOOD"]
    assert len(problems) == 1
    p = problems[0]
    assert (p.doc_id, p.client, p.transient, p.candidate) == ("BAD", None, True, None)
    assert "BAD.json is still being written" in p.message
    # unreadable metadata may concern any client: reported to every client's run
    assert [q.doc_id for q in candidates(source, "globex")[1]] == ["BAD"]
    backdate(path)
    p = source.find("BAD", "acme")
    assert isinstance(p, SourceProblem) and p.transient is False and p.client is None
    assert "document BAD: BAD.json is not valid UTF-8 JSON" in p.message


def test_non_utf8_json_is_a_problem(inbox, source):
    write_meta(inbox, "LATIN", '{"client": "acme", "type": "invoice", "status": "approved", "supplier": "Soci\xe9t\xe9"}'.encode("latin-1"))
    p = source.find("LATIN", "acme")
    assert isinstance(p, SourceProblem) and not p.transient
    assert "LATIN.json is not valid UTF-8 JSON" in p.message and "utf-8" in p.message


def test_json_that_is_not_an_object_is_a_problem(inbox, source):
    write_meta(inbox, "LIST", "[1, 2]")
    p = source.find("LIST", "acme")
    assert isinstance(p, SourceProblem) and not p.transient and "top level is not an object" in p.message


@pytest.mark.parametrize(
    "meta,message",
    [
        ({"client": "acme", "status": "approved"}, "field 'type' is missing"),
        ({"client": "acme", "type": "invoice", "status": ""}, "field 'status' is missing"),
        ({"client": "acme", "type": "invoice", "status": "approved", "approved_at": "yesterday"}, "bad metadata"),
    ],
)
def test_bad_metadata_is_a_permanent_problem_of_that_client(inbox, source, meta, message):
    write_meta(inbox, "M", meta)
    p = source.find("M", "acme")
    assert isinstance(p, SourceProblem) and not p.transient and p.client == "acme"
    assert message in p.message and p.message.startswith("document M:")
    assert source.find("M", "globex") is None


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("metadata", "abc", "field 'metadata' must be an object"),
        ("sub_organisation", 5, "field 'sub_organisation' must be a string"),
        ("tags", "urgent", "field 'tags' must be a list"),
        ("files", "T.pdf", "field 'files' must be a list of file names"),
        ("files", [1], "field 'files' must be a list of file names"),
        ("files", ["T.pdf", ""], "field 'files' must be a list of file names"),
    ],
)
def test_wrongly_typed_metadata_is_a_problem_not_a_crash(inbox, source, field, value, message):
    write(inbox, "T")
    meta = json.loads((inbox / "T.json").read_text())
    write_meta(inbox, "T", meta | {field: value})
    p = source.find("T", "acme")
    assert isinstance(p, SourceProblem) and not p.transient and p.client == "acme", p
    assert message in p.message and "document T: bad metadata in T.json" in p.message


def test_json_without_pdf(inbox, source):
    write(inbox, "NOPDF")
    (inbox / "NOPDF.pdf").unlink()
    found, problems = candidates(source, "acme")
    assert found == [] and len(problems) == 1
    p = problems[0]
    assert (p.doc_id, p.client, p.transient) == ("NOPDF", "acme", False)
    assert "NOPDF.pdf is missing (metadata without file)" in p.message
    assert p.candidate.client == "acme" and p.approved_at == APPROVED  # for the run's filters and window


def test_missing_json_of_a_known_document(inbox, source):
    p = source.find("GONE", "acme")
    assert isinstance(p, SourceProblem) and not p.transient and "GONE.json is missing" in p.message


def test_pdf_still_being_written_is_transient(inbox, source):
    write(inbox, "WIP", settled=False)
    backdate(inbox / "WIP.json")  # the JSON is old, its PDF was touched just now
    p = source.find("WIP", "acme")
    assert isinstance(p, SourceProblem) and p.transient and "WIP.pdf is still being written" in p.message
    backdate(inbox / "WIP.pdf", seconds=3)  # older than settle_seconds
    assert isinstance(source.find("WIP", "acme"), Candidate)


def test_young_xml_makes_the_document_wait_too(inbox, source):
    write(inbox, "X", xml=True)
    os.utime(inbox / "X.xml")
    p = source.find("X", "acme")
    assert isinstance(p, SourceProblem) and p.transient and "X.xml is still being written" in p.message


def test_zero_byte_pdf_is_a_problem_from_document(inbox, source):
    write(inbox, "EMPTY", pdf=b"")
    p = document(source, "EMPTY")
    assert isinstance(p, SourceProblem) and not p.transient and p.client == "acme"
    assert "EMPTY.pdf is empty (0 bytes)" in p.message


@pytest.mark.parametrize("content", [b"hello, not a pdf", b"<html>%PDF-1.4</html>", b"%PD"])
def test_non_pdf_content_is_a_problem_from_document(inbox, source, content):
    write(inbox, "FAKE", pdf=content)
    p = document(source, "FAKE")
    assert isinstance(p, SourceProblem) and not p.transient and "FAKE.pdf is not a PDF" in p.message


@pytest.mark.parametrize("name", ["../outside.pdf", "sub/x.pdf", "/etc/passwd", "./../outside.pdf"])
def test_files_pointing_outside_the_inbox_are_refused(inbox, source, name):
    outside = inbox.parent / "outside.pdf"
    outside.write_bytes(pdf_bytes("secret"))
    (inbox / "sub").mkdir()
    (inbox / "sub" / "x.pdf").write_bytes(pdf_bytes("x"))
    backdate(outside, inbox / "sub" / "x.pdf")
    write_meta(inbox, "ESC", {"client": "acme", "type": "invoice", "status": "approved", "approved_at": APPROVED.isoformat(), "files": [name]})
    found, problems = candidates(source, "acme")
    assert found == [] and len(problems) == 1
    assert not problems[0].transient and f"file name {name!r} points outside the inbox" in problems[0].message


# -- versions and fingerprints ------------------------------------------------------------------------


def test_declared_version_is_used(inbox, source):
    write(inbox, "V", version="7")
    doc = document(source, "V")
    assert doc.version == "7"
    (inbox / "V.pdf").write_bytes(pdf_bytes("other content"))
    backdate(inbox / "V.pdf")
    assert document(source, "V").version == "7"  # the capture system's own version wins


def test_derived_version_follows_the_content(inbox, source):
    write(inbox, "D", xml=True)
    first = document(source, "D").version
    assert first == document(source, "D").version and len(first) == 16
    os.utime(inbox / "D.pdf", (1, 1))  # touching without changing the content keeps the version
    assert document(source, "D").version == first
    (inbox / "D.pdf").write_bytes(pdf_bytes("corrected invoice"))
    backdate(inbox / "D.pdf")
    second = document(source, "D").version
    assert second != first
    (inbox / "D.xml").write_text("<Invoice><ID>D</ID><Note>fixed</Note></Invoice>")
    backdate(inbox / "D.xml")
    assert document(source, "D").version not in (first, second)


def test_fingerprint_changes_when_a_file_changes(inbox, source):
    write(inbox, "F", xml=True)
    first = source.find("F", "acme").fingerprint
    assert source.find("F", "acme").fingerprint == first
    assert len(first.split(",")) == 3  # the metadata, then one part per file
    pdf = inbox / "F.pdf"
    data = pdf.read_bytes()
    pdf.write_bytes(data[:-1] + b"X")  # same size, new content and mtime
    backdate(pdf, seconds=1000)
    second = source.find("F", "acme").fingerprint
    assert second != first
    (inbox / "F.xml").write_text("<x/>")
    backdate(inbox / "F.xml", seconds=1000)
    assert source.find("F", "acme").fingerprint not in (first, second)


# -- documents --------------------------------------------------------------------------------------


def test_document_streams_with_correct_hashes_and_sizes(inbox, source):
    pdf = pdf_bytes("INV-1", size=300_000)
    write(inbox, "S", pdf=pdf, xml=True, sub_organisation="finance", tags=["capex", 7], metadata={"number": "N-1", "total": "12.10"})
    doc = document(source, "S")
    assert isinstance(doc, Document)
    assert (doc.id, doc.client, doc.type, doc.status, doc.approved, doc.sub_organisation) == ("S", "acme", "invoice", "approved", True, "finance")
    assert doc.tags == ["capex", "7"] and doc.fields == {"number": "N-1", "total": "12.10"} and doc.approved_at == APPROVED
    assert [(f.name, f.media_type) for f in doc.files] == [("S.pdf", "application/pdf"), ("S.xml", "application/xml")]
    xml = (inbox / "S.xml").read_bytes()
    for f, data in zip(doc.files, (pdf, xml)):
        assert (f.size, f.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    one, two = doc.main_file.open(), doc.main_file.open()
    try:
        assert one is not two
        assert one.read(10) == pdf[:10]
        assert two.read() == pdf  # a fresh stream, from the start, independent of the first
        assert one.read() == pdf[10:]
    finally:
        one.close()
        two.close()
    with doc.files[1].open() as fh:
        assert fh.read() == xml


def test_archive_moves_files_then_metadata(inbox, source):
    write(inbox, "A", xml=True)
    write(inbox, "B")
    contents = {n: (inbox / n).read_bytes() for n in ("A.pdf", "A.xml", "A.json")}
    doc = document(source, "A")
    source.mark_exported(doc)
    source.mark_exported(doc)  # idempotent
    for name, data in contents.items():
        assert not (inbox / name).exists()
        assert (inbox / "archive" / name).read_bytes() == data
    assert source.find("A", "acme") is None  # archived after delivery: not a problem
    found, problems = candidates(source, "acme")
    assert [c.doc_id for c in found] == ["B"] and problems == []
    assert (inbox / "B.pdf").exists()
