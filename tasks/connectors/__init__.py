"""Connectors: where documents go. One module per destination, registered here by block type."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.blocks.core import Block

    from tasks.connectors.base import Connector, Mode

# Connection block type slug -> connector class ("module:Class"). One line per connector.
CONNECTORS: dict[str, str] = {
    "local-folder-connection": "tasks.connectors.local_folder:LocalFolderConnector",
    "webhook-connection": "tasks.connectors.webhook:WebhookConnector",
    "smtp-connection": "tasks.connectors.email:EmailConnector",
    "s3-connection": "tasks.connectors.s3:S3Connector",
    "sftp-connection": "tasks.connectors.sftp:SftpConnector",
}


def connector_class(block_type_slug: str) -> type[Connector]:
    try:
        target = CONNECTORS[block_type_slug]
    except KeyError:
        raise LookupError(
            f"block type {block_type_slug!r} is not a connection; connections: {', '.join(sorted(CONNECTORS))}"
        ) from None
    from blocks.base import import_target

    return import_target(target)


def make_connector(block: Block, mode: Mode | None = None, options: dict[str, Any] | None = None) -> Connector:
    """Build the connector for a connection block, in a send mode, with an integration's options."""
    from tasks.connectors.base import Mode

    return connector_class(block.get_block_type_slug())(block, mode or Mode.PRODUCTION, options)
