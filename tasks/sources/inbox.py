"""The capture inbox convention, over any store: a folder (local, SFTP, S3 prefix) where a capture
system drops <id>.pdf (plus extra files) and <id>.json per document.

The JSON holds: client, type (document type), sub_organisation, tags, status, approved_at,
metadata (the fields: number, supplier, ...), and optionally version and files (names of the
document's files in the folder, main first; default <id>.pdf). A pair that is malformed or still
being written is reported as a problem for that document and looked at again on the next scan; it
is never dropped and never stops the run. Every file of a document must be a plain file in the
inbox folder itself: a name with a folder in it, or a symbolic link (whatever it points at), is a
problem naming the document and the file, and nothing is read through it.

`InboxSource` holds the convention; a backend supplies an `InboxStore` (list, stat, read, open,
archive) in a module of its own: tasks/sources/folder_inbox.py, sftp_inbox.py, s3_inbox.py.
The inbox lists every metadata file on each scan (`lists_everything`), so its cursor only records
when it last scanned.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import tempfile
import time
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any, BinaryIO, NamedTuple

from tasks.connectors.base import CheckResult
from tasks.documents import (
    client_key,
    CHUNK,
    Candidate,
    Document,
    DocumentFile,
    SourceProblem,
    version_of,
)
from tasks.errors import RemoteError
from tasks.sources.base import Scan, Source, Window

MEDIA = {"pdf": "application/pdf", "xml": "application/xml", "json": "application/json"}
ARCHIVE = "archive"
SPOOL_IN_MEMORY = 1024 * 1024


class Entry(NamedTuple):
    """One name in the inbox folder, as the store lists it."""

    name: str
    size: int
    mtime: float  # seconds since the epoch
    stamp: str  # changes when the content may have changed: the modification time (ns where known), an ETag
    ident: str = ""  # what else tells one file from another under the same name (an inode number)
    link: bool = False  # a symbolic link (never followed)
    is_file: bool = True  # a regular file (not a folder, a device, ...)

    @property
    def key(self) -> tuple:
        return self.size, self.stamp, self.ident


class InboxStore(ABC):
    """Where an inbox's files are: the few operations the inbox convention needs."""

    label: str
    separators: str = "/"  # characters that would make a file name a path on this store

    def open_session(self) -> None:
        """Connect (an SFTP session); called once per run."""

    def close(self) -> None:
        """Disconnect."""

    @abstractmethod
    def entries(self) -> dict[str, Entry]:
        """Every name directly in the inbox folder (not in archive/). Raises FileNotFoundError when
        the folder itself is not there."""

    @abstractmethod
    def entry(self, name: str) -> Entry | None:
        """One name's entry (without following a link); None when it is not there."""

    @abstractmethod
    def read(self, name: str) -> bytes:
        """The whole content of a small file (a metadata JSON). OSError when it cannot be read."""

    @abstractmethod
    def open(self, name: str) -> BinaryIO:
        """A stream of a file, read in chunks (never followed through a link)."""

    @abstractmethod
    def archive(self, names: list[str]) -> None:
        """Move these files into archive/ (each only if still in the inbox), in this order."""

    @abstractmethod
    def archived(self, name: str) -> bool:
        """Is `name` in archive/?"""

    def local(self) -> bool:
        """True when open() reads a local file cheaply (no need to spool it)."""
        return False

    def check(self) -> CheckResult:
        """Connect, reach the folder and list it."""
        try:
            self.open_session()
            count = len(self.entries())
        except (OSError, RemoteError) as exc:
            return CheckResult(False, f"{self.label}: cannot list the inbox: {exc}")
        return CheckResult(True, f"{self.label}: {count} files in the inbox")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time; naive means UTC."""
    if value in (None, ""):
        return None
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


# What each metadata file said last time this process read it: (store label, name) -> (entry key,
# client, approved_at). Lets a scan skip files it knows are another client's, and a backfill's
# chunks skip files approved outside their window (InboxSource.scan).
_SEEN: dict[tuple[str, str], tuple[tuple, Any, datetime | None]] = {}
_SEEN_MAX = 200_000  # entries (~150 bytes each); beyond that, start over


def _remember(where: tuple[str, str], key: tuple, client: Any, approved_at: datetime | None) -> None:
    if len(_SEEN) >= _SEEN_MAX:
        _SEEN.clear()
    _SEEN[where] = (key, client, approved_at)


class _Spool:
    """A remote file downloaded once while it is hashed, into an anonymous temporary file (in memory
    up to 1 MiB): the hash and the upload read the same bytes, and the source is read once."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)

    def opener(self):
        def open_() -> BinaryIO:
            self.file.seek(0)
            return _Unclosable(self.file)

        return open_


