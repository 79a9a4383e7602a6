"""Connection block for a Google Drive folder (Drive API v3): a service account or a user's OAuth."""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks.base import http_url
from blocks.oauth import OAuth2Connection, host_entry
from blocks.sftp import ExistingPolicy

MB = 1024 * 1024
CHUNK = 256 * 1024
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"


class GoogleDriveConnection(OAuth2Connection):
    """Deliver documents into a Google Drive folder, in My Drive or a shared drive.

    Credentials, two ways: `auth="service_account"` (a service account's JSON key; with
    `delegated_user`, domain-wide delegation acts as that user of the Workspace domain) or
    `auth="user"` (an OAuth client; a user authorises once with `docroute connect
    google-drive-connection/<name>`). The Drive API is google-api-python-client's, pointed at
    `api_endpoint`; tokens come from google-auth (service account: the key's token_uri) or
    tasks/oauth.py (user).

    File names are not unique in Drive, so every file carries the document version's idempotency
    key in appProperties (docroute_key, docroute_file), and the folder is queried for it (and for the
    name) before any upload and before any retry: never two files for one document version.

    Example:
        ```python
        from blocks.gdrive import GoogleDriveConnection
        GoogleDriveConnection(
            auth="service_account",
            service_account_key=open("/secrets/docroute-sa.json").read(),
            delegated_user="ap@acme.example",
            shared_drive_id="0AAbCdEf...",
            folder="Invoices/Inbox",
        ).save("acme-drive")
        ```
    """

    _block_type_name: ClassVar[str] = "Google Drive Connection"
    _block_type_slug: ClassVar[str] = "google-drive-connection"
    _description: ClassVar[str] = (
        "A Google Drive folder (My Drive or a shared drive) that receives exported documents: service account (domain-wide "
        "delegation) or user OAuth, resumable uploads, an appProperties key so a retry never makes a second file."
    )
    default_api_hosts: ClassVar[tuple[str, ...]] = ("www.googleapis.com",)

    auth: Literal["service_account", "user"] = Field(
        default="service_account",
        description="service_account: a service account's JSON key (with delegated_user for domain-wide delegation). "
        "user: an OAuth client a user authorises once (docroute connect).",
    )
    service_account_key: SecretStr | None = Field(
        default=None, description="The service account's JSON key file, as text (auth=service_account)."
    )
    delegated_user: str | None = Field(
        default=None, description="Domain-wide delegation: the Workspace user the service account acts as."
    )
    client_id: str = Field(default="", description="OAuth client id (auth=user).")
    token_url: str = Field(default="https://oauth2.googleapis.com/token", description="Google's token endpoint (auth=user).")
    authorize_url: str | None = Field(
        default="https://accounts.google.com/o/oauth2/v2/auth?access_type=offline&prompt=consent",
        description="Google's authorize page; access_type=offline asks for a refresh token.",
    )
    scopes: list[str] = Field(default_factory=lambda: [DRIVE_SCOPE], description="OAuth scopes (Drive: full drive scope).")
    api_endpoint: str = Field(default="https://www.googleapis.com/drive/v3/",
                              description="The Drive API's base (client_options.api_endpoint; a local fake in tests).")
    shared_drive_id: str | None = Field(default=None, description="A shared drive's id: documents go into that drive.")
    folder_id: str | None = Field(
        default=None, description="The id of the folder `folder` is under (default: My Drive's root, or the shared drive).",
    )
    folder: str = Field(default="", description="Folder path under folder_id documents go into (created as needed).")
    test_folder: str | None = Field(default=None, description="Folder path used instead of `folder` in test mode.")
    if_exists: ExistingPolicy = Field(
        default="skip_identical",
        description="When a file of that name is in the folder with other content (md5 and size differ): skip_identical "
        "and overwrite replace its content, fail fails the document. Identical is already delivered.",
    )
    multipart_max: int = Field(default=5 * MB, ge=0, le=5 * MB,
                               description="Files up to this size go in one multipart upload; larger ones resumable.")
    chunk_size: int = Field(default=32 * CHUNK, ge=CHUNK, le=1024 * CHUNK,
                            description="Bytes per resumable chunk: a multiple of 256 KiB.")
    retries: int = Field(default=5, ge=0, le=10,
                         description="Retries of a request after 403 rateLimitExceeded, 429 or 5xx (randomised exponential backoff).")
    transfers: int = Field(default=4, ge=1, le=16, description="Documents sent at once (one HTTP connection each).")
    day_folder: bool = Field(default=False, description="Put each day's deliveries in a sub-folder YYYY-MM-DD (UTC).")
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each API call.")

    @field_validator("api_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        value = http_url(value)
        return value if value.endswith("/") else value + "/"

    @field_validator("chunk_size")
    @classmethod
    def _chunk(cls, value: int) -> int:
        if value % CHUNK:
            raise ValueError("chunk_size must be a multiple of 256 KiB (262144 bytes)")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> GoogleDriveConnection:
        if self.auth == "service_account":
            if self.service_account_key is None:
                raise ValueError("auth=service_account needs service_account_key (the JSON key file's text)")
            try:
                info = json.loads(self.service_account_key.get_secret_value())
            except ValueError:
                raise ValueError("service_account_key is not JSON: paste the whole key file") from None
            if not isinstance(info, dict) or not {"client_email", "private_key", "token_uri"} <= set(info):
                raise ValueError("service_account_key needs client_email, private_key and token_uri (a service account key file)")
        elif not self.client_id:
            raise ValueError("auth=user needs client_id (and client_secret), then `docroute connect`")
        return self

    def sa_info(self) -> dict:
        return json.loads(self.service_account_key.get_secret_value())

    def token_hosts(self) -> list[str]:
        if self.api_hosts:
            return super().token_hosts()
        return list(dict.fromkeys([host_entry(self.token_url), host_entry(self.api_endpoint), *self.default_api_hosts]))

    def label(self) -> str:
        who = self.delegated_user or ("service account" if self.auth == "service_account" else "user")
        where = f"shared drive {self.shared_drive_id}" if self.shared_drive_id else "my drive"
        return f"google drive {where} ({who}) {self.folder or '/'}"
