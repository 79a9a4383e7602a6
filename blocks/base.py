"""Base classes of docroute's blocks: connections (where documents go) and sources (where they are polled).

Which block type is a connection or a source, and what implements it, is said in one place:
tasks/registry.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block

from tasks import registry
from tasks.secrets import secret_values

if TYPE_CHECKING:
    from deployments.schema import Integration
    from tasks.connectors.base import Connector, Mode
    from tasks.sources.base import Source


def http_url(value: str | None) -> str | None:
    """A field validator's check: an http:// or https:// URL with a host (or None)."""
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
    return value


def url_label(url: str) -> str:
    """'scheme://host[:port]/path' of a URL: no user:password@, no query, no fragment."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class DocrouteBlock(Block):
    """What every docroute block can say of itself: a label for messages and the secrets to keep out of them."""

    def label(self) -> str:
        """A human name for the endpoint, used in errors and reports; never contains secrets."""
        return self._block_document_name or type(self).__name__

    def reference(self) -> str:
        """"type-slug/name", as client files name the block ("" for a block that was never saved)."""
        name = self._block_document_name
        return f"{self.get_block_type_slug()}/{name}" if name else ""

    def secret_values(self) -> list[str]:
        """Values that must never appear in a message: every SecretStr field, nested blocks' too."""
        return secret_values(self)


class ConnectionBlock(DocrouteBlock):
    """A connection: one endpoint's settings and secrets, reused by many integrations."""

    _block_schema_capabilities: ClassVar[list[str]] = ["connection"]

    def connector(self, mode: Mode | None = None, options: dict | None = None) -> Connector:
        """The connector for this connection (tasks.registry)."""
        return registry.make_connector(self, mode, options)


class SourceBlock(DocrouteBlock):
    """A source: where a client's documents are polled (a capture inbox, a capture system's API)."""

    _block_schema_capabilities: ClassVar[list[str]] = ["source"]

    def source(self, integration: Integration | None = None) -> Source:
        """The source for this block (tasks.registry), bound to `integration` when given (Source.bind)."""
        source = registry.make_source(self)
        if integration is not None:
            source.bind(integration)
        return source
