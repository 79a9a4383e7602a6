"""Source block for Exact Online as a source: documents and their attachments, polled with the sync API."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from blocks.base import http_url
from blocks.exact_online_connection import with_oauth_endpoints
from blocks.oauth import OAuth2Source, host_entry


class ExactOnlineSource(OAuth2Source):
    """An Exact Online login whose divisions' documents docroute exports (tasks/sources/exact_online.py).

    OAuth2 authorization code with rotating refresh tokens: `docroute connect exact-online-source/<name>`
    once; every refresh is saved at once and refreshes are serialised across processes. The division
    of a client comes from the client's identifiers (`identifiers: {exact_division: 123456}` in the
    client file; the key is `division_identifier`), else from `divisions`. Documents are polled from
    sync/Documents/Documents and sync/Documents/DocumentAttachments with the Timestamp cursor, their
    attachments downloaded from their Url with the bearer token; calls are paced by Exact's
    X-RateLimit headers (60 a minute, 5,000 a day per division), so a run never receives a 429, and a
    day's budget used up ends the run Completed ("daily limit reached, resumes at ..."). Nothing is
    written to Exact: documents are never marked there (archive after transfer is refused).

    Example:
        ```python
        from blocks.exact_online import ExactOnlineSource
        ExactOnlineSource(client_id="<app client id>", client_secret="<app secret>",
                          redirect_uri="http://127.0.0.1:8765/callback").save("exact-nl")
        # then once: docroute connect exact-online-source/exact-nl
        ```
    """

    _block_type_name: ClassVar[str] = "Exact Online Source"
    _block_type_slug: ClassVar[str] = "exact-online-source"
    _description: ClassVar[str] = (
        "Exact Online divisions whose documents and attachments are exported: OAuth2 with rotating refresh tokens, "
        "the sync API's Timestamp cursor, X-RateLimit pacing, the division from each client's identifiers."
    )
    default_api_hosts: ClassVar[tuple[str, ...]] = ()

    base_url: str = Field(
        default="https://start.exactonline.nl",
        description="The regional Exact Online site (start.exactonline.nl, .be, .de, .co.uk, .com, ...; a local fake's URL "
        "in tests). token_url and authorize_url default to its /api/oauth2/token and /api/oauth2/auth.",
    )
    token_url: str = Field(default="", description="Token endpoint; empty: <base_url>/api/oauth2/token.")
    authorize_url: str | None = Field(default=None, description="Authorization endpoint; empty: <base_url>/api/oauth2/auth.")
    client_auth: Literal["client_secret_basic", "client_secret_post"] = Field(
        default="client_secret_post",
        description="How the app authenticates at the token endpoint: Exact takes client_id and client_secret in the form body.",
    )
    division_identifier: str = Field(
        default="exact_division",
        description="The key of the client's identifiers (client file) that holds the client's Exact division number.",
    )
    divisions: dict[str, int] = Field(
        default_factory=dict,
        description="Client id -> Exact division, for clients whose files do not name it (and for docroute preview and "
        "check); the client's identifiers win.",
    )
    approval: Literal["processed", "booked", "processed_or_booked", "any"] = Field(
        default="processed_or_booked",
        description="When a document counts as approved: processed (ProposedEntryStatus 50), booked (it has a "
        "FinancialTransactionEntryID), either, or any (on arrival). Its approval time is its Modified time.",
    )
    type_map: dict[int, str] = Field(
        default_factory=dict,
        description="Exact document Type id -> docroute type, over the defaults (20: invoice, purchase invoices; 10: "
        "sales_invoice); other types are 'exact-type-<id>'. An integration overrides in source_options.type_map.",
    )
    max_wait: float = Field(
        default=120, ge=1, le=3600,
        description="Longest wait for Exact's minutely budget, in seconds; a longer one (the daily budget used up) ends the run.",
    )
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each API call and download.")

    @model_validator(mode="before")
    @classmethod
    def _endpoints(cls, data: Any) -> Any:
        return with_oauth_endpoints(data)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return http_url(value).rstrip("/")

    def token_hosts(self) -> list[str]:
        if self.api_hosts:
            return super().token_hosts()
        return list(dict.fromkeys([host_entry(self.token_url), host_entry(self.base_url)]))

    def label(self) -> str:
        name = self._block_document_name
        return f"exact online {name}" if name else f"exact online {urlsplit(self.base_url).netloc}"
