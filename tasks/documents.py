"""Document: one approved business document from a source, with its files opened as streams."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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

    id: str
    client: str
    type: str = Field(description="invoice, credit_note, order_confirmation, ...")
    sub_organisation: str | None = None
    tags: list[str] = Field(default_factory=list)
    status: str = Field(description="approved, pending, rejected, ...")
    approved_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    files: list[DocumentFile] = Field(default_factory=list, description="Main document first.")
    version: str = Field(description="Changes when the content changes: a new version is delivered again.")

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
