"""Source block for GetMyInvoices (accounts API v3): a capture system's documents, polled over its REST API."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks.base import SourceBlock, http_url


class GetMyInvoicesSource(SourceBlock):
    """A GetMyInvoices account whose documents docroute exports (tasks/sources/getmyinvoices.py).

    Polled with GET /documents?updatedOrNewSinceFilter=... from the poll's start time (kept as the
    source's cursor), minus the integration's lookback; each document's approval is read from its
    workflow (GET /documents/{uid}: workflowDetails.isCompleted), or every document counts as approved
    on arrival when the integration sets `filters.approved_only: false` (GetMyInvoices' own
    approval flag). Files arrive base64 in fileContent and are decoded into a temporary file while
    read; attachments (a UBL XML) become extra files. Archive after transfer archives the document
    (PUT isArchived=1) or adds a tag. Calls are paced to `calls_per_minute`. Every assumption about
    what GetMyInvoices does not document is in docs/api-sources.md.

    Example:
        ```python
        from blocks.getmyinvoices import GetMyInvoicesSource
        GetMyInvoicesSource(api_key="<API key: Profile > API Access>", client="acme").save("acme-gmi")
        ```
    """

    _block_type_name: ClassVar[str] = "GetMyInvoices Source"
    _block_type_slug: ClassVar[str] = "getmyinvoices-source"
    _description: ClassVar[str] = (
        "A GetMyInvoices account (accounts API v3) whose approved documents are exported: X-API-KEY, "
        "updatedOrNewSinceFilter polling, workflow approval, base64 files decoded while read, archive or tag after transfer."
    )

    api_key: SecretStr = Field(description="The account's API key (GetMyInvoices: Profile > API Access > Add API Key), sent as X-API-KEY.")
    base_url: str = Field(
        default="https://api.getmyinvoices.com/accounts/v3",
        description="The accounts API v3 base URL (a local fake's URL in tests).",
    )
    client: str | None = Field(
        default=None,
        description="The docroute client whose documents this account holds (one account per client, the usual case). "
        "A scan for any other client finds nothing.",
    )
    client_tag_prefix: str | None = Field(
        default=None,
        description="For an account shared by several clients: each document carries a tag '<prefix><client>' "
        "(e.g. prefix 'client:' and tag 'client:acme'); documents without such a tag belong to `client`, if set.",
    )
    include_archived: bool = Field(
        default=False,
        description="Also list archived documents (archivedFilter=1). Off (archivedFilter=0): archiving a document in "
        "GetMyInvoices, by hand or by archive after transfer, takes it out of the export.",
    )
    mark_exported: Literal["archive", "tag"] = Field(
        default="archive",
        description="Archive after transfer: 'archive' sets isArchived=1, 'tag' adds `export_tag` (the full tag list is "
        "sent, as GetMyInvoices may replace it). An integration can choose otherwise in source_options.mark_exported.",
    )
    export_tag: str = Field(default="docroute-exported", description="The tag added by mark_exported='tag'; tagged documents are not listed again.")
    type_map: dict[str, str] = Field(
        default_factory=dict,
        description="GetMyInvoices documentType -> docroute type, over the defaults (INCOMING_INVOICE: invoice, "
        "CREDIT_NOTE: credit_note, SALES_INVOICE: sales_invoice, ...); an integration overrides in source_options.type_map.",
    )
    timezone: str | None = Field(
        default=None,
        description="Time zone of GetMyInvoices' date-times (updatedOrNewSinceFilter, creation and completion times), "
        "which the API sends without one. Empty: the account's own (GET /account 'timezone'), else UTC.",
    )
    calls_per_minute: int | None = Field(
        default=100, ge=1,
        description="Calls per 60 s, paced on our side (GetMyInvoices' published throttle: 100 per 60 s per connection). "
        "Empty: no pacing of our own (429 answers and Retry-After are still honoured).",
    )
    page_size: int = Field(default=500, ge=1, le=500, description="Documents per listing page (perPage; GetMyInvoices' maximum is 500).")
    verify_tls: bool = Field(default=True, description="Verify the API's TLS certificate. Turn off only for a test server.")
    ca_bundle: str | None = Field(default=None, description="PEM file of the CA to trust (a private CA or a local fake).")
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each call to connect and to answer.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value).rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value or None

    @model_validator(mode="after")
    def _whose(self) -> GetMyInvoicesSource:
        if not self.client and not self.client_tag_prefix:
            raise ValueError("set client (the docroute client of this account) or client_tag_prefix (a shared account)")
        return self

    def label(self) -> str:
        name = self._block_document_name
        return f"getmyinvoices {name}" if name else f"getmyinvoices {urlsplit(self.base_url).netloc}"
