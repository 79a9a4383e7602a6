"""Capture inbox source: a folder with <id>.pdf (plus extra files) and <id>.json per document.

The JSON holds: client, type (document type), sub_organisation, tags, status,
approved_at, metadata, and optionally version and files (names of the
document's files in the folder, main first; default <id>.pdf). A pair that is
malformed or still being written is reported as a problem for that document
and looked at again on the next run; it is never dropped and never stops the run.
"""

from __future__ import annotations

import json
import mimetypes
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.documents import Document, DocumentFile, sha256_of_stream, version_of

_MEDIA = {"pdf": "application/pdf", "xml": "application/xml", "json": "application/json"}


@dataclass
class SourceProblem:
    """A document the source could not read this time."""

    doc_id: str
    client: str | None  # None when the metadata could not be read at all
    message: str
    transient: bool  # still being written: not counted as a failed attempt
    meta: dict[str, Any] | None = None  # the metadata, when it could be read (for filters and the window)
    approved_at: datetime | None = None


@dataclass
class Candidate:
    """A document's metadata, read cheaply (no hashing) to decide whether it is wanted."""

    doc_id: str
    meta: dict[str, Any]
    approved_at: datetime | None
    fingerprint: str  # size:mtime of every file: unchanged files need no re-hashing


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


# What each metadata file said last time this process read it: path -> ((size, mtime_ns, inode),
# client, approved_at). Lets a scan with a window skip files the window drops (InboxFolderSource.candidates).
_SEEN: dict[str, tuple[tuple[int, int, int] | None, Any, datetime | None]] = {}
_SEEN_MAX = 200_000  # entries (~150 bytes each); beyond that, start over


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _remember(path: Path, key: tuple[int, int, int] | None, client: Any, approved_at: datetime | None) -> None:
    if key is None:
        return
    if len(_SEEN) >= _SEEN_MAX:
        _SEEN.clear()
    _SEEN[str(path)] = (key, client, approved_at)


