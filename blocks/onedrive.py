"""Connection block for a OneDrive or SharePoint document library (Microsoft Graph)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks.base import http_url
from blocks.oauth import OAuth2Connection, host_entry
from blocks.sftp import ExistingPolicy

MB = 1024 * 1024
FRAGMENT = 320 * 1024


class OneDriveConnection(OAuth2Connection):
    """Deliver documents into a OneDrive or SharePoint drive through Microsoft Graph.

    Tokens from Entra ID, two ways: `auth="app"` (app-only: the client credentials grant through
    msal, with a client secret or a certificate; the app needs Sites.ReadWrite.All or Files.ReadWrite.All
    application permission) or `auth="delegated"` (a user signs in once with `docroute connect
    onedrive-connection/<name>`; Files.ReadWrite.All delegated; the refresh token rotates and is saved at
    once). The drive: `drive_id` (with `site_id` for a SharePoint library), or a site's default
    library (`site_id` only), or a user's OneDrive (`user`), or the signed-in user's (delegated, none set).

    Files up to `simple_upload_max` (Graph's limit: 250 MB) go in one PUT with
    @microsoft.graph.conflictBehavior=fail; larger ones through an upload session in fragments of
    `fragment_size` (a multiple of 320 KiB), resumed from nextExpectedRanges after a broken
    connection. A name that exists is compared by size and hash (sha256Hash where the drive gives
    it, else quickXorHash): identical is already delivered, different follows `if_exists`.

    Example:
        ```python
        from blocks.onedrive import OneDriveConnection
        OneDriveConnection(
            tenant="contoso.onmicrosoft.com",
            client_id="11111111-2222-3333-4444-555555555555",
            client_secret="<secret value>",
            site_id="contoso.sharepoint.com,2c9f...,8e1d...",
            drive_id="b!Xy...",
            folder="/Invoices/Inbox",
        ).save("contoso-sharepoint")
        ```
    """

    _block_type_name: ClassVar[str] = "OneDrive Connection"
    _block_type_slug: ClassVar[str] = "onedrive-connection"
    _description: ClassVar[str] = (
        "A OneDrive or SharePoint folder (Microsoft Graph) that receives exported documents: app-only or delegated "
        "Entra ID tokens, simple uploads up to 250 MB and resumable upload sessions above."
    )
    default_api_hosts: ClassVar[tuple[str, ...]] = ("graph.microsoft.com",)

    auth: Literal["app", "delegated"] = Field(
        default="app",
        description="app: app-only tokens (client credentials, msal). delegated: a user's tokens (authorization code "
        "via `docroute connect`, then refresh tokens, which Entra ID rotates).",
    )
    tenant: str = Field(description="The Entra ID tenant: its id (GUID) or a domain (contoso.onmicrosoft.com).")
    authority_host: str = Field(default="https://login.microsoftonline.com",
                                description="Entra ID's sign-in host (national clouds differ; a local fake in tests).")
    graph_url: str = Field(default="https://graph.microsoft.com/v1.0", description="Graph's base URL, with the version.")
    resource: str = Field(default="https://graph.microsoft.com",
                          description="The resource app-only tokens are asked for (scope <resource>/.default).")
    client_certificate: SecretStr | None = Field(
        default=None, description="app auth with a certificate: the PEM private key (instead of client_secret)."
    )
    certificate_thumbprint: str | None = Field(default=None, description="SHA-1 thumbprint (hex) of that certificate.")
    token_url: str = Field(default="", description="Token endpoint; default <authority_host>/<tenant>/oauth2/v2.0/token.")
    authorize_url: str | None = Field(default=None, description="Authorize endpoint; default <authority_host>/<tenant>/oauth2/v2.0/authorize.")
    grant: Literal["authorization_code", "client_credentials", "password"] = Field(
        default="authorization_code",
        description="Set from `auth`: authorization_code for delegated (docroute connect signs the user in); client_credentials "
        "for app with a secret (docroute connect fetches a first token as a check; deliveries get theirs from msal).",
    )
    drive_id: str | None = Field(default=None, description="The drive (document library) id, e.g. b!Xy...")
    site_id: str | None = Field(default=None, description="A SharePoint site id (host,site-guid,web-guid): its default "
                                "library when drive_id is empty.")
    user: str | None = Field(default=None, description="A user (id or user principal name) whose OneDrive to use.")
    folder: str = Field(default="", description="Folder in the drive documents go under, e.g. /Invoices ('' = root).")
    test_folder: str | None = Field(default=None, description="Folder used instead of `folder` in test mode.")
    if_exists: ExistingPolicy = Field(
        default="skip_identical",
        description="When the name exists with other content (size or hash differ): skip_identical and overwrite "
        "replace it (conflictBehavior=replace), fail fails the document. Identical is always already delivered. "
        "A drive that gives neither sha256Hash nor quickXorHash is compared by size alone [assumption].",
    )
    simple_upload_max: int = Field(default=250 * MB, ge=1, le=250 * MB,
                                   description="Files up to this size go in one PUT; larger ones in an upload session.")
    fragment_size: int = Field(default=32 * FRAGMENT, ge=FRAGMENT, le=188 * FRAGMENT,
                               description="Bytes per upload-session fragment: a multiple of 320 KiB, under 60 MiB.")
    transfers: int = Field(default=4, ge=1, le=16, description="Documents sent at once (429/503 are waited out: Retry-After).")
    day_folder: bool = Field(default=False, description="Put each day's deliveries in a sub-folder YYYY-MM-DD (UTC).")
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each Graph call.")

    @model_validator(mode="before")
    @classmethod
    def _endpoints(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tenant"):
            base = f"{str(data.get('authority_host') or 'https://login.microsoftonline.com').rstrip('/')}/{data['tenant']}"
            if not data.get("token_url"):
                data["token_url"] = f"{base}/oauth2/v2.0/token"
            if not data.get("authorize_url"):
                data["authorize_url"] = f"{base}/oauth2/v2.0/authorize"
            if data.get("auth", "app") == "delegated" and not data.get("scopes"):
                data["scopes"] = ["Files.ReadWrite.All", "offline_access"]
            if data.get("auth", "app") == "app" and data.get("client_secret") and not data.get("grant"):
                # `docroute connect` then fetches a first app-only token: a check of tenant, client and secret
                data["grant"] = "client_credentials"
                resource = str(data.get("resource") or "https://graph.microsoft.com").rstrip("/")
                data.setdefault("scopes", [f"{resource}/.default"])
        return data

    @field_validator("authority_host", "graph_url", "resource")
    @classmethod
    def _urls(cls, value: str) -> str:
        return http_url(value).rstrip("/")

    @field_validator("fragment_size")
    @classmethod
    def _fragment(cls, value: int) -> int:
        if value % FRAGMENT:
            raise ValueError("fragment_size must be a multiple of 320 KiB (327680 bytes)")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> OneDriveConnection:
        if self.auth == "app":
            if not (self.client_secret or self.client_certificate):
                raise ValueError("auth=app needs client_secret or client_certificate (with certificate_thumbprint)")
            if self.client_certificate and not self.certificate_thumbprint:
                raise ValueError("client_certificate needs certificate_thumbprint")
            if not (self.drive_id or self.site_id or self.user):
                raise ValueError("auth=app needs drive_id, site_id or user: app-only tokens have no /me drive")
        return self

    def token_hosts(self) -> list[str]:
        if self.api_hosts:
            return super().token_hosts()
        return list(dict.fromkeys([host_entry(self.token_url), host_entry(self.graph_url), *self.default_api_hosts]))

    def label(self) -> str:
        where = self.drive_id or (f"site {self.site_id}" if self.site_id else f"user {self.user}" if self.user else "me")
        return f"onedrive {where} {self.folder or '/'}"
