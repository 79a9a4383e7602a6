"""Debitoor (SumUp Invoices): a connection (documents exported as expenses) and an expenses source
(shared/reference/sources.md section 3; what the public contract does not establish: docs/accounting-and-einvoicing.md)."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from blocks.base import SourceBlock, http_url
from blocks.oauth import OAuth2Connection, host_entry

NO_UPLOAD = (
    "Debitoor's public contract does not publish how a file is uploaded to get a fileId (the expense schema only says "
    "fileId 'Must be a file id'); set files_url to the upload endpoint your Debitoor account uses (docroute sends one "
    "multipart part named 'file' and reads the answer's 'id' [?]), or attach_file: false to create expenses without "
    "their file."
)


class DebitoorConnection(OAuth2Connection):
    """A Debitoor (SumUp Invoices) account: each document becomes an expense with its main file attached.

    OAuth2 authorization code (`docroute connect debitoor-connection/<name>`): Debitoor's access token
    does not expire and there is no refresh token (a revoked one means connecting again). It is sent
    in the `x-token` header, only to the hosts of the API and token URLs.

    Per document: the main file (the PDF) is uploaded to `files_url` and the expense made with its
    fileId (POST /api/expenses/v4?autonumber=true: date, supplier name, VAT number and country, one line
    per tax rate, the docroute idempotency key in the first line's description, which a retry looks
    for in GET /api/expenses/v3 before it sends anything). An expense holds one file: the package's
    other files (an XML, a sidecar) are not sent, and the delivery's detail lists them.

    What the published contract lacks ([?]): the file upload endpoint (hence `files_url`, no default),
    filters on the expense list (a lookup reads the whole list), rate limits.

    Example:
        ```python
        from blocks.debitoor import DebitoorConnection
        DebitoorConnection(client_id="<app id>", client_secret="<app secret>",
                           files_url="https://api.debitoor.com/api/v1.0/files").save("acme-debitoor")
        # then once: docroute connect debitoor-connection/acme-debitoor
        ```
    """

    _block_type_name: ClassVar[str] = "Debitoor Connection"
    _block_type_slug: ClassVar[str] = "debitoor-connection"
    _description: ClassVar[str] = (
        "A Debitoor (SumUp Invoices) account: documents become expenses with their file attached (x-token, a token "
        "that does not expire). " + NO_UPLOAD
    )

    client_auth: Literal["client_secret_basic", "client_secret_post"] = Field(
        default="client_secret_post", description="Debitoor takes client_id and client_secret in the token request's form body.")
    token_url: str = Field(default="https://app.debitoor.com/login/oauth2/access_token", description="Token endpoint.")
    authorize_url: str | None = Field(default="https://app.debitoor.com/login/oauth2/authorize",
                                      description="Authorization endpoint for `docroute connect`.")
    api_url: str = Field(default="https://api.debitoor.com/api", description="The API base (a local fake's URL in tests).")
    files_url: str | None = Field(default=None, description="Upload endpoint for expense files: " + NO_UPLOAD)
    attach_file: bool = Field(default=True, description="Attach the main file to each expense (needs files_url).")
    category_id: str | None = Field(default=None, description="Expense category id of the lines (e.g. office.software); "
                                    "empty: Debitoor's default.")
    default_tax_rate: float | None = Field(default=None, ge=0, le=100,
                                           description="VAT rate in percent when a document's metadata gives neither a rate "
                                           "nor net and tax amounts.")
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each API call.")

    @field_validator("api_url", "files_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return http_url(value).rstrip("/") if value else value

    def token_hosts(self) -> list[str]:
        if self.api_hosts:
            return super().token_hosts()
        urls = [self.token_url, self.api_url] + ([self.files_url] if self.files_url else [])
        return list(dict.fromkeys(host_entry(u) for u in urls))

    def label(self) -> str:
        name = self._block_document_name
        host = urlsplit(self.api_url).netloc
        return f"debitoor {name} ({host})" if name else f"debitoor {host}"


class DebitoorExpenses(SourceBlock):
    """The expenses of one Debitoor account as a source, with their files (GetMyInvoices' Debitoor sync, the import way).

    The account is one client's: every expense is a document of `client`. Each scan lists the account's
    expenses (GET /api/expenses/v3: the public contract names no filter, so the whole list, which also
    finds a late change); an expense is read with GET /api/expenses/{id}/v4 and its file downloaded from
    the file.url it gives (/api/v1.0/files/{fileId}). An expense is approved once it has a number
    (booked), with its lastModifiedDate as the approval time; one without a file is reported, never
    dropped. Nothing is written to Debitoor (no way to mark an expense exported is published).

    Example:
        ```python
        from blocks.debitoor import DebitoorConnection, DebitoorExpenses
        DebitoorExpenses(connection=DebitoorConnection.load("acme-debitoor"), client="acme").save("acme-expenses")
        ```
    """

    _block_type_name: ClassVar[str] = "Debitoor Expenses"
    _block_type_slug: ClassVar[str] = "debitoor-expenses"
    _description: ClassVar[str] = "The expenses of one Debitoor (SumUp Invoices) account, with their files, as one client's documents."

    connection: DebitoorConnection = Field(description="The Debitoor connection block: app and token.")
    client: str = Field(description="The docroute client whose expenses this account holds.")
    document_type: str = Field(default="invoice", description="The document type an expense becomes (purchase invoices).")
    approval: Literal["booked", "any"] = Field(
        default="booked", description="When an expense counts as approved: booked (it has a number) or any (on arrival).")

    def label(self) -> str:
        return f"debitoor expenses of {self.client} ({urlsplit(self.connection.api_url).netloc})"
