"""The reconciliation flow: does the destination hold what the ledger says was delivered?

    docroute reconcile acme/invoices-to-erp

Compares the ledger's delivered rows of one integration with a listing of the destination
(connectors with Ability.INVENTORY: local folder, SFTP, S3) and lists every difference:

- missing at destination: the ledger records a delivery, the destination does not hold the file;
- not delivered per ledger: the destination holds a file under the integration's folder that no
  delivered row accounts for (files of other integrations on the same connection are skipped);
- size mismatch / hash mismatch: where the document is still in the source at the delivered
  version, it is mapped again and each file's size (and sha256 with `hashes`) is compared;
- leftover partial file: a temp file or unfinished upload that a delivery left behind.

The run holds the integration's lock (a sync and a reconcile never overlap), writes a table
artifact `reconcile-<client>-<integration>` and a markdown summary, and ends Failed naming the
differences when there are any. A destination that cannot be listed (webhook, e-mail, an SFTP
drop box) is reported as such: nothing is compared and the run completes.
"""

from __future__ import annotations

import posixpath
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from deployments.config import load_config, parse_config
from deployments.schema import Integration
from tasks import ledger as L
from tasks.connectors.base import Ability, Connector, Mode, RemoteFile
from tasks.documents import Candidate, Document
from tasks.mapping import Lookups, map_document, sanitize_segment

MISSING = "missing at destination"
UNRECORDED = "not delivered per ledger"
SIZE = "size mismatch"
HASH = "hash mismatch"
PARTIAL = "leftover partial file"
NO_REF = "no remote reference"


class ReconcileFailed(Exception):
    """Raised at the end of a reconcile run that found differences; names them."""


@dataclass
class ExpectedFile:
    """A file of a delivered package. `path` is relative to the connection's folder."""

    name: str
    role: str
    size: int | None = None
    sha256: str | None = None


@dataclass
class ExpectedDoc:
    """What one delivered ledger row says the destination holds."""

    doc_id: str
    version: str
    ref: str | None  # the main file's remote reference, as the connector recorded it
    mapped_path: str | None = None  # the main file's path if the document could be mapped again
    files: list[ExpectedFile] = field(default_factory=list)  # main file first; empty = only the ref is known


