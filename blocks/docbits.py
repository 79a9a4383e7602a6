"""Source block for Docbits: the pending-export queue of a Docbits (formerly Polydocs / DOC2) tenant."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks.base import SourceBlock, http_url


class DocbitsSource(SourceBlock):
    """A Docbits tenant whose documents ready for export docroute takes (tasks/sources/docbits.py).

    The pending-export queue the WatchDog agent reads: get_pending_watch_export_documents per document
    type, then each document's metadata and files, then update_pending_watch_export_status once the
    delivery is recorded (set archive_after_transfer: true on the integration, or the queue keeps
    the document). Docbits publishes these endpoints but not their bodies: every assumption about
    them is in docs/api-sources.md, and the mapping of their fields to ours is in one table
    (tasks/sources/docbits.py FIELD_MAP), easy to correct.

    Example:
        ```python
        from blocks.docbits import DocbitsSource
        DocbitsSource(api_key="<Settings > Global Settings > Integration>", client="acme").save("acme-docbits")
        ```
    """

    _block_type_name: ClassVar[str] = "Docbits Source"
    _block_type_slug: ClassVar[str] = "docbits-source"
    _description: ClassVar[str] = (
        "A Docbits tenant's pending-export queue (X-API-KEY): documents ready for export, their files, and the "
        "acknowledgement once a delivery is recorded."
    )

    api_key: SecretStr = Field(description="The tenant's API key (Docbits: Settings > Global Settings > Integration), sent as X-API-KEY.")
    base_url: str = Field(
        default="https://api.docbits.com",
        description="The API host: https://api.docbits.com, or the sandbox, stage or demo one (a local fake's URL in tests).",
    )
    document_types: list[str] = Field(
        default_factory=lambda: ["INVOICE", "CREDIT_NOTE"],
        description="Docbits document types whose pending-export queues are read (get_pending_watch_export_documents?doc_type=...); "
        "an integration's filters.document_types narrows them.",
    )
    type_map: dict[str, str] = Field(
        default_factory=dict,
        description="Docbits document type -> docroute type, over the defaults (INVOICE: invoice, CREDIT_NOTE: credit_note, "
        "ORDER_CONFIRMATION: order_confirmation, ...); others are lower-cased. An integration overrides in source_options.type_map.",
    )
    client: str | None = Field(
        default=None, description="The docroute client of documents whose organisation is not in `org_clients` (a one-client tenant)."
    )
    org_clients: dict[str, str] = Field(
        default_factory=dict,
        description="Docbits organisation id -> docroute client, for a tenant with several clients' organisations. A "
        "document's sub-organisation becomes its sub_organisation.",
    )
    calls_per_minute: int | None = Field(
        default=None, ge=1, description="Calls per 60 s paced on our side (Docbits publishes no limit; 429 and Retry-After are honoured)."
    )
    verify_tls: bool = Field(default=True, description="Verify the API's TLS certificate. Turn off only for a test server.")
    ca_bundle: str | None = Field(default=None, description="PEM file of the CA to trust (a private CA or a local fake).")
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each call to connect and to answer.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value).rstrip("/")

    @model_validator(mode="after")
    def _whose(self) -> DocbitsSource:
        if not self.client and not self.org_clients:
            raise ValueError("set client (a one-client tenant) or org_clients (organisation id -> client)")
        if not self.document_types:
            raise ValueError("document_types: name at least one Docbits document type")
        return self

    def label(self) -> str:
        name = self._block_document_name
        return f"docbits {name}" if name else f"docbits {urlsplit(self.base_url).netloc}"
