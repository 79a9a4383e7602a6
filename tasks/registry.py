"""One registry: every Prefect block type docroute knows, and the connector or source behind it.

Adding a connector or a source is one line here (its block type slug, its block class and its
implementation class, as "module:Class" strings so a run only imports the libraries it uses),
plus its module, its block and one line in its conformance suite (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.settings import get_settings

if TYPE_CHECKING:
    from prefect.blocks.core import Block

    from tasks.connectors.base import Connector, Mode
    from tasks.sources.base import Source


@dataclass(frozen=True)
class BlockType:
    """A block type: its Prefect block class and, for connections and sources, what implements it."""

    slug: str
    block: str  # "module:Class" of the block
    connector: str | None = None  # "module:Class" of the Connector, for a connection
    source: str | None = None  # "module:Class" of the Source, for a source


BLOCK_TYPES: dict[str, BlockType] = {
    t.slug: t
    for t in (
        # sources
        BlockType("capture-inbox-folder", "blocks.capture_inbox:CaptureInboxFolder", source="tasks.sources.folder_inbox:FolderInbox"),
        BlockType("sftp-inbox", "blocks.sftp_inbox:SftpInbox", source="tasks.sources.sftp_inbox:SftpInboxSource"),
        BlockType("s3-inbox", "blocks.s3_inbox:S3Inbox", source="tasks.sources.s3_inbox:S3InboxSource"),
        BlockType("dropbox-inbox", "blocks.dropbox_inbox:DropboxInbox", source="tasks.sources.dropbox_inbox:DropboxInboxSource"),
        BlockType("onedrive-inbox", "blocks.onedrive_inbox:OneDriveInbox", source="tasks.sources.onedrive_inbox:OneDriveInboxSource"),
        BlockType("google-drive-inbox", "blocks.gdrive_inbox:GoogleDriveInbox", source="tasks.sources.gdrive_inbox:GoogleDriveInboxSource"),
        BlockType("smb-inbox", "blocks.smb_inbox:SmbInbox", source="tasks.sources.smb_inbox:SmbInboxSource"),
        BlockType("getmyinvoices-source", "blocks.getmyinvoices:GetMyInvoicesSource", source="tasks.sources.getmyinvoices:GetMyInvoicesSource"),
        BlockType("debitoor-expenses", "blocks.debitoor:DebitoorExpenses", source="tasks.sources.debitoor:DebitoorExpensesSource"),
        BlockType("exact-online-source", "blocks.exact_online:ExactOnlineSource", source="tasks.sources.exact_online:ExactOnlineSource"),
        BlockType("docbits-source", "blocks.docbits:DocbitsSource", source="tasks.sources.docbits:DocbitsSource"),
        # connections
        BlockType("local-folder-connection", "blocks.local_folder:LocalFolderConnection", connector="tasks.connectors.local_folder:LocalFolderConnector"),
        BlockType("webhook-connection", "blocks.webhook:WebhookConnection", connector="tasks.connectors.webhook:WebhookConnector"),
        BlockType("smtp-connection", "blocks.smtp:SmtpConnection", connector="tasks.connectors.email:EmailConnector"),
        BlockType("s3-connection", "blocks.s3:S3Connection", connector="tasks.connectors.s3:S3Connector"),
        BlockType("sftp-connection", "blocks.sftp:SftpConnection", connector="tasks.connectors.sftp:SftpConnector"),
        BlockType("dropbox-connection", "blocks.dropbox:DropboxConnection", connector="tasks.connectors.dropbox:DropboxConnector"),
        BlockType("onedrive-connection", "blocks.onedrive:OneDriveConnection", connector="tasks.connectors.onedrive:OneDriveConnector"),
        BlockType("google-drive-connection", "blocks.gdrive:GoogleDriveConnection", connector="tasks.connectors.gdrive:GoogleDriveConnector"),
        BlockType("smb-connection", "blocks.smb:SmbConnection", connector="tasks.connectors.smb:SmbConnector"),
        BlockType("infor-idm-connection", "blocks.infor:InforIdmConnection", connector="tasks.connectors.infor_idm:InforIdmConnector"),
        BlockType("infor-ion-connection", "blocks.infor:InforIonConnection", connector="tasks.connectors.infor_ion:InforIonConnector"),
        BlockType("infor-idm-ion-connection", "blocks.infor:InforIdmIonConnection", connector="tasks.connectors.infor_ion:InforIdmIonConnector"),
        BlockType("access-point-connection", "blocks.access_point:AccessPointConnection", connector="tasks.connectors.access_point:AccessPointConnector"),
        BlockType("exact-online-connection", "blocks.exact_online_connection:ExactOnlineConnection", connector="tasks.connectors.exact_online:ExactOnlineConnector"),
        BlockType("debitoor-connection", "blocks.debitoor:DebitoorConnection", connector="tasks.connectors.debitoor:DebitoorConnector"),
        # other
        BlockType("infor-ionapi", "blocks.infor:InforIonApiConnection"),  # nested in the Infor connections: credentials and token
        BlockType("ledger-database", "blocks.ledger:LedgerDatabase"),
    )
}


class UnknownBlockError(LookupError):
    """A block reference names a type or a document that does not exist, or a block of the wrong kind."""


def import_target(target: str) -> Any:
    """Import "module:Name"."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def block_type(slug: str) -> BlockType:
    try:
        return BLOCK_TYPES[slug]
    except KeyError:
        raise UnknownBlockError(f"unknown block type {slug!r}; known types: {', '.join(sorted(BLOCK_TYPES))}") from None


