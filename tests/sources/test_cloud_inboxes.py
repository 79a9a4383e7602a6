"""The cloud-folder inboxes (Dropbox, OneDrive/SharePoint, Google Drive) and their change cursors,
against the local fakes: the provider's cursor kept as the source's, changes only, an expired cursor
answered with a full listing (nothing lost, the ledger de-duplicates), moves into archive/ ignored."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tasks.sources.base import Window

APPROVED = datetime.now(timezone.utc) - timedelta(hours=2)

EXPIRE = {
    "dropbox_inbox_harness": lambda h: h.fake.reset_cursors(),
    "onedrive_inbox_harness": lambda h: h.fake.expire_delta_tokens(),
    "gdrive_inbox_harness": lambda h: h.fake.expire_page_tokens(),
}


@pytest.fixture(params=sorted(EXPIRE))
def harness(request):
    h = request.getfixturevalue(request.param)
    h.expire = lambda: EXPIRE[request.param](h)
    h.kind = request.param
    return h


def window() -> Window:
    return Window(datetime.now(timezone.utc) - timedelta(days=30), datetime.now(timezone.utc))


def ids(scan) -> list[str]:
    return sorted(c.doc_id for c in scan.candidates)


def test_the_providers_cursor_is_kept_and_only_changes_come_back(harness):
    harness.put("A-1", approved_at=APPROVED)
    harness.put("A-2", approved_at=APPROVED)
    with harness.block().source() as source:
        first = source.scan("acme", None, window())
        assert ids(first) == ["A-1", "A-2"]
        state = json.loads(first.cursor)
        if harness.kind == "onedrive_inbox_harness":
            assert state["c"].startswith(harness.fake.url) and "/root/delta?token=" in state["c"]  # the deltaLink itself
        assert ids(source.scan("acme", first.cursor, window())) == []
    harness.put("A-3", approved_at=APPROVED)
    with harness.block().source() as source:  # a new run: nothing but the cursor carries over
        assert ids(source.scan("acme", first.cursor, window())) == ["A-3"]


def test_an_expired_cursor_means_a_full_listing_and_nothing_lost(harness):
    harness.put("E-1", approved_at=APPROVED)
    with harness.block().source() as source:
        first = source.scan("acme", None, window())
    harness.put("E-2", approved_at=APPROVED)
    harness.expire()
    with harness.block().source() as source:
        again = source.scan("acme", first.cursor, window())
        assert ids(again) == ["E-1", "E-2"]  # everything, as on a first scan: the ledger skips E-1
        assert ids(source.scan("acme", again.cursor, window())) == []  # and the new cursor works


def test_archiving_a_document_does_not_bring_it_back(harness):
    harness.put("M-1", approved_at=APPROVED)
    harness.put("M-2", approved_at=APPROVED)
    with harness.block().source() as source:
        first = source.scan("acme", None, window())
        doc = source.fetch(source.find("M-1", "acme"))
        source.mark_exported(doc)
    with harness.block().source() as source:
        later = source.scan("acme", first.cursor, window())
        assert ids(later) == []  # the move out of the folder is no new document
        assert harness.exported("M-1")
        assert ids(source.scan("acme", None, window())) == ["M-2"]


def test_a_problem_stays_reported_until_fixed(harness):
    harness.put_unreadable("B-1", approved_at=APPROVED)
    with harness.block().source() as source:
        first = source.scan("acme", None, window())
        assert [p.doc_id for p in first.problems] == ["B-1"]
        second = source.scan("acme", first.cursor, window())
        assert [p.doc_id for p in second.problems] == ["B-1"]  # nothing changed, still reported
    harness.put("B-1", approved_at=APPROVED)  # the capture system writes the PDF after all
    with harness.block().source() as source:
        third = source.scan("acme", second.cursor, window())
        assert ids(third) == ["B-1"] and third.problems == []
        assert json.loads(third.cursor)["retry"] == []


class _Props:
    """Writes a PDF with its metadata in its own properties, per provider."""

    def __init__(self, harness):
        self.h = harness

    def put(self, doc_id: str, props: dict, data: bytes = b"%PDF-1.7\nproperties\n") -> None:
        h = self.h
        if hasattr(h, "folder_id"):  # Google Drive: the file's properties
            old = h.fake.children(h.folder_id, f"{doc_id}.pdf")
            if old:
                h.fake.set_properties(old[0].id, props)
            else:
                h.fake.add_file(h.folder_id, f"{doc_id}.pdf", data, properties=props)
        else:  # SharePoint: the list item's columns
            path = f"{h.folder}/{doc_id}.pdf"
            if h.fake.item_at(path) is None:
                h.fake.put_file(path, data)
            h.fake.set_fields(path, props)


@pytest.mark.parametrize("kind", ["onedrive_inbox_harness", "gdrive_inbox_harness"])
def test_metadata_from_the_files_own_properties(request, kind):
    harness = request.getfixturevalue(kind)
    writer = _Props(harness)
    approved = APPROVED.isoformat()
    writer.put("P-1", {"client": "acme", "type": "invoice", "status": "pending", "meta_number": "INV-77", "tags": "a, b"})
    writer.put("P-2", {"client": "acme", "status": "approved"})  # no type: a problem, reported
    writer.put("P-3", {"client": "globex", "type": "invoice", "status": "approved", "approved_at": approved})
    with harness.block(metadata="properties").source() as source:
        first = source.scan("acme", None, window())
        [one] = first.candidates
        assert (one.doc_id, one.status, one.fields, one.tags) == ("P-1", "pending", {"number": "INV-77"}, ["a", "b"])
        assert [p.doc_id for p in first.problems] == ["P-2"] and "type" in first.problems[0].message
    writer.put("P-1", {"status": "approved", "approved_at": approved})  # approved later: a change of properties only
    with harness.block(metadata="properties").source() as source:
        later = source.scan("acme", first.cursor, window())
        [one] = later.candidates
        assert one.doc_id == "P-1" and one.approved and one.fingerprint != first.candidates[0].fingerprint
        doc = source.fetch(one)
        assert [f.name for f in doc.files] == ["P-1.pdf"]
        with doc.files[0].open() as fh:
            assert fh.read() == b"%PDF-1.7\nproperties\n"
        source.mark_exported(doc)
        assert harness.in_archive("P-1.pdf") and source.find("P-1", "acme") is None
