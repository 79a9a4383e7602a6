"""Connection block for an e-invoicing access point with Pagero's API, as Business Central's E-Documents
connector uses it (shared/reference/connectors.md section 1): OAuth2, FileAPI, Fileparts, DocumentAPI."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from blocks.base import http_url
from blocks.oauth import OAuth2Connection, host_entry
from tasks.oauth import host_allowed

PAGERO_API = "https://api.pageroonline.com"


class AccessPointConnection(OAuth2Connection):
    """An e-invoicing access point (Pagero's API) that receives Peppol BIS Billing 3.0 UBL invoices and credit notes.

    OAuth2 authorization code, scope `all`: `docroute connect access-point-connection/<name>` once; the
    access token is refreshed when fewer than 60 s remain and the new refresh token is saved at once.
    The access token goes only to the hosts of `api_hosts` (default Pagero's: api.pageroonline.com and
    the token host): a FileAPI, Fileparts or DocumentAPI URL on any other host is refused when the
    block is made, and by the HTTP layer before a byte is sent. Each document's UBL is validated
    first (UBL 2.1, EN 16931, Peppol BIS 3.0), then posted to the FileAPI (multipart: payload,
    documentType Invoice, sendMode from the integration's mode: Production, Test or Certification,
    sendingCompanyId, senderReference = docroute's idempotency key) and recorded "submitted" with
    its File ID; the fileparts say later whether it was accepted (no filepart left), is still
    Processing or AwaitingInteraction, or failed (Error: a rejection with its description). A
    rejected document sent again restarts its filepart (Fileparts action Restart) instead of posting
    a second file. Buyer responses (RecipientAccept, RecipientReject) are read for
    `buyer_response_days` after acceptance.

    Assumptions where the published contract says nothing ([?], docs/accounting-and-einvoicing.md):
    an earlier file of a document is found with `GET {file_api_url}?senderReference=<key>&sendingCompanyId=<id>`
    (items[].id), which is what settles a crash between the upload and its record; a buyer response's
    reason text is its `documentInfo.note`.

    Example:
        ```python
        from blocks.access_point import AccessPointConnection
        AccessPointConnection(client_id="<client id>", client_secret="<secret>", company_id="ACME-BE-001").save("pagero")
        # then once: docroute connect access-point-connection/pagero
        ```
    """

    _block_type_name: ClassVar[str] = "E-invoicing Access Point Connection"
    _block_type_slug: ClassVar[str] = "access-point-connection"
    _description: ClassVar[str] = (
        "A Pagero-style e-invoicing access point: OAuth2, UBL validated then posted to the FileAPI (sendMode Production, "
        "Test or Certification), the File ID recorded as submitted, fileparts polled until accepted or rejected, "
        "buyer responses read; the token only ever goes to the hosts of the allow-list."
    )
    default_api_hosts: ClassVar[tuple[str, ...]] = ("api.pageroonline.com",)

    token_url: str = Field(default="https://sso.pageroonline.com/oauth/v2/token",
                           description="Token endpoint (Pagero's newer /oauth/v2; older code used https://auth.pageroonline.com/oauth2).")
    authorize_url: str | None = Field(default="https://sso.pageroonline.com/oauth/v2/authorize",
                                      description="Authorization endpoint for `docroute connect`.")
    scopes: list[str] = Field(default_factory=lambda: ["all"], description="OAuth2 scopes (Pagero: all).")
    file_api_url: str = Field(default=f"{PAGERO_API}/file/v1/files", description="FileAPI URL: documents are posted here.")
    fileparts_url: str = Field(default=f"{PAGERO_API}/file/v1/fileparts",
                               description="Fileparts URL: the Restart and Cancel actions of a file's parts.")
    document_api_url: str = Field(default=f"{PAGERO_API}/document/v1/documents",
                                  description="DocumentAPI URL: document ids and buyer responses (application responses).")
    company_id: str = Field(description="The sending company's id at the access point (sendingCompanyId, companyId).")
    buyer_response_days: float = Field(
        default=0, ge=0, le=90,
        description="Days to wait, after the access point accepted a document, for the buyer's response (RecipientAccept "
        "or RecipientReject) before it counts as delivered: meanwhile it is 'waiting for confirmation' (buyer response). "
        "0: delivered on acceptance; a response present by then is still recorded. A RecipientReject is a rejection.",
    )
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each API call.")

    @field_validator("file_api_url", "fileparts_url", "document_api_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return http_url(value).rstrip("/")

    @model_validator(mode="after")
    def _allowed_hosts(self) -> AccessPointConnection:
        allowed = self.token_hosts()
        for name in ("file_api_url", "fileparts_url", "document_api_url"):
            entry = host_entry(getattr(self, name))
            if not host_allowed(entry, allowed):
                raise ValueError(f"{name}: host {entry} is not in the allow-list of API hosts ({', '.join(allowed)}); the "
                                 f"access token is never sent to a host the block does not name: add it to api_hosts")
        return self

    def api_urls(self) -> list[str]:
        return [self.file_api_url, self.fileparts_url, self.document_api_url]

    def label(self) -> str:
        name = self._block_document_name
        host = urlsplit(self.file_api_url).netloc
        return f"access point {name} ({host}, company {self.company_id})" if name else f"access point {host} company {self.company_id}"
