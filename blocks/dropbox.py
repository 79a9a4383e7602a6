"""Connection block for a Dropbox folder (Dropbox API v2), through refresh-token OAuth."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from blocks.base import http_url
from blocks.oauth import OAuth2Connection, host_entry
from blocks.sftp import ExistingPolicy

MB = 1024 * 1024


class DropboxConnection(OAuth2Connection):
    """Deliver documents into a Dropbox folder (a user's Dropbox, or a team member's or the team space).

    The app key and secret are the OAuth2 client; `docroute connect dropbox-connection/<name>`
    authorises it once with offline access (a refresh token, which Dropbox does not rotate), and
    access tokens are refreshed from then on. Each file is uploaded in one call up to
    `simple_upload_max` (Dropbox's limit: 150 MB), larger ones through an upload session streamed
    from the source, always with mode add and autorename false: a name conflict is compared by
    Dropbox's content_hash (identical: already delivered; different: `if_exists`).

    Example:
        ```python
        from blocks.dropbox import DropboxConnection
        DropboxConnection(
            client_id="<app key>",
            client_secret="<app secret>",
            folder="/Accounting/Inbox",
            test_folder="/Accounting/Test",
        ).save("acme-dropbox")
        # then once: docroute connect dropbox-connection/acme-dropbox
        ```
    """

    _block_type_name: ClassVar[str] = "Dropbox Connection"
    _block_type_slug: ClassVar[str] = "dropbox-connection"
    _description: ClassVar[str] = (
        "A Dropbox folder that receives exported documents: refresh-token OAuth, team spaces, uploads of up to 150 MB "
        "in one call and upload sessions above, name conflicts resolved by content_hash."
    )
    default_api_hosts: ClassVar[tuple[str, ...]] = ("api.dropboxapi.com", "content.dropboxapi.com")

    client_id: str = Field(description="The Dropbox app key (App Console).")
    token_url: str = Field(default="https://api.dropboxapi.com/oauth2/token", description="Dropbox's token endpoint.")
    authorize_url: str | None = Field(
        default="https://www.dropbox.com/oauth2/authorize?token_access_type=offline",
        description="Dropbox's authorize page; token_access_type=offline asks for a refresh token.",
    )
    api_url: str = Field(default="https://api.dropboxapi.com", description="The RPC host (a local fake's URL in tests).")
    content_url: str = Field(default="https://content.dropboxapi.com",
                             description="The upload and download host (a local fake's URL in tests).")
    folder: str = Field(default="", description="Folder documents go under, e.g. /Accounting/Inbox ('' = the root).")
    test_folder: str | None = Field(default=None, description="Folder used instead of `folder` in test mode.")
    select_user: str | None = Field(
        default=None,
        description="For a team app: the team member id (dbmid:...) sent as Dropbox-API-Select-User on every call.",
    )
    namespace: Literal["home", "team_space"] = Field(
        default="home",
        description="home: paths are in the user's (or selected member's) own Dropbox; team_space: paths are relative "
        "to the team space (Dropbox-API-Path-Root with the root namespace get_current_account reports).",
    )
    root_namespace_id: str | None = Field(
        default=None, description="A namespace id to use as the root instead (Dropbox-API-Path-Root), e.g. a team folder."
    )
    if_exists: ExistingPolicy = Field(
        default="skip_identical",
        description="When the target name exists with other content: skip_identical and overwrite replace it "
        "(mode update on the rev seen), fail leaves it and fails the document. Identical content (same content_hash) "
        "is always taken as already delivered.",
    )
    simple_upload_max: int = Field(
        default=150 * MB, ge=1, le=150 * MB,
        description="Files up to this size go in one files/upload call; larger ones in an upload session.",
    )
    chunk_size: int = Field(
        default=8 * MB, ge=64 * 1024, le=148 * MB,
        description="Bytes per upload-session request (Dropbox recommends a multiple of 4 MiB; at most 150 MB).",
    )
    transfers: int = Field(
        default=2, ge=1, le=8,
        description="Documents sent at once. Dropbox serialises writes per namespace: more may meet "
        "429 too_many_write_operations, which is waited out (Retry-After).",
    )
    day_folder: bool = Field(default=False, description="Put each day's deliveries in a sub-folder YYYY-MM-DD (UTC).")
    request_timeout: float = Field(default=60, gt=0, le=600, description="Seconds to wait for each API call.")

    @field_validator("api_url", "content_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return http_url(value).rstrip("/")

    def token_hosts(self) -> list[str]:
        if self.api_hosts:
            return super().token_hosts()
        return list(dict.fromkeys([host_entry(self.token_url), host_entry(self.api_url), host_entry(self.content_url),
                                   *self.default_api_hosts]))

    def label(self) -> str:
        where = f" member {self.select_user}" if self.select_user else ""
        space = " team space" if self.namespace == "team_space" else ""
        return f"dropbox{space}{where} {self.folder or '/'}"
