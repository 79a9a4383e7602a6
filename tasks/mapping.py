"""Mapping: a Document plus an Integration become a Package (names, folder, fields, sidecar).

Every value that lands in a path is sanitised: no separators, no "..", no
control characters, optional allowed-character class and maximum length.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deployments.config import Config, ConfigError
from deployments.schema import (
    ConstantField,
    FromField,
    Integration,
    LookupField,
    TemplateField,
)
from tasks.connectors.base import Mode, Package, PackageFile
from tasks.documents import Document
from tasks.templates import (
    NAME_MAX,
    MappingError,
    Renderer,
    byte_length,
    clip_name,
    fit_name,
    sanitize_segment,
)
from tasks.ubl.package import ubl_preview, ubl_step
from tasks.xslt import (
    XsltError,
    compile_stylesheet,
    preview_of,
    stylesheet_path,
    transform_files,
)


class Lookups:
    """Lookup tables of one integration, read once per run with pandas."""

    def __init__(self, config: Config, integ: Integration):
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        self.paths: dict[str, Path] = {}
        self.conflicts: dict[str, dict[str, list[int]]] = {}  # table -> key -> CSV lines of its differing rows
        for name, table in integ.mapping.lookups.items():
            import pandas as pd  # only when there are tables: importing pandas costs ~1 s

            path = config.lookup_path(table)
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
                frame = frame.drop_duplicates(keep="first")  # the same row twice is harmless
                # A key on rows that differ is ambiguous: documents that need it fail, named, rather
                # than taking whichever row came last.
                twice = frame[table.key].duplicated(keep=False)
                self.conflicts[name] = {
                    str(k): [int(i) + 2 for i in rows]  # line numbers: the header is line 1
                    for k, rows in frame[twice].groupby(table.key).groups.items()
                }
                self.tables[name] = frame[~twice].set_index(table.key, drop=False).to_dict(orient="index")
            except Exception as exc:  # noqa: BLE001 - a ragged row, bad encoding...: name the table, not pandas' internals
                raise ConfigError(
                    [f"integration {integ.key!r}: mapping.lookups.{name}.file: cannot read CSV {path}: "
                     f"{type(exc).__name__}: {' '.join(str(exc).split())}; fix the file (every row needs the header's columns, UTF-8)"]
                ) from None
            self.paths[name] = path
            if self.conflicts[name]:
                _warn(f"integration {integ.key!r}: lookup table {name!r} ({path}) has {len(self.conflicts[name])} key(s) "
                      f"on rows with different values ({_conflict_list(self.conflicts[name])}); documents that need them "
                      f"fail until the CSV has one row per key")
        self.xslt = _stylesheets(config, integ)  # compiled once per run; a broken one fails the run, named

    def get(self, table: str, key: str) -> dict[str, str] | None:
        return self.tables[table].get(key)

    def conflict(self, table: str, key: str) -> list[int]:
        """CSV line numbers of the differing rows that share `key` (empty when the key is unambiguous)."""
        return self.conflicts.get(table, {}).get(key, [])


def _stylesheets(config: Config, integ: Integration) -> list:
    """The integration's mapping.xslt steps, compiled: [(file patterns, Stylesheet)]."""
    steps = []
    for i, step in enumerate(integ.mapping.xslt):
        try:
            steps.append((step.files, compile_stylesheet(stylesheet_path(config.config_dir, step.stylesheet))))
        except XsltError as exc:
            raise ConfigError([f"integration {integ.key!r}: mapping.xslt[{i}].stylesheet: {exc}; fix the stylesheet"]) from None
    return steps


def _conflict_list(conflicts: dict[str, list[int]], limit: int = 5) -> str:
    shown = [f"{k!r} on lines {', '.join(map(str, lines))}" for k, lines in list(conflicts.items())[:limit]]
    return "; ".join(shown) + (f"; and {len(conflicts) - limit} more" if len(conflicts) > limit else "")


