"""A capture inbox in a cloud folder, polled with the provider's change cursor (Dropbox
list_folder/continue, Graph driveItem delta, Drive changes): the inbox convention of
tasks/sources/inbox.py (<id>.pdf plus extra files, then <id>.json) over a `ChangeStore`.

The source's cursor (opaque to the engine) is JSON: {"v": 1, "c": <the provider's cursor: a
Dropbox cursor, a Graph deltaLink, a Drive page token>, "retry": [doc ids]}.
- No cursor (the first scan, or the provider refused it: Graph 410 resync, Dropbox reset, Drive
  400/404/410 on the page token): the provider's cursor for "from now on" is taken first, then the
  whole folder is listed, and every document in it is a candidate. The engine's ledger skips what
  it already settled, so a resync never loses or doubles a document.
- With a cursor: only documents with a file changed since (in the inbox folder itself: the change
  feeds are drive- or folder-wide and are filtered to it), plus the documents that were problems on
  the last scan (`retry`): a problem is reported on every scan until it is fixed, never dropped.
So the source does not list everything (`lists_everything` False): a document in the folder is
found when it or its metadata changes, or on a resync; the engine adds its earlier failures.

Metadata comes from <id>.json (the inbox convention) or, with the block's metadata="properties",
from the PDF's own properties (Drive `properties`, SharePoint columns): `PropertiesView` shows them
to the convention as a virtual <id>.json, so checks, problems and fingerprints are the same.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod

from tasks.documents import Candidate, SourceProblem
from tasks.sources.base import Scan, Window
from tasks.sources.inbox import Entry, InboxSource, InboxStore


class CursorExpired(Exception):
    """The provider no longer takes the cursor: list everything again."""


class ChangeStore(InboxStore):
    """An inbox store with the provider's change cursor. `cache` holds the entries the last listing
    or change feed reported, so the documents a change concerns are read without one call per file."""

    def __init__(self) -> None:
        self.cache: dict[str, Entry] = {}

    @abstractmethod
    def snapshot(self) -> tuple[dict[str, Entry], str]:
        """Every entry in the inbox folder and a cursor for what changes after (taken before the listing)."""

    @abstractmethod
    def changes(self, cursor: str) -> tuple[set[str], str]:
        """Names in the inbox folder that changed (added, modified, removed, moved away) since `cursor`,
        and the cursor for what comes after. Raises CursorExpired."""

    @abstractmethod
    def lookup(self, name: str) -> Entry | None:
        """One name's entry, asked of the provider."""

    def properties(self, name: str) -> dict | None:
        """The file's own properties (for block metadata="properties"); None where the provider has none."""
        raise NotImplementedError(f"{self.label}: files here carry no properties docroute can read")

    def entry(self, name: str) -> Entry | None:
        return self.cache[name] if name in self.cache else self.lookup(name)


def _stem(name: str) -> str | None:
    if name.startswith(".") or "." not in name:
        return None
    return name.rsplit(".", 1)[0]


class ChangeInboxSource(InboxSource):
    """Documents from an inbox folder whose store has a change cursor; see the module docstring."""

    lists_everything = False
    store: ChangeStore

    def scan(self, client: str, cursor: str | None, window: Window) -> Scan:
        state = None
        if cursor:
            try:
                state = json.loads(cursor)
                if not isinstance(state, dict) or state.get("v") != 1:
                    state = None
            except ValueError:
                state = None  # a cursor of another kind (a time, from before): start afresh
        entries: dict[str, Entry] | None = None
        if state is not None:
            try:
                names, provider_cursor = self.store.changes(state["c"])
                ids = {s for s in map(_stem, names) if s} | set(state.get("retry") or [])
            except CursorExpired:
                state = None
        if state is None:
            entries, provider_cursor = self.store.snapshot()
            ids = {n[: -len(".json")] for n in entries if n.endswith(".json") and not n.startswith(".")}
        now = time.time()
        found: list[Candidate] = []
        problems: list[SourceProblem] = []
        for doc_id in sorted(ids):
            if entries is None and self.store.entry(f"{doc_id}.json") is None and doc_id not in (state.get("retry") or []):
                continue  # a file without metadata (yet), or a document removed: nothing to take
            result = self._read(doc_id, now, client, entries)
            if isinstance(result, Candidate):
                found.append(result)
            elif result is not None:
                problems.append(result)
        retry = sorted({p.doc_id for p in problems})
        return Scan(found, problems, cursor=json.dumps({"v": 1, "c": provider_cursor, "retry": retry}))


