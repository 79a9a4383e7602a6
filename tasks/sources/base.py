"""The source interface every place documents are polled from implements.

Like the connectors (and the Singer SDK's taps): a small required interface, `scan`, `find`,
`fetch` and `check`, and optional abilities derived from the methods a source class implements:

    scan(client, cursor, window) -> Scan     candidates, problems, the next cursor (opaque text)
    find(doc_id, client)                     one document by id (a retry of an earlier failure)
    fetch(candidate) -> Document | problem   the files, as streams with size and SHA-256
    check() -> CheckResult                   reach the source (docroute check)
    mark_exported(document)                  Ability.MARK_EXPORTED: archive after transfer, a tag, a status
    deleted(client, cursor) -> [doc ids]     Ability.TOMBSTONES: documents deleted at the source
    census() -> Scan                         Ability.CENSUS: every document, whatever its client (unclaimed report)
    bind(integration)                        the integration a run reads for (filters, identifiers, source_options)
    in_range(candidate, window) -> bool      a backfill's range: by approval time unless the source says otherwise

A source declares its cursor: `lists_everything` (a capture inbox reads every metadata file on each
scan, so a document approved long ago that the ledger never saw is still found) or not (an API
that lists a window from a cursor: the lookback bounds how late an approval can be). The cursor
is opaque to the engine: it is stored as text after the run's documents are recorded and handed
back on the next scan (a time, a Graph deltaLink, a Drive page token, an Exact Timestamp).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from deployments.schema import pydantic_problems
from tasks.connectors.base import CheckResult
from tasks.documents import Candidate, Document, SourceProblem

if TYPE_CHECKING:
    from prefect.blocks.core import Block

    from deployments.schema import Integration


class SourceAbility(str, enum.Enum):
    """Optional abilities of a source, each derived from the method that provides it."""

    MARK_EXPORTED = "mark_exported"  # mark_exported(): archive after transfer (or tag, or set a status)
    TOMBSTONES = "tombstones"  # deleted(): tells which documents were deleted at the source
    CENSUS = "census"  # census(): every document, whatever its client (the unclaimed-documents report)


_PROVIDED_BY = {SourceAbility.MARK_EXPORTED: "mark_exported", SourceAbility.TOMBSTONES: "deleted", SourceAbility.CENSUS: "census"}


@dataclass(frozen=True)
class Window:
    """What a scan is asked for, in approval time (inclusive at both ends).

    A scheduled run's window starts where the last one checked up to, minus the lookback (never
    before activation), and ends at the run's start (the signpost: a document approved while the
    run runs is the next run's). `ranged`: a backfill, which wants only documents approved inside."""

    start: datetime
    end: datetime
    ranged: bool = False

    def holds(self, approved_at: datetime | None) -> bool:
        return approved_at is not None and self.start <= approved_at <= self.end


@dataclass
class Scan:
    """What a scan found: readable candidates, problems (never dropped), and the cursor to save
    once the run's documents are recorded (None: nothing to save)."""

    candidates: list[Candidate] = field(default_factory=list)
    problems: list[SourceProblem] = field(default_factory=list)
    cursor: str | None = None


class SourceOptions(BaseModel):
    """Per-integration settings of a source (`source_options` in the client file). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Source(ABC):
    """A place documents are polled from. Built from a source block (tasks.registry), one per run."""

    abilities: ClassVar[frozenset[SourceAbility]] = frozenset()
    lists_everything: ClassVar[bool] = False  # declared: see the module docstring

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "abilities" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: abilities are derived from the methods a source implements; do not set them")
        cls.abilities = frozenset(a for a, name in _PROVIDED_BY.items() if getattr(cls, name) is not getattr(Source, name))

    options_model: ClassVar[type[SourceOptions]] = SourceOptions  # an integration's `source_options`, validated

    def __init__(self, block: Block):
        self.block = block
        self.integration: Integration | None = None  # the integration this run is for (bind), if any
        self.options: SourceOptions = self.options_model()

    # -- the integration a run is for -----------------------------------------------------------
    def bind(self, integration: Integration) -> None:
        """The integration this run reads for: its filters, the client's identifiers (an Exact division)
        and its `source_options` (validated by `options_model`). Called by the engine before the scan;
        a source used without one (docroute check, the status census) keeps its block's settings."""
        self.integration = integration
        self.options = self.options_model.model_validate(integration.source_options)

    @classmethod
    def config_problems(cls, block: Block, integration: Integration, where: str) -> list[str]:
        """What is wrong with an integration reading this source (docroute validate, before a run):
        its `source_options`, archive after transfer on a source that cannot mark documents, and what
        a source class adds. Each names the integration and the field."""
        from pydantic import ValidationError


        problems = []
        try:
            cls.options_model.model_validate(integration.source_options)
        except ValidationError as exc:
            problems.extend(pydantic_problems(f"{where}: source_options", exc))
        if integration.archive_after_transfer and SourceAbility.MARK_EXPORTED not in cls.abilities:
            problems.append(f"{where}: archive_after_transfer: {integration.source} cannot mark a document exported "
                            f"({cls.__name__}); set archive_after_transfer: false")
        return problems

    def in_range(self, candidate: Candidate, window: Window) -> bool:
        """A backfill (window.ranged): does the candidate fall in its range? By approval time; a source
        whose remote selects a range by another date (GetMyInvoices: the document date) says so here."""
        return window.holds(candidate.approved_at)

    @property
    def label(self) -> str:
        """Names the source in messages (a folder, a host and folder, a bucket and prefix): never a secret."""
        return self.block.label()

    # -- lifecycle: one per run ------------------------------------------------
    def open(self) -> None:
        """Connect (an SFTP session, an API client). The default has nothing to open."""

    def close(self) -> None:
        """Disconnect."""

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- required ----------------------------------------------------------------
    @abstractmethod
    def scan(self, client: str, cursor: str | None, window: Window) -> Scan:
        """The client's documents that are new or changed since `cursor` (sources that list everything
        return every one; the engine skips what the ledger already has), and the problems."""

    @abstractmethod
    def find(self, doc_id: str, client: str) -> Candidate | SourceProblem | None:
        """One document by id; None when it is not there for this client (or no longer: archived, deleted)."""

    @abstractmethod
    def fetch(self, candidate: Candidate) -> Document | SourceProblem:
        """The full document: files as streams, each with size and SHA-256 (read once, never held whole)."""

    @abstractmethod
    def check(self) -> CheckResult:
        """Reach the source: connect, list, read (docroute check)."""

    # -- optional abilities ---------------------------------------------------------
    def mark_exported(self, document: Document) -> None:
        """SourceAbility.MARK_EXPORTED: mark a delivered document (archive after transfer). Idempotent:
        called again for a document already marked, it does nothing. Called only after the delivery is recorded."""
        raise NotImplementedError

    def census(self) -> Scan:
        """SourceAbility.CENSUS: every document the source holds, whatever its client (candidates carry
        the client as the source names it, trimmed and case-folded), for the unclaimed-documents report."""
        raise NotImplementedError

    def deleted(self, client: str, cursor: str | None) -> list[str]:
        """SourceAbility.TOMBSTONES: ids of the client's documents deleted at the source since `cursor`."""
        raise NotImplementedError