def _warn(message: str) -> None:
    """A warning in the run's logs when there is a run (the CLI's preview has none)."""
    try:
        from prefect import get_run_logger

        get_run_logger().warning("%s", message)
    except Exception:  # noqa: BLE001 - outside a run
        logging.getLogger("docroute.mapping").warning("%s", message)


def document_values(doc: Document, integ: Integration) -> dict[str, Any]:
    """The placeholder values of a document, before mapped fields."""
    approved = doc.approved_at or datetime.now(timezone.utc)
    main = doc.files[0] if doc.files else None
    values: dict[str, Any] = dict(doc.fields)
    values.update(integ.identifiers)
    values.update(
        doc_id=doc.id,
        client=doc.client,
        doc_type=doc.type,
        sub_org=doc.sub_organisation,
        approved_at=approved,
        year=f"{approved:%Y}",
        month=f"{approved:%m}",
        day=f"{approved:%d}",
        ext=main.ext if main else "",
        version=doc.version,
        integration=integ.name,
        original_name=main.name.rsplit(".", 1)[0] if main else "",
        today=datetime.now(timezone.utc),
    )
    return values


def map_fields(doc: Document, integ: Integration, lookups: Lookups, values: dict[str, Any]) -> dict[str, Any]:
    """The integration's output fields for one document (deployments/schema.py: the kinds of field)."""
    fields: dict[str, Any] = {}
    renderer = Renderer(values, integ.mapping.sanitize, doc.id)
    for name, spec in integ.mapping.fields.items():
        where = f"mapping.fields.{name}"
        match spec:
            case TemplateField():
                fields[name] = renderer.text(spec.template, where)
            case ConstantField():
                fields[name] = spec.constant
            case FromField():
                fields[name] = values.get(spec.from_)
            case LookupField():
                fields[name] = _looked_up(doc, spec, renderer.text(spec.key, f"{where}.key"), lookups, where)
    return fields


def _looked_up(doc: Document, spec: LookupField, key: str, lookups: Lookups, where: str) -> Any:
    lines = lookups.conflict(spec.lookup, key)
    if lines:
        raise MappingError(
            f"document {doc.id}: {where}: key {key!r} is on {len(lines)} rows with different values in lookup "
            f"table {spec.lookup!r} ({lookups.paths[spec.lookup]}, lines {', '.join(map(str, lines))}); keep one row per key"
        )
    row = lookups.get(spec.lookup, key)
    if row is not None:
        return row[spec.column]
    if spec.has_default:
        return spec.default
    raise MappingError(
        f"document {doc.id}: {where}: key {key!r} not found in lookup table {spec.lookup!r} "
        f"({lookups.paths[spec.lookup]}); add it to the CSV or give the field a default"
    )


def _stream_of(data: bytes):
    return lambda: io.BytesIO(data)


