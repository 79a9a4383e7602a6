"""Connection block for Exact Online as a destination: documents with their attachments (shared/reference/connectors.md 5)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from blocks.base import http_url
from blocks.oauth import OAuth2Connection, host_entry

ONLY_LATEST = (
    "Exact Online keeps only the latest connection of an Exact account valid: authorising this app again for the "
    "same account (another docroute, a test machine) ends this one. The refresh token rotates on every use: "
    "never copy this block's tokens to another block."
)



def with_oauth_endpoints(data: Any) -> Any:
    """A block's fields with token_url and authorize_url derived from its regional base_url where not given
    (the connection and the source share Exact's sites)."""
    if isinstance(data, dict):
        base = str(data.get("base_url") or "https://start.exactonline.nl").rstrip("/")
        data = dict(data)
        if not data.get("token_url"):
            data["token_url"] = f"{base}/api/oauth2/token"
        if not data.get("authorize_url"):
            data["authorize_url"] = f"{base}/api/oauth2/auth"
    return data

class ExactOnlineConnection(OAuth2Connection):
    """Exact Online, one app installed once and activated per client with the client's division (company code).

    OAuth2 authorization code at the regional site: `docroute connect exact-online-connection/<name>`
    once. The refresh token rotates on every use and an Exact account keeps only its latest
    connection valid: authorising the same account again elsewhere ends this connection, and tokens
    copied to another block die at the first refresh of either. Refreshes of this block are
    serialised across processes and machines and the rotated refresh token is saved at once.

    Each document becomes one Exact document (POST {division}/documents/Documents: Subject, Type,
    Account where the mapping gives one, Body = docroute's idempotency key) and one DocumentAttachment
    per file (base64). Before any retry sends anything, the key is looked up with $filter, so a crash
    or a lost answer between upload and record never makes a second document; attachments missing
    from an earlier try are added to it. Calls are paced from Exact's X-RateLimit headers (60 a
    minute and 5,000 a day per division, resets in epoch milliseconds) so no 429 is received; the day's
    budget used up ends the run Completed with the rest waiting ("daily limit reached, resumes at ...").

    Example:
        ```python
        from blocks.exact_online_connection import ExactOnlineConnection
        ExactOnlineConnection(client_id="<app client id>", client_secret="<app secret>",
                              base_url="https://start.exactonline.be").save("exact-be")
        # then once: docroute connect exact-online-connection/exact-be
        # and per client file: identifiers: {exact_division: 123456}
        ```
    """

    _block_type_name: ClassVar[str] = "Exact Online Connection"
    _block_type_slug: ClassVar[str] = "exact-online-connection"
    _description: ClassVar[str] = (
        "Exact Online documents with attachments, per client division. " + ONLY_LATEST + " The idempotency key is looked "
        "up before any retry sends; calls are paced from X-RateLimit headers, the daily budget ending the run Completed."
    )

    base_url: str = Field(
        default="https://start.exactonline.nl",
        description="The regional Exact Online site (start.exactonline.nl, .be, .de, .co.uk, .com, ...). token_url and "
        "authorize_url default to its /api/oauth2/token and /api/oauth2/auth; the API is <base_url>/api/v1.",
    )
    token_url: str = Field(default="", description="Token endpoint; empty: <base_url>/api/oauth2/token.")
    authorize_url: str | None = Field(default=None, description="Authorization endpoint; empty: <base_url>/api/oauth2/auth.")
    client_auth: Literal["client_secret_basic", "client_secret_post"] = Field(
        default="client_secret_post", description="Exact takes client_id and client_secret in the token request's form body.")
    division_identifier: str = Field(
        default="exact_division",
        description="Key of the client's identifiers (client file) that holds the client's Exact division number (the "
        "company code the client activates the integration with). An integration may name it in connection_options.division.",
    )
    division: int | None = Field(
        default=None,
        description="Division of clients whose identifiers do not name one (an installation for one company); empty: "
        "every client must name its own.",
    )
    document_types: dict[str, int] = Field(
        default_factory=lambda: {"invoice": 20, "credit_note": 20},
        description="docroute document type -> Exact document Type id. Exact's official list is not published here [?]: "
        "20 (purchase invoice) is what third-party clients use; check documents/DocumentTypes of your division. A type "
        "not listed fails the document, named.",
    )
    max_wait: float = Field(
        default=120, ge=1, le=3600,
        description="Longest wait for Exact's minutely budget, in seconds; a longer one (the daily budget used up) stops "
        "the run, Completed, with the documents left waiting.",
    )
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024,
                                   description="Exact refuses request bodies over 10 MB: a larger attachment fails its document, named.")
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each API call.")

    @model_validator(mode="before")
    @classmethod
    def _endpoints(cls, data: Any) -> Any:
        return with_oauth_endpoints(data)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return http_url(value).rstrip("/")

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"

    def token_hosts(self) -> list[str]:
        if self.api_hosts:
            return super().token_hosts()
        return list(dict.fromkeys([host_entry(self.token_url), host_entry(self.base_url)]))

    def label(self) -> str:
        name = self._block_document_name
        host = urlsplit(self.base_url).netloc
        return f"exact online {name} ({host})" if name else f"exact online {host}"