class InboxFolderSource:
    """Reads documents from a CaptureInboxFolder block's folder."""

    def __init__(self, block):
        self.block = block
        self.root = Path(block.path)
        self.archive_dir = self.root / "archive"

    @property
    def label(self) -> str:
        return f"capture inbox {self.root}"

    def _young(self, path: Path, now: float) -> bool:
        return now - path.stat().st_mtime < self.block.settle_seconds

    def candidates(self, client: str, keep: Callable[[datetime], bool] | None = None) -> tuple[list[Candidate], list[SourceProblem]]:
        """Every readable document of `client` in the inbox, and problems that may concern it.

        keep: the run's window. A metadata file unchanged since this process last read it (same
        size, mtime and inode) and known to be another client's, or approved where keep() says no
        (or not approved), is skipped without reading it: a backfill's chunks each scan the inbox.
        Unreadable files are always read again, so their problems are always reported."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.label}: folder does not exist")
        found: list[Candidate] = []
        problems: list[SourceProblem] = []
        now = time.time()
        for meta_path in sorted(self.root.glob("*.json")):
            if meta_path.name.startswith("."):
                continue
            if keep is not None:
                seen = _SEEN.get(str(meta_path))
                if seen is not None and seen[0] == _stat_key(meta_path) and (seen[1] != client or seen[2] is None or not keep(seen[2])):
                    continue
            result = self._read(meta_path.stem, now, wanted_client=client)
            if isinstance(result, Candidate):
                found.append(result)
            elif result is not None:
                problems.append(result)
        return found, problems

    def candidate(self, doc_id: str, client: str) -> Candidate | SourceProblem | None:
        """Read one document by id (for retries of earlier failures); None if it is not this client's."""
        return self._read(doc_id, time.time(), wanted_client=client)

    def _read(self, doc_id: str, now: float, wanted_client: str) -> Candidate | SourceProblem | None:
        meta_path = self.root / f"{doc_id}.json"
        if not meta_path.exists():
            archived = self.archive_dir / f"{doc_id}.json"
            if archived.exists():
                return None  # archived after a recorded delivery
            return SourceProblem(doc_id, wanted_client, f"document {doc_id}: {meta_path.name} is missing from {self.label}", False)
        stat_key = _stat_key(meta_path)
        try:
            text = meta_path.read_bytes().decode("utf-8")
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
            young = self._young(meta_path, now)
            what = "is still being written" if young else f"is not valid UTF-8 JSON ({exc})"
            return SourceProblem(doc_id, None, f"document {doc_id}: {meta_path.name} {what}", young)
        client = meta.get("client")
        if client != wanted_client:
            _remember(meta_path, stat_key, client, None)
            return None
        try:
            approved_at = _parse_time(meta.get("approved_at"))
            for key in ("type", "status"):
                if not isinstance(meta.get(key), str) or not meta[key]:
                    raise ValueError(f"field {key!r} is missing or not a string")
            # wrong types here would make document() raise (and stop the run) instead of reporting this document
            for key, kinds, what in (("sub_organisation", (str, type(None)), "a string"), ("tags", (list, type(None)), "a list"),
                                     ("metadata", (dict, type(None)), "an object"), ("files", (list, type(None)), "a list of file names")):
                if not isinstance(meta.get(key), kinds):
                    raise ValueError(f"field {key!r} must be {what}")
            if not all(isinstance(name, str) and name for name in meta.get("files") or []):
                raise ValueError("field 'files' must be a list of file names")
        except ValueError as exc:
            return SourceProblem(doc_id, client, f"document {doc_id}: bad metadata in {meta_path.name}: {exc}", False)
        _remember(meta_path, stat_key, client, approved_at)  # readable: its client and approval time decide the window
        names = meta.get("files") or [f"{doc_id}.pdf"]
        parts = []
        for name in names:
            path = self.root / str(name)
            problem = None
            if path.parent != self.root:
                problem = (f"document {doc_id}: file name {name!r} points outside the inbox", False)
            elif not path.is_file():
                problem = (f"document {doc_id}: {name} is missing (metadata without file)", False)
            elif now - path.stat().st_mtime < self.block.settle_seconds:
                problem = (f"document {doc_id}: {name} is still being written", True)
            if problem:
                return SourceProblem(doc_id, client, *problem, meta=meta, approved_at=approved_at)
            st = path.stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        if meta.get("version") is not None:  # a new declared version is a new document version
            parts.append(f"v={meta['version']}")
        return Candidate(doc_id, meta, approved_at, ",".join(parts))

    def document(self, cand: Candidate) -> Document | SourceProblem:
        """The full document: files checked and hashed (streamed; never read whole)."""
        meta = cand.meta
        files: list[DocumentFile] = []
        for i, name in enumerate(meta.get("files") or [f"{cand.doc_id}.pdf"]):
            path = self.root / str(name)
            try:
                with path.open("rb") as fh:
                    head = fh.read(5)
                    fh.seek(0)
                    digest, size = sha256_of_stream(fh)
            except OSError as exc:
                return SourceProblem(cand.doc_id, meta.get("client"), f"document {cand.doc_id}: cannot read {name}: {exc.strerror}", True)
            ext = path.suffix.lower().lstrip(".")
            media = _MEDIA.get(ext) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if size == 0:
                return SourceProblem(cand.doc_id, meta.get("client"), f"document {cand.doc_id}: {name} is empty (0 bytes)", False)
            if i == 0 and media == "application/pdf" and head != b"%PDF-":
                return SourceProblem(cand.doc_id, meta.get("client"), f"document {cand.doc_id}: {name} is not a PDF (no %PDF- header)", False)
            files.append(
                DocumentFile(name=path.name, media_type=media, size=size, sha256=digest).with_opener(
                    lambda p=path: p.open("rb")
                )
            )
        return Document(
            id=cand.doc_id,
            client=meta["client"],
            type=meta["type"],
            sub_organisation=meta.get("sub_organisation"),
            tags=[str(t) for t in meta.get("tags") or []],
            status=meta["status"],
            approved_at=cand.approved_at,
            metadata=dict(meta.get("metadata") or {}),
            files=files,
            version=version_of(files, meta.get("version")),
        )

    def archive(self, doc: Document) -> None:
        """Move a delivered document's files out of the inbox (archive after transfer)."""
        self.archive_dir.mkdir(exist_ok=True)
        for f in doc.files:
            src = self.root / f.name
            if src.exists():
                shutil.move(str(src), self.archive_dir / f.name)
        meta = self.root / f"{doc.id}.json"
        if meta.exists():  # metadata last: until it moves, the document is still visible
            shutil.move(str(meta), self.archive_dir / meta.name)
