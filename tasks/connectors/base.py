"""The connector interface every destination implements.

Like rclone's backends: a small required interface (`check`, `deliver`), and
optional abilities declared as flags that the sync code looks for at runtime.
A connector is built from a connection block (`ConnectionBlock.connector`),
opened once per run (`with connector:`) and reused for every document.
"""

from __future__ import annotations

import enum
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from prefect.blocks.core import Block


class Ability(str, enum.Enum):
    """Optional abilities a connector may declare."""

    VERIFY = "verify"  # checks size (and hash where it can) after the upload
    IDEMPOTENCY_LOOKUP = "lookup"  # can tell whether a package was already delivered
    ASYNC_STATUS = "async_status"  # the destination confirms later: poll `status`
    REMOVE_PARTIAL = "remove_partial"  # can remove what a failed upload left behind
    TOKEN_REFRESH = "token_refresh"  # refreshes OAuth tokens and saves them to its block
    ATOMIC = "atomic"  # a file never appears under its final name half-written
    INVENTORY = "inventory"  # can list what the destination holds (reconciliation)
    CERTIFICATION = "certification"  # passes certification mode on to the destination (Pagero-style sendMode)
    PARALLEL = "parallel"  # `deliver` may run in several threads at once, up to `parallelism` (rclone's --transfers)
    PIPELINE = "pipeline"  # `deliver_many` sends several packages in one exchange (fewer round trips than one by one)


class Mode(str, enum.Enum):
    """Send mode of an integration (Business Central's, plus dry-run)."""

    PRODUCTION = "production"
    TEST = "test"
    CERTIFICATION = "certification"
    DRY_RUN = "dry-run"


class DeliveryError(Exception):
    """A delivery failed. `permanent` errors are not retried within a run."""

    permanent: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TransientDeliveryError(DeliveryError):
    """Network errors, timeouts, 408/429/5xx: retried with backoff."""

    permanent = False


class PermanentDeliveryError(DeliveryError):
    """Bad credentials, permission denied, 4xx, bad content: not retried within the run."""

    permanent = True


class CredentialsRefusedError(PermanentDeliveryError):
    """The destination refused the connection's credentials (a webhook's 401), found only once a
    document is sent. No document is at fault: the sync run stops sending, fails naming the
    connection, and its documents stay `failed` for the next run, never parked for it."""


@dataclass
class PackageFile:
    """One file to deliver, under its mapped name, opened as a stream."""

    name: str
    role: str  # "document", "attachment" or "sidecar"
    media_type: str
    size: int
    sha256: str
    opener: Callable[[], BinaryIO] = field(repr=False)

    def open(self) -> BinaryIO:
        return self.opener()


