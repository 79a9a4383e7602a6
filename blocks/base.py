"""Base class for connection blocks, and loading blocks by their "type/name" reference."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar

from prefect.blocks.core import Block

if TYPE_CHECKING:
    from tasks.connectors.base import Connector, Mode

# Block type slug -> "module:Class". One line per connection or source type; imported
# lazily so a run only imports the libraries of the connector it uses.
BLOCK_TYPES: dict[str, str] = {
    "capture-inbox-folder": "blocks.capture_inbox:CaptureInboxFolder",
    "local-folder-connection": "blocks.local_folder:LocalFolderConnection",
    "webhook-connection": "blocks.webhook:WebhookConnection",
    "smtp-connection": "blocks.smtp:SmtpConnection",
    "s3-connection": "blocks.s3:S3Connection",
    "sftp-connection": "blocks.sftp:SftpConnection",
    "ledger-database": "blocks.ledger:LedgerDatabase",
}


class UnknownBlockError(LookupError):
    """A block reference names a type or a document that does not exist."""


def import_target(target: str):
    """Import "module:Name" (registries name classes this way so only what a run uses is imported)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def block_class(slug: str) -> type[Block]:
    try:
        target = BLOCK_TYPES[slug]
    except KeyError:
        raise UnknownBlockError(
            f"unknown block type {slug!r}; known types: {', '.join(sorted(BLOCK_TYPES))}"
        ) from None
    return import_target(target)


def load_block(ref: str) -> Block:
    """Load a block document by "type-slug/name" (e.g. "sftp-connection/partner-a")."""
    slug, sep, name = ref.partition("/")
    if not sep or not name:
        raise UnknownBlockError(f"block reference {ref!r} must look like 'type-slug/name'")
    cls = block_class(slug)
    try:
        return cls.load(name)
    except ValueError as exc:  # Prefect raises ValueError for a missing document
        raise UnknownBlockError(f"block {ref!r} does not exist on the Prefect server ({exc})") from None


def register_block_types() -> None:
    """Register every block type with the Prefect server, so the UI can create them."""
    for slug in BLOCK_TYPES:
        block_class(slug).register_type_and_schema()


class ConnectionBlock(Block):
    """A connection: one endpoint's settings and secrets, reused by many integrations."""

    _block_schema_capabilities: ClassVar[list[str]] = ["connection"]

    def connector(self, mode: Mode | None = None, options: dict | None = None) -> Connector:
        """Build the connector for this connection (see tasks.connectors.CONNECTORS)."""
        from tasks.connectors import make_connector

        return make_connector(self, mode, options)

    def label(self) -> str:
        """A human name for the endpoint, used in errors and reports; never contains secrets."""
        return self._block_document_name or type(self).__name__
