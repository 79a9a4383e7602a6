"""The neutral document model every source produces and the engine reads.

- Candidate: a document as a scan lists it (type, sub-organisation, tags, status, approval time,
  fields, a fingerprint that changes when it does), before any file is read.
- SourceProblem: a document the source could not read this time (why, and whether it may settle
  by itself); never dropped.
- Document: the full document, its files opened as streams, with size and SHA-256 known.

No engine code reads a source's own keys: a source maps its records to these, in one place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

CHUNK = 1024 * 1024

# Metadata fields a capture system commonly sends; integrations may declare more.
STANDARD_METADATA_FIELDS = frozenset(
    {
        "number",
        "supplier",
        "supplier_number",
        "supplier_vat",
        "customer",
        "customer_number",
        "issue_date",
        "due_date",
        "currency",
        "net",
        "tax",
        "total",
        "po_number",
        "order_number",
        "iban",
        "reference",
    }
)


class DocumentFile(BaseModel):
    """One file of a document. Content is read through `open()`, never held whole."""

    model_config = ConfigDict(frozen=False)

    name: str = Field(description="File name at the source, e.g. INV-1001.pdf.")
    media_type: str = Field(description="MIME type, e.g. application/pdf.")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(description="Hex SHA-256 of the content.")
    _opener: Callable[[], BinaryIO] | None = PrivateAttr(default=None)

    def with_opener(self, opener: Callable[[], BinaryIO]) -> DocumentFile:
        self._opener = opener
        return self

    def open(self) -> BinaryIO:
        if self._opener is None:
            raise RuntimeError(f"file {self.name} has no content source")
        return self._opener()

    @property
    def ext(self) -> str:
        return self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""


class Document(BaseModel):
    """An approved (or not yet approved) business document as a source reports it."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silently empty one

    id: str
    client: str
    type: str = Field(description="invoice, credit_note, order_confirmation, ...")
    sub_organisation: str | None = None
    tags: list[str] = Field(default_factory=list)
    status: str = Field(description="approved, pending, rejected, ...")
    approved_at: datetime | None = None
    fields: dict[str, Any] = Field(default_factory=dict, description="Metadata fields: number, supplier, total, ...")
    files: list[DocumentFile] = Field(default_factory=list, description="Main document first.")
    version: str = Field(description="Changes when the content changes: a new version is delivered again.")
    handle: Any = Field(default=None, exclude=True, description="The source's own reference (a path, a record): only the source reads it.")

    @property
    def approved(self) -> bool:
        return self.status == "approved" and self.approved_at is not None

    @property
    def main_file(self) -> DocumentFile:
        return self.files[0]


def sha256_of_stream(stream: BinaryIO) -> tuple[str, int]:
    """Hash a stream in chunks; returns (hex digest, size)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def version_of(files: list[DocumentFile], declared: str | None = None) -> str:
    """A document version: the capture system's own, else derived from the files' hashes."""
    if declared:
        return str(declared)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.sha256.encode())
    return digest.hexdigest()[:16]


APPROVED = "approved"


def client_key(client: object) -> str:
    """How client ids are compared: trimmed and case-folded ("ACME ", "acme" and "Acme" are one client)."""
    return str(client).strip().casefold() if client is not None else ""


@dataclass
class Candidate:
    """A document as a scan lists it: all the engine decides on, read cheaply (no file content).

    `fingerprint` changes whenever the document may have changed (file sizes and times, a declared
    version, a record's modified time): an unchanged fingerprint of a delivered version needs no
    fetch. `handle` is the source's own reference; only the source reads it."""

    doc_id: str
    client: str
    type: str
    status: str
    approved_at: datetime | None
    fingerprint: str
    sub_organisation: str | None = None
    tags: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    handle: Any = None

    @property
    def approved(self) -> bool:
        return self.status == APPROVED and self.approved_at is not None


@dataclass
class SourceProblem:
    """A document the source could not read this time. Reported on every scan, never dropped.

    `transient`: it may settle by itself (a file still being written): not counted as a failed
    attempt. `candidate`: what could be read of it (its metadata, when only a file is missing), so
    filters and windows still apply; None when nothing could be read (not even its client)."""

    doc_id: str
    client: str | None
    message: str
    transient: bool
    candidate: Candidate | None = None

    @property
    def approved_at(self) -> datetime | None:
        return self.candidate.approved_at if self.candidate else None
