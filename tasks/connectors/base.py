"""The connector interface every destination implements.

Like rclone's backends: a small required interface (`check`, `deliver`) and optional abilities.
An ability is never declared: it is derived from the methods a connector class implements (as
rclone's Features.Fill does), so no connector can claim one it lacks. A connector is built from a
connection block (`ConnectionBlock.connector`, tasks.registry), opened once per run (`with
connector:`) and reused for every document.
"""

from __future__ import annotations

import enum
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict

from tasks import registry
from tasks.errors import (
    CredentialsRefusedError,
    PermanentError,
    RemoteError,
    TransientError,
)
from tasks.secrets import scrub

if TYPE_CHECKING:
    from prefect.blocks.core import Block

# The names connectors raise (one error hierarchy for every remote exchange: tasks.errors).
DeliveryError = RemoteError
TransientDeliveryError = TransientError
PermanentDeliveryError = PermanentError
__all__ = ["CredentialsRefusedError", "DeliveryError", "PermanentDeliveryError", "TransientDeliveryError"]


class Ability(str, enum.Enum):
    """Optional abilities, each derived from the method that provides it (`Connector.abilities`)."""

    IDEMPOTENCY_LOOKUP = "lookup"  # lookup(): can tell whether a package was already delivered
    ASYNC_STATUS = "status"  # status(): the destination confirms later (submitted, then accepted or rejected)
    REMOVE_PARTIAL = "remove_partial"  # remove_partial(): can remove what a failed upload left behind
    INVENTORY = "inventory"  # inventory(): can list what the destination holds (reconciliation)
    CERTIFICATION = "certification"  # certification(): passes certification mode on (Pagero-style sendMode)
    PARALLEL = "parallel"  # parallelism: `deliver` may run in several threads at once (rclone's --transfers)
    PIPELINE = "pipeline"  # deliver_many(): several packages in one exchange (fewer round trips)


# Ability -> the Connector attribute whose override provides it.
_PROVIDED_BY = {
    Ability.IDEMPOTENCY_LOOKUP: "lookup",
    Ability.ASYNC_STATUS: "status",
    Ability.REMOVE_PARTIAL: "remove_partial",
    Ability.INVENTORY: "inventory",
    Ability.CERTIFICATION: "certification",
    Ability.PARALLEL: "parallelism",
    Ability.PIPELINE: "deliver_many",
}


class Mode(str, enum.Enum):
    """Send mode of an integration (Business Central's, plus dry-run)."""

    PRODUCTION = "production"
    TEST = "test"
    CERTIFICATION = "certification"
    DRY_RUN = "dry-run"


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
    """What the destination confirmed.

    `accepted` False: the destination took the document but decides later (an access point's
    validation): the ledger records it `submitted` with `remote_ref` and `detail`, and `status()`
    is asked until it says accepted or rejected (Ability.ASYNC_STATUS)."""

    remote_ref: str
    already_present: bool = False  # an earlier attempt had delivered it; nothing sent twice
    detail: dict[str, Any] = field(default_factory=dict)  # stored in the ledger (JSON): what status() needs
    accepted: bool = True


@dataclass(frozen=True)
class Confirmation:
    """What `status()` says of a submitted delivery."""

    PENDING: ClassVar[str] = "pending"
    ACCEPTED: ClassVar[str] = "accepted"
    REJECTED: ClassVar[str] = "rejected"

    state: str  # PENDING (keep waiting), ACCEPTED or REJECTED
    reason: str = ""  # why rejected, or what it waits for ("awaiting interaction")
    detail: dict[str, Any] | None = None  # replaces the stored detail when given (a document id learnt later)


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
    """A destination. Subclasses implement `check` and `deliver`, and any optional method.

    `connection` is the connection block (shared by many clients); `options` are the
    integration's own settings for this connector, validated by `options_model`. `abilities`
    is derived from the optional methods the class overrides; it cannot be set.
    """

    abilities: ClassVar[frozenset[Ability]] = frozenset()
    options_model: ClassVar[type[ConnectorOptions]] = ConnectorOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "abilities" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: abilities are derived from the methods a connector implements; do not set them")
        cls.abilities = frozenset(
            ability for ability, name in _PROVIDED_BY.items() if getattr(cls, name) is not getattr(Connector, name)
        )

    def __init__(
        self,
        connection: Block,
        mode: Mode | None = None,
        options: dict[str, Any] | ConnectorOptions | None = None,
    ):
        mode = mode or Mode.PRODUCTION
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

    def scrub(self, text: str) -> str:
        """`text` without any of the connection's secrets (every error message goes through it)."""
        return scrub(text, self.connection.secret_values())

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

    # -- optional abilities: implementing one of these methods gives the connector its ability ------
    @property
    def parallelism(self) -> int:
        """Ability.PARALLEL: how many `deliver` calls the engine may run at once (thread-safe up to this)."""
        return 1

    def deliver_many(self, packages: Sequence[Package]) -> list[Delivery | DeliveryError]:
        """Deliver several packages; results in input order, a DeliveryError returned (not raised) per package.

        The default delivers them one by one. A connector that overrides it (Ability.PIPELINE) sends
        them in one exchange, with each package's guarantees unchanged (atomic, trigger file last)."""
        results: list[Delivery | DeliveryError] = []
        for package in packages:
            try:
                results.append(self.deliver(package))
            except DeliveryError as exc:
                results.append(exc)
        return results

    def lookup(self, package: Package) -> Delivery | None:
        """Ability.IDEMPOTENCY_LOOKUP: the earlier delivery (or submission) of this package, if any."""
        raise NotImplementedError

    def status(self, delivery: Delivery) -> Confirmation:
        """Ability.ASYNC_STATUS: what the destination now says of a submitted delivery (remote_ref, detail)."""
        raise NotImplementedError

    def remove_partial(self, package: Package) -> None:
        """Ability.REMOVE_PARTIAL: remove what a failed delivery of this package left."""
        raise NotImplementedError

    def certification(self) -> str:
        """Ability.CERTIFICATION: where certification-mode deliveries go, e.g. "certification_url
        https://..." or "sendMode=Certification" (shown by docroute check)."""
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
    return [slug for slug in registry.connection_types() if Ability.CERTIFICATION in registry.connector_class(slug).abilities]


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