def map_document(doc: Document, integ: Integration, lookups: Lookups, mode: Mode | None = None) -> Package:
    """Map one document to the package a connector delivers."""
    if not doc.files:
        raise MappingError(f"document {doc.id}: has no files")
    values = document_values(doc, integ)
    fields = map_fields(doc, integ, lookups, values)
    values.update(fields)  # mapped fields may be used in names and folders
    rules = integ.mapping.sanitize
    renderer = Renderer(values, rules, doc.id)
    folder = "/".join(renderer.path(integ.mapping.folder, "mapping.folder"))
    name_parts = renderer.path(integ.mapping.filename, "mapping.filename", keep_ext=True)
    if len(name_parts) != 1:
        raise MappingError(f"document {doc.id}: mapping.filename renders to a path {'/'.join(name_parts)!r}")
    main_name = name_parts[0]  # already fitted to max_length, extension kept
    stem = main_name.rsplit(".", 1)[0] if "." in main_name else main_name
    # when shortened, the extra files and the sidecar must keep the main file's stem (receivers pair them by it)
    other_exts = [sanitize_segment(f.ext, rules) for f in doc.files[1:]] + (["json"] if integ.mapping.sidecar else [])
    exts = [e for e in other_exts if len(e) <= 10]
    room = rules.max_length - 1 - max((len(e) for e in exts), default=0)
    room_bytes = NAME_MAX - 1 - max((byte_length(e) for e in exts), default=0)
    if 0 < room and (room < len(stem) or room_bytes < byte_length(stem)):
        short = clip_name(stem, room, room_bytes).rstrip(" .") or rules.replacement
        main_name, stem = short + main_name[len(stem):], short
    files: list[PackageFile] = []
    used: set[str] = set()
    for i, f in enumerate(doc.files):
        if i == 0:
            target = main_name
        else:
            ext = sanitize_segment(f.ext, rules)  # a source's file names are values too: never a path
            safe_name = sanitize_segment(f.name, rules) or rules.replacement
            target = fit_name(f"{stem}.{ext}" if ext else f"{stem}_{safe_name}", rules.max_length)
            if target in used or (integ.mapping.sidecar and target == f"{stem}.json"):
                target = fit_name(f"{stem}_{safe_name}", rules.max_length)
        used.add(target)
        files.append(
            PackageFile(
                name=target,
                role="document" if i == 0 else "attachment",
                media_type=f.media_type,
                size=f.size,
                sha256=f.sha256,
                opener=f.open,
            )
        )
    if integ.mapping.sidecar:
        body = json.dumps(sidecar_content(doc, fields), ensure_ascii=False, indent=2, default=str).encode()
        files.append(
            PackageFile(
                name=fit_name(f"{stem}.json", rules.max_length),
                role="sidecar",
                media_type="application/json",
                size=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                opener=_stream_of(body),
            )
        )
    if lookups.xslt:  # any XML file of the package, through the integration's stylesheets (tasks/xslt.py)
        xslt_values = Renderer(values, rules, doc.id)
        steps = integ.mapping.xslt
        try:
            files = transform_files(files, lookups.xslt, lambda i: {
                k: xslt_values.text(t, f"mapping.xslt[{i}].params.{k}") for k, t in steps[i].params.items()},
                f"document {doc.id}")
        except XsltError as exc:
            raise MappingError(f"integration {integ.key!r}: {exc}") from None
    if integ.mapping.ubl is not None:  # one valid Peppol BIS 3.0 UBL in the package, or a named failure (tasks/ubl/)

        files = ubl_step(doc, integ.mapping.ubl, values, rules, files)
    return Package(
        doc_id=doc.id,
        version=doc.version,
        client=doc.client,
        integration=integ.key,
        folder=folder,
        files=files,
        fields=fields or dict(doc.fields),
        mode=mode or Mode(integ.mode if integ.mode != "dry-run" else "production"),
        document_type=doc.type,
        values={k: v for k, v in values.items() if isinstance(v, (str, int, float)) or v is None},
    )


def sidecar_content(doc: Document, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "doc_id": doc.id,
        "version": doc.version,
        "client": doc.client,
        "document_type": doc.type,
        "sub_organisation": doc.sub_organisation,
        "tags": doc.tags,
        "approved_at": doc.approved_at.isoformat() if doc.approved_at else None,
        "fields": fields or doc.fields,
        "files": [{"name": f.name, "media_type": f.media_type, "size": f.size, "sha256": f.sha256} for f in doc.files],
    }


def preview(doc: Document, integ: Integration, lookups: Lookups) -> dict[str, Any]:
    """What a delivery of this document would look like, without delivering."""
    package = map_document(doc, integ, lookups)

    return {
        "doc_id": doc.id,
        "integration": integ.key,
        "connection": integ.connection,
        "files": [{"path": package.path_of(f), "role": f.role, "size": f.size, **preview_of(f), **ubl_preview(f)} for f in package.files],
        "fields": package.fields,
    }