@dataclass
class Difference:
    """One row of the reconcile table."""

    kind: str
    document: str = ""
    version: str = ""
    path: str = ""
    expected: str = ""
    found: str = ""
    detail: str = ""


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def compare(
    expected: Iterable[ExpectedDoc],
    listing: Iterable[RemoteFile],
    *,
    claimed_refs: Iterable[str] = (),
    hints: dict[str, tuple[str, str]] | None = None,
) -> tuple[list[Difference], dict[str, int]]:
    """Compare what the ledger expects with what the destination holds; returns (differences, counts).

    claimed_refs: remote refs delivered by other integrations on the same connection (not reported).
    hints: path -> (doc_id, ledger status) of documents not recorded as delivered, to name them.
    """
    listing = list(listing)
    hints = hints or {}
    files = [f for f in listing if not f.partial]
    by_ref = {f.ref: f for f in files}
    by_path = {f.path: f for f in files}
    used: set[str] = set()
    siblings: set[tuple[str, str]] = set()  # (folder, stem): files of a package whose extra names are unknown
    owners: dict[str, str] = {}  # path -> doc_id of the files the ledger accounts for
    diffs: list[Difference] = []
    delivered = 0

    def check(doc: ExpectedDoc, want: ExpectedFile, got: RemoteFile) -> None:
        if want.size is not None and got.size != want.size:
            diffs.append(Difference(SIZE, doc.doc_id, doc.version, got.path, f"{want.size} bytes", f"{got.size} bytes", want.role))
        elif want.sha256 and got.sha256 and got.sha256 != want.sha256:
            diffs.append(Difference(HASH, doc.doc_id, doc.version, got.path, want.sha256[:16], got.sha256[:16], want.role))

    for doc in expected:
        delivered += 1
        if not doc.ref:
            diffs.append(Difference(NO_REF, doc.doc_id, doc.version, detail="the ledger records a delivery without a remote reference"))
            continue
        main = by_ref.get(doc.ref)
        if main is None:
            diffs.append(Difference(MISSING, doc.doc_id, doc.version, doc.mapped_path or doc.ref, "delivered", "absent", doc.ref))
            folder = posixpath.dirname(doc.mapped_path) if doc.mapped_path else None
        else:
            used.add(main.path)
            folder = posixpath.dirname(main.path)
            if doc.files:
                check(doc, doc.files[0], main)
            else:  # not mapped again: its sidecar/attachments share the main file's stem
                siblings.add((folder, _stem(posixpath.basename(main.path))))
        if folder is None:
            continue
        owners[main.path if main is not None else doc.mapped_path or ""] = doc.doc_id
        for want in doc.files[1:]:
            path = posixpath.join(folder, want.name) if folder else want.name
            owners[path] = doc.doc_id
            got = by_path.get(path)
            if got is None:
                diffs.append(Difference(MISSING, doc.doc_id, doc.version, path, "delivered", "absent", want.role))
            else:
                used.add(path)
                check(doc, want, got)
    for ref in claimed_refs:
        got = by_ref.get(ref)
        if got is not None:
            used.add(got.path)
            siblings.add((posixpath.dirname(got.path), _stem(posixpath.basename(got.path))))
    for f in listing:
        folder, name = posixpath.dirname(f.path), posixpath.basename(f.path)
        if f.partial:
            # ".<name>.<random><suffix>" (file systems, SFTP) or the object key itself (S3 uploads)
            final = posixpath.join(folder, name[1:].rsplit(".", 2)[0]) if name.startswith(".") else f.path
            doc_id = owners.get(final) or hints.get(final, ("", ""))[0]
            diffs.append(Difference(PARTIAL, doc_id, "", f.path, "", f"{f.size} bytes", "a temp file or unfinished upload left by an interrupted delivery"))
            continue
        if f.path in used:
            continue
        # a sidecar or attachment of a package only known by its main file: "<stem>.json", "<stem>_<name>"
        if any(ch in "._" and (folder, name[:i]) in siblings for i, ch in enumerate(name)):
            continue
        doc_id, status = hints.get(f.path, ("", ""))
        detail = f"ledger status: {status}" if status else "no delivered ledger row accounts for it"
        diffs.append(Difference(UNRECORDED, doc_id, "", f.path, "", f"{f.size} bytes", detail))
    counts = {"delivered": delivered, "listed": len(files), "partial": len(listing) - len(files)}
    return diffs, counts


def listing_prefix(integ: Integration) -> str:
    """The constant leading folders of the integration's folder template ("{client}/{doc_type}" -> "acme").

    Only placeholders with the same value for every document of the integration are filled in:
    client, integration name and the client's identifiers (unless a mapped field shadows them)."""
    rules = integ.mapping.sanitize
    constant = {"client": integ.client, "integration": integ.name, **integ.identifiers}
    text, variable = [], False
    for literal, name, spec, conversion in string.Formatter().parse(integ.mapping.folder):
        text.append(literal)
        if name is None:
            continue
        if name in constant and name not in integ.mapping.fields and not spec and not conversion:
            text.append(sanitize_segment(str(constant[name]), rules) or rules.replacement)
        else:
            variable = True
            break
    segments = "".join(text).split("/")
    if variable:
        segments = segments[:-1]  # the segment holding the first variable placeholder is not known
    return "/".join(s[: rules.max_length] for s in segments if s)