# -- metadata from the files' own properties ---------------------------------------------------------------
PROPERTY_KEYS = ("client", "type", "status", "approved_at", "sub_organisation", "tags", "version")
FIELD_PREFIX = "meta_"


def meta_from_properties(name: str, props: dict) -> dict:
    """The inbox convention's metadata JSON from a file's own properties: the keys client, type, status,
    approved_at, sub_organisation, tags (comma-separated) and version, and meta_<field> for each
    metadata field (meta_number -> number). The file itself is the document's only file."""
    meta: dict = {k: props.get(k) for k in PROPERTY_KEYS if props.get(k) not in (None, "")}
    if isinstance(meta.get("tags"), str):
        meta["tags"] = [t.strip() for t in meta["tags"].split(",") if t.strip()]
    meta["metadata"] = {k[len(FIELD_PREFIX):]: v for k, v in props.items() if k.startswith(FIELD_PREFIX) and v is not None}
    meta["files"] = [name]
    return meta


class PropertiesView(ChangeStore):
    """A drop folder whose documents carry their metadata in their own properties (Drive `properties`,
    SharePoint columns), shown to the inbox convention as a `<id>.json` beside each `<id>.pdf`: the
    same checks, problems and fingerprints as a JSON file. The inner store gives `properties(name)`."""

    def __init__(self, inner: ChangeStore):
        super().__init__()
        self.inner = inner
        self.label = inner.label
        self.separators = inner.separators

    def open_session(self) -> None:
        self.inner.open_session()

    def close(self) -> None:
        self.inner.close()

    @staticmethod
    def _pdf(name: str) -> str | None:
        return name[: -len(".json")] + ".pdf" if name.endswith(".json") else None

    def _virtual(self, pdf: Entry) -> tuple[Entry, bytes]:
        import hashlib

        data = json.dumps(meta_from_properties(pdf.name, self.inner.properties(pdf.name) or {}), sort_keys=True).encode()
        stamp = hashlib.sha256(data).hexdigest()[:16]
        return Entry(pdf.name[: -len(".pdf")] + ".json", len(data), pdf.mtime, stamp, pdf.ident), data

    def _with_virtual(self, entries: dict[str, Entry]) -> dict[str, Entry]:
        out = {n: e for n, e in entries.items() if not n.endswith(".json")}  # a real JSON is not the metadata here
        for name, e in list(out.items()):
            if name.endswith(".pdf") and e.is_file and not e.link and not name.startswith("."):
                virtual, _ = self._virtual(e)
                out[virtual.name] = virtual
        return out

    def entries(self) -> dict[str, Entry]:
        return self._with_virtual(self.inner.entries())

    def snapshot(self) -> tuple[dict[str, Entry], str]:
        entries, cursor = self.inner.snapshot()
        return self._with_virtual(entries), cursor

    def changes(self, cursor: str) -> tuple[set[str], str]:
        return self.inner.changes(cursor)

    def lookup(self, name: str) -> Entry | None:
        pdf = self._pdf(name)
        if pdf is None:
            return self.inner.entry(name)
        entry = self.inner.entry(pdf)
        return self._virtual(entry)[0] if entry is not None else None

    def entry(self, name: str) -> Entry | None:
        return self.lookup(name)

    def read(self, name: str) -> bytes:
        pdf = self._pdf(name)
        if pdf is None:
            return self.inner.read(name)
        entry = self.inner.entry(pdf)
        if entry is None:
            raise FileNotFoundError(2, f"{pdf} is no longer in {self.label}")
        return self._virtual(entry)[1]

    def open(self, name: str):
        return self.inner.open(name)

    def archive(self, names: list[str]) -> None:
        self.inner.archive([n for n in names if not n.endswith(".json")])

    def archived(self, name: str) -> bool:
        return self.inner.archived(self._pdf(name) or name)