@dataclass
class Package:
    """A mapped document, ready to deliver: files in delivery order (document first, sidecar last)."""

    doc_id: str
    version: str
    client: str
    integration: str
    folder: str  # relative POSIX path, "" for the connection's base folder
    files: list[PackageFile]
    fields: dict[str, Any] = field(default_factory=dict)
    mode: Mode = Mode.PRODUCTION
    document_type: str = ""
    # Template values a connector may use (e.g. an e-mail subject); already sanitised where paths.
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and runs for one (integration, document, version)."""
        raw = f"{self.integration}\x00{self.doc_id}\x00{self.version}".encode()
        return "dr_" + hashlib.sha256(raw).hexdigest()[:32]

    def path_of(self, f: PackageFile) -> str:
        return f"{self.folder}/{f.name}" if self.folder else f.name

    @property
    def main(self) -> PackageFile:
        return self.files[0]


@dataclass
class Delivery:
    """What the destination confirmed."""

    remote_ref: str
    already_present: bool = False  # an earlier attempt had delivered it; nothing sent twice
    detail: dict[str, Any] = field(default_factory=dict)


class RemoteFile(NamedTuple):
    """One file the destination holds (Ability.INVENTORY)."""

    path: str  # relative to the connection's folder or prefix, as Package.path_of gives it
    size: int
    ref: str  # the form the connector records as a delivery's remote_ref
    partial: bool = False  # a temp file or unfinished upload a delivery left behind
    sha256: str | None = None  # only when asked for and cheap to know


@dataclass
class CheckResult:
    ok: bool
    message: str


class ConnectorOptions(BaseModel):
    """Per-integration settings of a connector (e.g. e-mail recipients). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Connector(ABC):
    """A destination. Subclasses set `abilities` and implement `check` and `deliver`.

    `connection` is the connection block (shared by many clients); `options` are the
    integration's own settings for this connector, validated by `options_model`.
    """

    abilities: ClassVar[frozenset[Ability]] = frozenset()
    options_model: ClassVar[type[ConnectorOptions]] = ConnectorOptions

    def __init__(
        self,
        connection: Block,
        mode: Mode = Mode.PRODUCTION,
        options: dict[str, Any] | ConnectorOptions | None = None,
    ):
        self.connection = connection
        self.mode = mode
        if mode == Mode.CERTIFICATION and Ability.CERTIFICATION not in self.abilities:
            # configuration validation names the integration; this guards direct use
            raise ValueError(
                f"{type(self).__name__} does not know certification mode; use production or test, or a connection "
                f"whose destination takes a certification flag ({', '.join(certification_connections())})"
            )
        if not isinstance(options, ConnectorOptions):
            options = self.options_model.model_validate(options or {})
        self.options = options

    # -- lifecycle: one connection per run, reused for every document ------
    def open(self) -> None:
        """Connect. Called once per run; the default has nothing to open."""

    def close(self) -> None:
        """Disconnect cleanly."""

    def __enter__(self) -> Connector:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def label(self) -> str:
        """Names the endpoint in errors (host, bucket, URL): never a secret."""
        label = getattr(self.connection, "label", None)
        return label() if callable(label) else type(self.connection).__name__

    def test_setting(self, name: str) -> Any:
        """The connection's test target (test folder, URL, prefix, recipient) for test mode.

        An empty one is a clear permanent error rather than a silent production delivery."""
        value = getattr(self.connection, name, None)
        if not value:
            raise PermanentDeliveryError(f"{self.label}: test mode needs {name} set on the connection")
        return value

    # -- required ----------------------------------------------------------
    @abstractmethod
    def check(self) -> CheckResult:
        """Test the connection end to end (connect, reach the folder, write and remove a probe)."""

    @abstractmethod
    def deliver(self, package: Package) -> Delivery:
        """Deliver every file of the package; return only once the destination confirmed it.

        Raises TransientDeliveryError or PermanentDeliveryError. A retry of the
        same package after a crash must be a no-op where the destination allows it.
        """

    # -- optional abilities --------------------------------------------------
    @property
    def parallelism(self) -> int:
        """Ability.PARALLEL: how many `deliver` calls the sync flow may run at once (thread-safe up to this)."""
        return 1

    def deliver_many(self, packages: Sequence[Package]) -> list[Delivery | DeliveryError]:
        """Deliver several packages; results in input order, a DeliveryError returned (not raised) per package.

        The default delivers them one by one. A connector with Ability.PIPELINE overrides it to send
        them in one exchange, with each package's guarantees unchanged (atomic, trigger file last)."""
        results: list[Delivery | DeliveryError] = []
        for package in packages:
            try:
                results.append(self.deliver(package))
            except DeliveryError as exc:
                results.append(exc)
        return results

    def lookup(self, package: Package) -> Delivery | None:
        """Ability.IDEMPOTENCY_LOOKUP: the earlier delivery of this package, if any."""
        raise NotImplementedError

    def status(self, delivery: Delivery) -> str:
        """Ability.ASYNC_STATUS: 'pending', 'delivered' or 'rejected: <reason>'."""
        raise NotImplementedError

    def remove_partial(self, package: Package) -> None:
        """Ability.REMOVE_PARTIAL: remove what a failed delivery of this package left."""
        raise NotImplementedError

    def refresh_token(self) -> None:
        """Ability.TOKEN_REFRESH: refresh and save the new token to the block at once."""
        raise NotImplementedError

    def files_written(self, package: Package) -> list[PackageFile]:
        """The files of `package` this destination stores as files (Ability.INVENTORY: what reconcile
        expects to list). All of them, unless a connector carries some another way (S3 metadata in
        headers: no sidecar object)."""
        return list(package.files)

    def inventory(self, prefix: str = "", hashes: bool = False) -> Iterable[RemoteFile]:
        """Ability.INVENTORY: every file under `prefix` (relative), temp/partial files flagged.

        Raises NotImplementedError when this connection cannot be listed (e.g. a drop box)."""
        raise NotImplementedError


def certification_connections() -> list[str]:
    """Connection block types whose connector passes certification mode on (for error messages)."""
    from tasks.connectors import CONNECTORS, connector_class

    return [slug for slug in sorted(CONNECTORS) if Ability.CERTIFICATION in connector_class(slug).abilities]


class VerifyingReader:
    """Wraps a source stream: counts and hashes what passes through, then `verify()`.

    Connectors stream files through it so a source that changed or broke while
    being read is caught before the file is put under its final name.
    """

    def __init__(self, stream: BinaryIO, expected: PackageFile):
        self._stream = stream
        self._expected = expected
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._digest.update(data)
        self.size += len(data)
        return data

    def verify(self, package: Package) -> None:
        exp = self._expected
        if self.size != exp.size or self._digest.hexdigest() != exp.sha256:
            raise TransientDeliveryError(
                f"document {package.doc_id}: source file {exp.name} changed while being sent "
                f"(expected {exp.size} bytes sha256 {exp.sha256[:12]}, read {self.size} bytes "
                f"sha256 {self._digest.hexdigest()[:12]})"
            )

    def close(self) -> None:
        self._stream.close()
