"""The mapping's UBL step (an integration's `mapping.ubl`): every package it maps carries one valid Peppol BIS
Billing 3.0 UBL document, or the document fails, named, before anything is sent.

- The source gave a UBL invoice or credit note (an XML file of the package whose root is one, after the
  integration's XSLT if it has any): it is validated and passed through byte for byte.
- It gave none: one is built from the metadata (tasks/ubl/generate.py) with the main file (the PDF)
  embedded, validated, and added to the package after the document's own files (before a sidecar).

A failure is a MappingError, which the engine records as the document's permanent error and which
`docroute preview` prints: "document INV-7, file INV-7.xml: UBL is not valid Peppol BIS Billing 3.0
(2 broken rules): [BR-CO-15] ...; [PEPPOL-EN16931-R003] ...".
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

from deployments.schema import Sanitize
from deployments.ubl import UblMapping
from tasks.connectors.base import PackageFile
from tasks.documents import Document
from tasks.templates import MappingError, Renderer
from tasks.ubl.generate import UblMappingError, build
from tasks.ubl.validate import CHECKED, UblInvalid, check, root_kind
from tasks.xslt import TransformedFile, XsltError, read_verified

XML_TYPES = ("application/xml", "text/xml")


@dataclass
class UblFile(TransformedFile):
    """The package's UBL document: `origin` "metadata" (generated) or "source" (passed through);
    `warnings` the validation's non-fatal findings (shown by docroute preview)."""

    origin: str = "metadata"
    warnings: tuple[str, ...] = ()


def is_xml(f: PackageFile) -> bool:
    return f.media_type in XML_TYPES or f.name.lower().endswith(".xml")


def find_ubl(files: list[PackageFile], what: str) -> tuple[int, bytes] | None:
    """(index, bytes) of the first XML file of the package that is a UBL invoice or credit note."""
    for i, f in enumerate(files):
        if not is_xml(f):
            continue
        try:
            data = read_verified(f, what)
        except XsltError as exc:
            raise MappingError(str(exc)) from None
        if root_kind(data):
            return i, data
    return None


def ubl_step(doc: Document, spec: UblMapping, values: dict[str, Any], rules: Sanitize, files: list[PackageFile]) -> list[PackageFile]:
    what = f"document {doc.id}"
    found = find_ubl(files, what)
    if found is not None:
        i, data = found
        warnings = _checked(data, f"{what}, file {files[i].name}")
        f = files[i]
        files = list(files)
        files[i] = UblFile(name=f.name, role=f.role, media_type=f.media_type, size=f.size, sha256=f.sha256,
                           opener=f.opener, content=data, origin="source", warnings=warnings)
        return files
    renderer = Renderer(values, rules, doc.id)

    def render(template: str, field: str, required: bool) -> str:
        if not template:
            if required:
                raise MappingError(f"{what}: {field} must not be empty")
            return ""
        try:
            return renderer.text(template, field).strip()
        except MappingError:
            if required:
                raise
            return ""

    main = files[0]
    pdf = None
    if spec.embed_pdf:
        try:
            pdf = (main.name, main.media_type, read_verified(main, what))
        except XsltError as exc:
            raise MappingError(str(exc)) from None
    try:
        data = build(doc.type, values, spec, render, pdf)
    except UblMappingError as exc:
        raise MappingError(f"{what}: {exc}") from None
    names = renderer.path(spec.file_name, "mapping.ubl.file_name", keep_ext=True)
    if len(names) != 1:
        raise MappingError(f"{what}: mapping.ubl.file_name renders to a path {'/'.join(names)!r}")
    name = names[0]
    if any(f.name == name for f in files):
        raise MappingError(f"{what}: mapping.ubl.file_name {name!r} is already the name of another file of the document")
    warnings = _checked(data, f"{what}, file {name}")
    ubl = UblFile(name=name, role="attachment", media_type="application/xml", size=len(data),
                  sha256=hashlib.sha256(data).hexdigest(), opener=lambda: io.BytesIO(data), content=data,
                  stylesheets=(), origin="metadata", warnings=warnings)
    at = next((i for i, f in enumerate(files) if f.role == "sidecar"), len(files))
    return [*files[:at], ubl, *files[at:]]


def _checked(data: bytes, what: str) -> tuple[str, ...]:
    try:
        return tuple(str(w) for w in check(data, what))
    except UblInvalid as exc:
        raise MappingError(str(exc)) from None


def ubl_preview(f: PackageFile) -> dict[str, Any]:
    """What docroute preview shows of the package's UBL: where it comes from, what was checked, warnings."""
    if not isinstance(f, UblFile):
        return {}
    text = f.content.decode("utf-8", "replace")
    return {"ubl": {"from": "generated from the metadata (mapping.ubl)" if f.origin == "metadata" else "given by the source, unchanged",
                    "valid": True, "checked": CHECKED, "warnings": list(f.warnings)},
            "content": text[:20_000] + ("..." if len(text) > 20_000 else "")}
