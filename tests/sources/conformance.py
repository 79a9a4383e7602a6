"""The source conformance suite's harness: what the suite needs to know of one source and its real server.

Like the connector suite (tests/connectors/conformance.py) and the Singer SDK's standard tap tests:
a source takes part with a harness fixture in tests/sources/harness_<name>.py that starts (or
reuses) the real server on 127.0.0.1 and returns a SourceHarness, and one line in
tests/sources/test_conformance.py naming the fixture.

A harness writes documents into its source the way the capture system (or the API's users) would:
`put` adds or replaces one, `put_unreadable` adds one the source cannot read, `delete` removes one,
and `exported` tells whether mark_exported took effect there.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from blocks.base import SourceBlock
from tasks.sources.seed import pdf_bytes


class SourceHarness(ABC):
    """One source and its real server."""

    #: secret values the harness put into its blocks: they must never show in a message
    secrets: tuple[str, ...] = ()

    @abstractmethod
    def block(self) -> SourceBlock:
        """A source block pointing at the running server, with valid credentials."""

    def broken_block(self) -> SourceBlock | None:
        """The block pointing at a folder, host, prefix or key that does not work (check must fail clearly)."""
        return None

    @abstractmethod
    def put(self, doc_id: str, *, client: str = "acme", doc_type: str = "invoice", status: str = "approved",
            approved_at: datetime | None = None, fields: dict[str, Any] | None = None, pdf: bytes | None = None,
            xml: bytes | None = None) -> dict[str, bytes]:
        """Add (or replace) a document; returns its files' contents by name, main file first."""

    @abstractmethod
    def put_unreadable(self, doc_id: str, client: str = "acme", approved_at: datetime | None = None) -> None:
        """Add a document of `client` the source cannot read (its file missing, its content corrupt)."""

    @abstractmethod
    def delete(self, doc_id: str) -> None:
        """Remove a document from the source (its files, as a user or the capture system would)."""

    @abstractmethod
    def exported(self, doc_id: str) -> bool:
        """Does the source now hold the document as exported (archived, tagged)?"""


class InboxHarness(SourceHarness):
    """The capture inbox convention (<id>.pdf, optional <id>.xml, then <id>.json) over a store's files."""

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Write one file into the inbox folder."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Remove one file from the inbox folder (no error if it is not there)."""

    @abstractmethod
    def in_archive(self, name: str) -> bool:
        """Is the file in the inbox's archive/?"""

    def put(self, doc_id, *, client="acme", doc_type="invoice", status="approved", approved_at=None, fields=None,
            pdf=None, xml=None):
        files = {f"{doc_id}.pdf": pdf if pdf is not None else pdf_bytes(f"{doc_type} {doc_id}", 20_000)}
        if xml is not None:
            files[f"{doc_id}.xml"] = xml
        for name, data in files.items():
            self.write(name, data)
        meta = {
            "client": client, "type": doc_type, "status": status, "sub_organisation": None, "tags": ["conformance"],
            "approved_at": approved_at.isoformat() if approved_at else None, "metadata": fields or {}, "files": list(files),
        }
        self.write(f"{doc_id}.json", json.dumps(meta).encode())  # metadata last, as a capture system writes
        return files

    def put_unreadable(self, doc_id, client="acme", approved_at=None):
        self.put(doc_id, client=client, approved_at=approved_at)
        self.remove(f"{doc_id}.pdf")  # metadata without its PDF

    def delete(self, doc_id):
        for ext in ("json", "pdf", "xml"):
            self.remove(f"{doc_id}.{ext}")

    def exported(self, doc_id):
        return self.in_archive(f"{doc_id}.json") and self.in_archive(f"{doc_id}.pdf")
