"""Checks of a configuration beyond its schema: placeholders, lookup tables, blocks, connector options,
send modes, notification settings, and integrations that would write to the same place.

Each problem names the file, the integration, the field and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from deployments.schema import (
    DATE_PLACEHOLDERS,
    FromField,
    Integration,
    LookupField,
    placeholders,
    pydantic_problems,
)
from tasks import registry
from tasks.connectors.base import Ability, certification_connections
from tasks.registry import UnknownBlockError
from tasks.settings import get_settings
from tasks.xslt import XsltError, compile_stylesheet, stylesheet_path

if TYPE_CHECKING:
    from deployments.config import Config


def check_integration(config: Config, integ: Integration, *, check_blocks: bool = True) -> list[str]:
    """Semantic checks of one integration: placeholders, lookups, blocks, connector options."""
    where = f"{config.files.get(integ.key, config.config_dir)}: integration {integ.name!r}"
    problems: list[str] = []
    known = integ.known_placeholders()
    templates = {"mapping.filename": integ.mapping.filename, "mapping.folder": integ.mapping.folder}
    for i, step in enumerate(integ.mapping.xslt):
        templates.update({f"mapping.xslt[{i}].params.{k}": t for k, t in step.params.items()})
    for fname, spec in integ.mapping.fields.items():
        templates.update({f"mapping.fields.{fname}{suffix}": t for suffix, t in spec.templates().items()})
        if isinstance(spec, FromField) and spec.from_ not in known - (set(integ.mapping.fields) - integ.source_fields()):
            problems.append(f"{where}: mapping.fields.{fname}.from: unknown field {spec.from_!r}; declare it in metadata_fields")
    for field, template in templates.items():
        if not template and field != "mapping.folder":
            problems.append(f"{where}: {field}: must not be empty")
            continue
        try:
            names = placeholders(template)
        except ValueError as exc:
            problems.append(f"{where}: {field}: bad template {template!r}: {exc}")
            continue
        for name, spec in names:
            if name not in known:
                problems.append(
                    f"{where}: {field}: unknown placeholder {{{name}}}; known: {', '.join(sorted(known))} "
                    f"(declare extra metadata fields in metadata_fields)"
                )
            elif spec and "%" in spec and name not in DATE_PLACEHOLDERS:
                problems.append(f"{where}: {field}: date format on {{{name}}}, which is not a date")
    for seg in integ.mapping.folder.split("/"):
        if seg in (".", "..") or seg.startswith("~"):
            problems.append(f"{where}: mapping.folder: segment {seg!r} is not allowed (no '.', '..' or '~')")
    if integ.mapping.folder.startswith("/"):
        problems.append(f"{where}: mapping.folder: must be relative to the connection's base folder (remove the leading '/')")
    if "/" in integ.mapping.filename or "\\" in integ.mapping.filename:
        problems.append(f"{where}: mapping.filename: must not contain a folder separator; put folders in mapping.folder")
    for name, table in integ.mapping.lookups.items():
        path = config.lookup_path(table)
        try:
            import pandas as pd  # only when there are tables: importing pandas costs ~1 s

            columns = list(pd.read_csv(path, dtype=str, nrows=0).columns)
        except Exception as exc:  # noqa: BLE001 - any read failure is a config problem
            problems.append(f"{where}: mapping.lookups.{name}.file: cannot read CSV {path}: {exc}")
            continue
        if table.key not in columns:
            problems.append(f"{where}: mapping.lookups.{name}.key: column {table.key!r} not in {path} (columns: {columns})")
        for fname, spec in integ.mapping.fields.items():
            if isinstance(spec, LookupField) and spec.lookup == name and spec.column not in columns:
                problems.append(f"{where}: mapping.fields.{fname}.column: column {spec.column!r} not in {path} (columns: {columns})")
    for fname, spec in integ.mapping.fields.items():
        if isinstance(spec, LookupField) and spec.lookup not in integ.mapping.lookups:
            problems.append(f"{where}: mapping.fields.{fname}.lookup: no lookup table {spec.lookup!r} in mapping.lookups")
    problems.extend(_check_mode_and_notify(where, integ))
    problems.extend(_check_files(config, where, integ))
    if check_blocks:
        problems.extend(_check_blocks(config, where, integ))
    return problems


def _check_files(config: Config, where: str, integ: Integration) -> list[str]:
    """Stylesheets (mapping.xslt) compile; files the connector's options name (Infor mapping files) are
    valid, by the options' own `config_problems`. Offline: the block type is in the reference."""
    problems = []
    for i, step in enumerate(integ.mapping.xslt):
        try:
            compile_stylesheet(stylesheet_path(config.config_dir, step.stylesheet))
        except XsltError as exc:
            problems.append(f"{where}: mapping.xslt[{i}].stylesheet: {exc}; fix the stylesheet or the file name "
                            f"(relative to {config.config_dir / 'xslt'})")
    slug = integ.connection.split("/", 1)[0]
    if not integ.connection_options or slug not in registry.connection_types():
        return problems  # no options, no files: the connector module is not even imported
    model = registry.connector_class(slug).options_model
    if not hasattr(model, "config_problems"):
        return problems
    try:
        options = model.model_validate(integ.connection_options)
    except ValidationError:
        return problems  # named by the connection check (_check_blocks)
    return problems + options.config_problems(config.config_dir, where, integ.known_placeholders(),
                                              integ.filters.document_types)