def _expected(ctx: dict[str, Any], rows: list[dict]) -> tuple[list[ExpectedDoc], dict[str, tuple[str, str]], list[str]]:
    """Delivered rows -> ExpectedDoc (mapped again from the source where it still holds that version);
    other rows -> hints naming the documents behind unrecorded files. Also returns notes."""
    integ, source, lookups, connector = ctx["integ"], ctx["source"], ctx["lookups"], ctx["connector"]
    notes: list[str] = []
    unmapped = 0
    # The connector may not write every file of a package (S3 with metadata in headers: no sidecar).
    files_of = connector.files_written  # S3 with metadata in headers writes no sidecar object

    def mapped(doc_id: str, version: str):
        if source is None:
            return None
        try:
            cand = source.find(doc_id, integ.client)
            if not isinstance(cand, Candidate):
                return None
            doc = source.fetch(cand)
            if not isinstance(doc, Document) or doc.version != version:
                return None
            return map_document(doc, integ, lookups, ctx["mode"])
        except Exception:  # noqa: BLE001 - the ledger's remote reference is still checked
            return None

    latest: dict[str, dict] = {}  # one expectation per remote path: the latest delivery there
    for row in rows:
        if row["status"] == L.DELIVERED:
            key = row["remote_ref"] or f"\0{row['doc_id']}\0{row['version']}"
            if key not in latest or (row["delivered_at"] or datetime.min.replace(tzinfo=timezone.utc)) >= (
                latest[key]["delivered_at"] or datetime.min.replace(tzinfo=timezone.utc)
            ):
                latest[key] = row
    expected = []
    for row in latest.values():
        package = mapped(row["doc_id"], row["version"])
        doc = ExpectedDoc(row["doc_id"], row["version"], row["remote_ref"])
        if package is not None:
            doc.mapped_path = package.path_of(package.main)
            doc.files = [ExpectedFile(f.name, f.role, f.size, f.sha256) for f in files_of(package)]
        else:
            unmapped += 1
        expected.append(doc)
    delivered_docs = {r["doc_id"] for r in latest.values()}
    hints: dict[str, tuple[str, str]] = {}
    for row in rows:
        if row["status"] in L.OPEN_STATUSES + (L.NEEDS_ATTENTION,) and row["doc_id"] not in delivered_docs:
            package = mapped(row["doc_id"], row["version"])
            if package is not None:
                status = row["status"] + (" (a run was sending it when it stopped)" if row["sending_since"] else "")
                for f in package.files:
                    path = package.path_of(f)
                    hints[path] = (row["doc_id"], status)
                    hints[posixpath.join(posixpath.dirname(path), f".{f.name}")] = (row["doc_id"], status)
    if unmapped:
        notes.append(
            f"{unmapped} delivered documents are no longer in the source at their delivered version "
            f"(archived, changed or removed): only their main file's presence was checked"
        )
    return expected, hints, notes


def _run_name() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    return f"reconcile {flow_run.parameters.get('integration', '?')} {stamp}"