def block_class(slug: str) -> type[Block]:
    return import_target(block_type(slug).block)


def connection_types() -> list[str]:
    return sorted(s for s, t in BLOCK_TYPES.items() if t.connector)


def source_types() -> list[str]:
    return sorted(s for s, t in BLOCK_TYPES.items() if t.source)


def connector_class(slug: str) -> type[Connector]:
    target = block_type(slug).connector
    if target is None:
        raise UnknownBlockError(f"block type {slug!r} is not a connection; connections: {', '.join(connection_types())}")
    return import_target(target)


def source_class(slug: str) -> type[Source]:
    target = block_type(slug).source
    if target is None:
        raise UnknownBlockError(f"block type {slug!r} is not a source; sources: {', '.join(source_types())}")
    return import_target(target)


_LOADED: dict[str, tuple[float, Block]] = {}  # a warm process's blocks: ref -> (loaded at, block)
_LOADED_LOCK = threading.Lock()


def load_block(ref: str) -> Block:
    """Load a block document by "type-slug/name" (e.g. "sftp-connection/partner-a").

    A warm process (the docroute worker: DOCROUTE_WARM) reuses a block it loaded less than
    block_cache_seconds ago, so an idle poll costs no API call for its blocks; a block edited in
    the UI is used from then on."""
    settings = get_settings()
    if settings.warm and settings.block_cache_seconds:
        with _LOADED_LOCK:
            hit = _LOADED.get(ref)
        if hit is not None and time.monotonic() - hit[0] < settings.block_cache_seconds:
            return hit[1]
        block = _load(ref)
        with _LOADED_LOCK:
            _LOADED[ref] = (time.monotonic(), block)
        return block
    return _load(ref)


def _load(ref: str) -> Block:
    slug, sep, name = ref.partition("/")
    if not sep or not name:
        raise UnknownBlockError(f"block reference {ref!r} must look like 'type-slug/name'")
    cls = block_class(slug)
    try:
        return cls.load(name)
    except ValueError as exc:  # Prefect raises ValueError for a missing document
        raise UnknownBlockError(f"block {ref!r} does not exist on the Prefect server ({exc})") from None


def make_connector(block: Block, mode: Mode | None = None, options: dict[str, Any] | None = None) -> Connector:
    """The connector of a connection block, in a send mode (default production), with an integration's options."""
    return connector_class(block.get_block_type_slug())(block, mode, options)


def make_source(block: Block) -> Source:
    """The source of a source block."""
    return source_class(block.get_block_type_slug())(block)


def register_block_types() -> None:
    """Register every block type with the Prefect server, so the UI can create them."""
    for slug in BLOCK_TYPES:
        block_class(slug).register_type_and_schema()