def _check_mode_and_notify(where: str, integ: Integration) -> list[str]:
    """Certification only on connectors that pass it on; e-mail notification needs recipients and an SMTP block."""
    problems = []
    slug = integ.connection.split("/", 1)[0]  # the block type is in the reference: checkable offline
    if (integ.mode == "certification" and slug in registry.connection_types()
            and Ability.CERTIFICATION not in registry.connector_class(slug).abilities):
        problems.append(
            f"{where}: mode: connection {integ.connection!r} ({slug}) cannot send in certification mode: its "
            f"destination has no certification flag. Use mode test (the connection's test target) or production, "
            f"or a connection that supports certification ({', '.join(certification_connections())})"
        )
    settings = get_settings()
    if integ.notify.email and not (integ.notify.smtp or settings.notify_smtp):
        problems.append(
            f"{where}: notify.smtp: e-mail recipients need an SMTP connection; set notify.smtp "
            f"(e.g. smtp-connection/ops) or DOCROUTE_NOTIFY_SMTP"
        )
    if integ.notify.smtp and not (integ.notify.email or settings.notify_email_list()):
        problems.append(f"{where}: notify.email: notify.smtp is set but nobody is e-mailed; add notify.email: [ops@example.com]")
    if integ.notify.smtp and not integ.notify.smtp.startswith("smtp-connection/"):
        problems.append(f"{where}: notify.smtp: {integ.notify.smtp!r} is not an SMTP connection; use smtp-connection/<name>")
    return problems


def _check_blocks(config: Config, where: str, integ: Integration) -> list[str]:
    """The source and connection blocks exist and are of their kind; the connector takes the integration's options."""
    problems = []
    for field in ("source", "connection"):
        ref = getattr(integ, field)
        try:
            block = config.block(ref)
        except UnknownBlockError as exc:
            problems.append(f"{where}: {field}: {exc}; create it in the Prefect UI (Blocks) or with docroute demo")
            continue
        if field == "connection":
            try:
                cls = registry.connector_class(block.get_block_type_slug())
                options = cls.options_model.model_validate(integ.connection_options)
                # connector templates (an e-mail subject...) use the same placeholders as file names
                for name in sorted(getattr(options, "placeholders", lambda: set())() - integ.known_placeholders()):
                    problems.append(
                        f"{where}: connection_options: unknown placeholder {{{name}}}; known: {', '.join(sorted(integ.known_placeholders()))}"
                    )
            except LookupError as exc:
                problems.append(f"{where}: connection: {exc}")
            except ValidationError as exc:
                problems.extend(pydantic_problems(f"{where}: connection_options", exc))
        elif block.get_block_type_slug() not in registry.source_types():
            problems.append(f"{where}: source: block {ref!r} is not a source; sources: {', '.join(registry.source_types())}")
        else:  # the source takes the integration's source_options (and what else it needs of it)
            problems.extend(registry.source_class(block.get_block_type_slug()).config_problems(block, integ, where))
    if integ.notify.smtp and integ.notify.smtp.startswith("smtp-connection/"):
        try:
            config.block(integ.notify.smtp)
        except UnknownBlockError as exc:
            problems.append(f"{where}: notify.smtp: {exc}; create it in the Prefect UI (Blocks)")
    return problems


def check_overlaps(config: Config) -> list[tuple[str, str]]:
    """Two active integrations of one client that would deliver a document twice to the same place:
    (client, problem) pairs."""
    problems = []
    items = [i for i in config.integrations.values() if i.enabled]
    for n, a in enumerate(items):
        for b in items[n + 1:]:
            same_place = (
                a.client == b.client
                and a.connection == b.connection
                and a.mode == b.mode
                and a.mapping.folder == b.mapping.folder
                and a.mapping.filename == b.mapping.filename
            )
            if same_place and a.filters.overlaps(b.filters):
                problems.append((a.client,
                    f"{config.files[b.key]}: integrations {a.name!r} and {b.name!r}: filters overlap and both write "
                    f"{a.mapping.folder or '.'}/{a.mapping.filename} on {a.connection}: a document would be delivered "
                    f"twice to the same place; make filters.document_types (or sub_organisations, tags) disjoint "
                    f"or use a different folder"
                ))
    return problems


UNIQUE_PLACEHOLDERS = frozenset({"doc_id"})  # the only value no two documents of a source share


def warnings(config: Config) -> list[str]:
    """What is allowed but risky: a file name that no placeholder makes unique per document (two
    documents with the same values map to one file; the second then fails, it is never written over)."""
    out = []
    for integ in config.integrations.values():
        names = {n for t in (integ.mapping.filename, integ.mapping.folder) for n, _ in placeholders(t)}
        if not names & UNIQUE_PLACEHOLDERS:
            where = f"{config.files.get(integ.key, config.config_dir)}: integration {integ.name!r}"
            out.append(
                f"{where}: mapping.filename: {integ.mapping.filename!r} (in folder {integ.mapping.folder or '.'!r}) has no "
                f"placeholder unique per document: two documents with the same values map to the same file, and the "
                f"second fails rather than overwrite the first; add {{doc_id}}"
            )
    return out