class _Unclosable:
    """A read-only view of a spool that `with ... as fh` may close without deleting the spool."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class InboxSource(Source):
    """Documents from an inbox folder on some store; see the module docstring."""

    lists_everything = True

    def __init__(self, block, store: InboxStore):
        super().__init__(block)
        self.store = store
        self.settle_seconds = float(getattr(block, "settle_seconds", 2.0))

    @property
    def label(self) -> str:
        return self.store.label

    def open(self) -> None:
        self.store.open_session()

    def close(self) -> None:
        self.store.close()

    def check(self) -> CheckResult:
        return self.store.check()

    # -- scanning ---------------------------------------------------------------------------------
    def scan(self, client: str, cursor: str | None, window: Window) -> Scan:
        """Every readable document of `client` in the inbox, and the problems that may concern it.

        A metadata file unchanged since this process last read it (same key) and known to be another
        client's, or, in a backfill (window.ranged), approved outside the window (or not approved),
        is skipped without reading it: a backfill's chunks each scan the inbox. Unreadable files are
        always read again, so their problems are always reported."""
        entries = self.store.entries()
        now = time.time()
        found: list[Candidate] = []
        problems: list[SourceProblem] = []
        label = self.store.label
        for name in sorted(entries):
            if not name.endswith(".json") or name.startswith("."):
                continue
            entry = entries[name]
            seen = _SEEN.get((label, name))
            if seen is not None and seen[0] == entry.key and (
                seen[1] != client_key(client) or (window.ranged and not window.holds(seen[2]))
            ):
                continue
            result = self._read(name[: -len(".json")], now, client, entries)
            if isinstance(result, Candidate):
                found.append(result)
            elif result is not None:
                problems.append(result)
        return Scan(found, problems, cursor=window.end.isoformat())

    def find(self, doc_id: str, client: str) -> Candidate | SourceProblem | None:
        return self._read(doc_id, time.time(), client, None)

    def census(self) -> Scan:
        """Every document in the inbox, whatever its client (client ids as compared: trimmed, case-folded)."""
        entries = self.store.entries()
        now = time.time()
        found, problems = [], []
        for name in sorted(entries):
            if name.endswith(".json") and not name.startswith("."):
                result = self._read(name[: -len(".json")], now, None, entries)
                (found if isinstance(result, Candidate) else problems).append(result)
        return Scan(found, problems)

    def _entry(self, name: str, entries: dict[str, Entry] | None) -> Entry | None:
        return entries.get(name) if entries is not None else self.store.entry(name)

    def _young(self, entry: Entry, now: float) -> bool:
        return now - entry.mtime < self.settle_seconds

    def _refused(self, doc_id: str, name: str, entry: Entry) -> str | None:
        """Why a file of a document is not read, or None: links and anything but a plain file."""
        if entry.link:
            return (f"document {doc_id}: {name} in {self.store.label} is a symbolic link; a document's files must be "
                    f"plain files in the inbox folder, nothing is read through a link")
        if not entry.is_file:
            return f"document {doc_id}: {name} in {self.store.label} is not a plain file"
        return None

    def _read(self, doc_id: str, now: float, wanted_client: str, entries: dict[str, Entry] | None) -> Candidate | SourceProblem | None:
        meta_name = f"{doc_id}.json"
        meta_entry = self._entry(meta_name, entries)
        if meta_entry is None:
            if self.store.archived(meta_name):
                return None  # archived after a recorded delivery
            return SourceProblem(doc_id, wanted_client, f"document {doc_id}: {meta_name} is missing from {self.store.label}", False)
        refused = self._refused(doc_id, meta_name, meta_entry)
        if refused:
            return SourceProblem(doc_id, None, refused, False)
        where = (self.store.label, meta_name)
        try:
            text = self.store.read(meta_name).decode("utf-8")
            meta = json.loads(text)
            if not isinstance(meta, dict):
                raise ValueError("top level is not an object")
            # PostgreSQL refuses NUL in text: one document's metadata must not stop the run's ledger writes
            if "\\u0000" in text and _has_nul(meta):
                raise ValueError("a NUL character (\\u0000) in a value: not text")
            if "\\ud" in text or "\\uD" in text:  # escapes of half a character ("\udce9") no file system or database takes
                try:
                    json.dumps(meta, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError(f"lone surrogate \\u{ord(exc.object[exc.start]):04x}: half a character, not text") from None
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            young = self._young(meta_entry, now)
            what = "is still being written" if young else f"is not valid UTF-8 JSON ({exc})"
            return SourceProblem(doc_id, None, f"document {doc_id}: {meta_name} {what}", young)
        client = meta.get("client")
        if wanted_client is not None and client_key(client) != client_key(wanted_client):
            _remember(where, meta_entry.key, client_key(client), None)
            return None
        client = wanted_client or client_key(client)  # as the integration names it
        try:
            approved_at = parse_time(meta.get("approved_at"))
            for key in ("type", "status"):
                if not isinstance(meta.get(key), str) or not meta[key]:
                    raise ValueError(f"field {key!r} is missing or not a string")
            # wrong types here would make fetch() raise (and stop the run) instead of reporting this document
            for key, kinds, what in (("sub_organisation", (str, type(None)), "a string"), ("tags", (list, type(None)), "a list"),
                                     ("metadata", (dict, type(None)), "an object"), ("files", (list, type(None)), "a list of file names")):
                if not isinstance(meta.get(key), kinds):
                    raise ValueError(f"field {key!r} must be {what}")
            if not all(isinstance(name, str) and name for name in meta.get("files") or []):
                raise ValueError("field 'files' must be a list of file names")
        except ValueError as exc:
            return SourceProblem(doc_id, client, f"document {doc_id}: bad metadata in {meta_name}: {exc}", False)
        _remember(where, meta_entry.key, client_key(client), approved_at if meta.get("status") == "approved" else None)
        names = [str(n) for n in meta.get("files") or [f"{doc_id}.pdf"]]
        cand = Candidate(
            doc_id=doc_id,
            client=client,
            type=meta["type"],
            status=meta["status"],
            approved_at=approved_at,
            fingerprint="",
            sub_organisation=meta.get("sub_organisation"),
            tags=[str(t) for t in meta.get("tags") or []],
            fields=dict(meta.get("metadata") or {}),
            handle={"names": names, "version": meta.get("version")},
        )
        parts = [f"{meta_entry.size}:{meta_entry.stamp}"]  # the metadata too: a late approval is a change
        for name in names:
            problem = None
            entry = None
            if any(c in name for c in self.store.separators) or name in (".", ".."):
                problem = (f"document {doc_id}: file name {name!r} points outside the inbox", False)
            else:
                entry = self._entry(name, entries)
                if entry is None:
                    problem = (f"document {doc_id}: {name} is missing (metadata without file)", False)
                elif self._refused(doc_id, name, entry):
                    problem = (self._refused(doc_id, name, entry), False)
                elif self._young(entry, now):
                    problem = (f"document {doc_id}: {name} is still being written", True)
            if problem:
                return SourceProblem(doc_id, client, *problem, candidate=cand)
            parts.append(f"{entry.size}:{entry.stamp}")
        if meta.get("version") is not None:  # a new declared version is a new document version
            parts.append(f"v={meta['version']}")
        cand.fingerprint = ",".join(parts)
        return cand

    # -- fetching -------------------------------------------------------------------------------------
    def fetch(self, candidate: Candidate) -> Document | SourceProblem:
        """The full document: files checked and hashed while streamed (never read whole). A remote
        store's files are downloaded once, into a spool the delivery then reads."""
        files: list[DocumentFile] = []
        doc_id = candidate.doc_id
        for i, name in enumerate(candidate.handle["names"]):
            entry = self.store.entry(name)
            refused = self._refused(doc_id, name, entry) if entry is not None else None
            if refused:
                return SourceProblem(doc_id, candidate.client, refused, False, candidate)
            try:
                digest, size, head, opener = self._hash(name)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                return SourceProblem(doc_id, candidate.client, f"document {doc_id}: cannot read {name}: {reason}", True, candidate)
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            media = MEDIA.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"
            if size == 0:
                return SourceProblem(doc_id, candidate.client, f"document {doc_id}: {name} is empty (0 bytes)", False, candidate)
            if i == 0 and media == "application/pdf" and head != b"%PDF-":
                return SourceProblem(doc_id, candidate.client, f"document {doc_id}: {name} is not a PDF (no %PDF- header)", False, candidate)
            files.append(DocumentFile(name=name, media_type=media, size=size, sha256=digest).with_opener(opener))
        return Document(
            id=doc_id,
            client=candidate.client,
            type=candidate.type,
            sub_organisation=candidate.sub_organisation,
            tags=list(candidate.tags),
            status=candidate.status,
            approved_at=candidate.approved_at,
            fields=dict(candidate.fields),
            files=files,
            version=version_of(files, candidate.handle["version"]),
            handle=candidate.handle,
        )

    def _hash(self, name: str):
        """(sha256, size, first 5 bytes, opener) of a file, read once."""
        digest = hashlib.sha256()
        size = 0
        head = b""
        spool = None if self.store.local() else _Spool()
        with self.store.open(name) as fh:
            while chunk := fh.read(CHUNK):
                if not head:
                    head = chunk[:5]
                digest.update(chunk)
                size += len(chunk)
                if spool is not None:
                    spool.file.write(chunk)
        opener = (lambda: self.store.open(name)) if spool is None else spool.opener()
        return digest.hexdigest(), size, head, opener

    # -- archive after transfer -------------------------------------------------------------------------
    def mark_exported(self, document: Document) -> None:
        """Archive after transfer: move the document's files into archive/, its metadata last (until it
        moves, the document is still visible). Idempotent: what is already archived stays."""
        names = list(document.handle["names"]) if isinstance(document.handle, dict) else [f.name for f in document.files]
        self.store.archive(names + [f"{document.id}.json"])