@flow(name="docroute-reconcile", flow_run_name=_run_name, retries=0, log_prints=False, validate_parameters=True)
def reconcile(
    integration: str,
    prefix: str | None = None,
    hashes: bool = False,
    use_source: bool = True,
    lock_timeout: float = 300.0,
) -> dict[str, Any]:
    """Compare the ledger's deliveries of one integration with what the destination holds.

    Args:
        integration: "client/integration", e.g. "acme/invoices-to-erp".
        prefix: folder to list, relative to the connection's folder (default: the constant leading
            folders of the integration's folder template, e.g. "acme" for "{client}/{doc_type}").
        hashes: also compare sha256 where the destination can tell it cheaply (local folder; S3
            metadata; SFTP with a remote sha256sum). Reads every file: slow on big destinations.
        use_source: map delivered documents again from the source to know every file's name and size.
        lock_timeout: seconds to wait for a running sync of the integration to finish.
    """
    logger = get_run_logger()
    config = load_config(only=integration)
    integ = config.get(integration)
    mode = Mode(integ.mode) if integ.mode != "dry-run" else Mode.PRODUCTION
    connector: Connector = config.block(integ.connection).connector(mode, integ.connection_options)
    ledger = L.Ledger.from_settings()
    listable = Ability.INVENTORY in connector.abilities
    where = f"{connector.label} ({integ.connection})"
    prefix = listing_prefix(integ) if prefix is None else prefix.strip("/")
    notes: list[str] = []
    try:
        with ledger.lock(integ.key, timeout=lock_timeout):
            rows = ledger.rows(integ.key)
            listing: list[RemoteFile] | None = None
            reason = ""
            if listable:
                try:
                    with connector:
                        listing = list(connector.inventory(prefix, hashes=hashes))
                except NotImplementedError as exc:
                    reason = str(exc)
            else:
                reason = f"{type(connector).__name__} has no listing"
            if listing is not None:
                source = config.block(integ.source).source(integ) if use_source else None
                ctx = {"integ": integ, "source": source, "lookups": Lookups(config, integ), "connector": connector, "mode": mode}
                if source is None:
                    expected, hints, notes = _expected(ctx, rows)
                else:
                    with source:
                        expected, hints, notes = _expected(ctx, rows)
                claimed: list[str] = []
                others, _ = parse_config(config.config_dir)
                for other in others.integrations.values():
                    if other.key != integ.key and other.connection == integ.connection:
                        claimed += [r["remote_ref"] for r in ledger.rows(other.key, statuses=(L.DELIVERED,)) if r["remote_ref"]]
                diffs, counts = compare(expected, listing, claimed_refs=claimed, hints=hints)
    finally:
        ledger.dispose()
    delivered_rows = sum(1 for r in rows if r["status"] == L.DELIVERED)
    if listing is None:
        message = f"the destination {where} cannot be listed ({reason}): nothing compared; the ledger records {delivered_rows} deliveries"
        create_table_artifact(
            key=f"reconcile-{integ.slug}",
            table=[asdict(Difference("not compared", detail=message))],
            description=f"Reconcile of {integ.key}: destination cannot be listed",
        )
        create_markdown_artifact(
            key=f"reconcile-summary-{integ.slug}",
            markdown=f"# Reconcile {integ.key}\n\n- {message}.\n- Compare with the receiver's own log "
            f"(each delivery's remote reference is in the ledger and the sync reports).\n",
            description=f"Reconcile summary of {integ.key}",
        )
        logger.warning("%s: %s", integ.key, message)
        return {"integration": integ.key, "listable": False, "message": message, "differences": [], "delivered": delivered_rows}

    by_kind = Counter(d.kind for d in diffs)
    outcome = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())) or "no difference"
    create_table_artifact(
        key=f"reconcile-{integ.slug}",
        table=[asdict(d) for d in diffs] or [asdict(Difference("no difference", detail=f"{counts['delivered']} deliveries match"))],
        description=f"Reconcile of {integ.key} against {where}: {outcome}",
    )
    lines = [
        f"# Reconcile {integ.key}",
        "",
        f"- destination: {where}, listed under `{prefix or '/'}`",
        f"- ledger: {counts['delivered']} delivered files ({delivered_rows} delivered rows)",
        f"- destination: {counts['listed']} files, {counts['partial']} partial",
        f"- outcome: {outcome}",
    ] + [f"- note: {n}" for n in notes]
    if diffs:
        lines += ["", "| kind | document | path | expected | found | detail |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {d.kind} | {d.document} | {d.path} | {d.expected} | {d.found} | {d.detail.replace('|', '/')} |" for d in diffs[:200]
        ]
        if len(diffs) > 200:
            lines.append(f"\n... and {len(diffs) - 200} more in the table artifact")
    create_markdown_artifact(key=f"reconcile-summary-{integ.slug}", markdown="\n".join(lines), description=f"Reconcile summary of {integ.key}")
    if diffs:
        named = "; ".join(f"{d.kind}: {d.document + ' ' if d.document else ''}{d.path}".rstrip() for d in diffs[:10])
        more = f" (and {len(diffs) - 10} more)" if len(diffs) > 10 else ""
        raise ReconcileFailed(f"{integ.key}: {len(diffs)} differences between the ledger and {where}: {outcome}. {named}{more}")
    logger.info("%s: %s against %s (%d deliveries)", integ.key, outcome, where, counts["delivered"])
    return {"integration": integ.key, "listable": True, "differences": [], "notes": notes, **counts}
