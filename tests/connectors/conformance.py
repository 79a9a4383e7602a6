"""The conformance suite every connector runs against its real server (like rclone's fstests).

A connector takes part by providing a harness: a pytest fixture, in a module
tests/connectors/harness_<name>.py, that starts (or reuses) the real server on
127.0.0.1 and returns a `Harness`. Then it adds the fixture's name to
HARNESSES in tests/connectors/test_conformance.py: one line.
"""

from __future__ import annotations

import hashlib
import io
import os
from abc import ABC, abstractmethod
from pathlib import Path

from blocks.base import ConnectionBlock
from tasks.connectors.base import Mode, Package, PackageFile


class Harness(ABC):
    """What the suite needs to know about one connector and its real server."""

    #: secret values the harness put into its blocks: they must never show in an error
    secrets: tuple[str, ...] = ()

    @abstractmethod
    def connection(self) -> ConnectionBlock:
        """A block pointing at the running server, with valid credentials."""

    def bad_credentials(self) -> ConnectionBlock | None:
        """The same block with a wrong password/token/key, or None where there are no credentials."""
        return None

    @abstractmethod
    def received(self, package: Package, f: PackageFile) -> bytes | None:
        """The bytes the destination holds for this file of the package (None if none)."""

    def copies(self, package: Package) -> int:
        """How many copies of the package the destination holds after its own dedup (by name, id, key)."""
        return 1 if self.received(package, package.main) is not None else 0

    def leftovers(self, package: Package) -> list[str]:
        """Temporary or partial objects left behind near the package (names), for atomicity checks."""
        return []


def file_opener(path: Path):
    return lambda: path.open("rb")


def make_package(
    tmp_path: Path,
    doc_id: str = "INV-1001",
    *,
    folder: str = "acme/2026/11",
    pdf_size: int = 60_000,
    with_xml: bool = True,
    with_sidecar: bool = True,
    integration: str = "acme/invoices",
    mode: Mode = Mode.PRODUCTION,
) -> Package:
    """A realistic package: PDF first, then an XML attachment, then a JSON sidecar (the trigger)."""
    files: list[PackageFile] = []
    contents = {f"{doc_id}.pdf": b"%PDF-1.7\n" + os.urandom(pdf_size)}
    if with_xml:
        contents[f"{doc_id}.xml"] = f"<Invoice><ID>{doc_id}</ID></Invoice>".encode()
    if with_sidecar:
        contents[f"{doc_id}.json"] = f'{{"doc_id": "{doc_id}"}}'.encode()
    roles = ["document", "attachment", "sidecar"]
    for (name, data), role in zip(contents.items(), roles if with_xml else ["document", "sidecar"]):
        path = tmp_path / f"src-{doc_id}-{name}"
        path.write_bytes(data)
        media = {"pdf": "application/pdf", "xml": "application/xml", "json": "application/json"}[name.rsplit(".")[-1]]
        files.append(
            PackageFile(
                name=name,
                role=role,
                media_type=media,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                opener=file_opener(path),
            )
        )
    return Package(
        doc_id=doc_id,
        version="v1",
        client=integration.split("/")[0],
        integration=integration,
        folder=folder,
        files=files,
        fields={"number": doc_id, "supplier": "Globex BV", "total": "121.00"},
        mode=mode,
        document_type="invoice",
        values={"doc_id": doc_id, "number": doc_id, "client": "acme", "doc_type": "invoice"},
    )


class FailingStream(io.RawIOBase):
    """A source stream that breaks after `fail_after` bytes, like a share that went away mid-read."""

    def __init__(self, path: Path, fail_after: int):
        self._fh = path.open("rb")
        self._left = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._left <= 0:
            raise OSError(5, "Input/output error (source went away)")
        n = self._fh.readinto(memoryview(buf)[: min(len(buf), self._left)])
        self._left -= n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()
