"""Connection block for a folder on an SMB 2/3 share (Windows file server, Samba, NAS)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from blocks.base import ConnectionBlock
from blocks.sftp import ExistingPolicy

VerifyMode = Literal["size", "hash", "none"]


class SmbConnection(ConnectionBlock):
    """Deliver documents into a folder of an SMB share (Docbits' SMB export), with smbprotocol's client.

    SMB 2 or 3, NTLM (or Kerberos) login, messages signed (`require_signing`), and encrypted when
    the share requires it (or always, with `encrypt`). Each file is written under a temp name in
    the target folder, checked, then renamed into place (SMB2 rename with ReplaceIfExists), so a
    receiver never sees a half-written file; the sidecar or trigger file is renamed last.

    Example:
        ```python
        from blocks.smb import SmbConnection
        SmbConnection(
            host="fileserver.acme.local",
            share="Invoices",
            username="svc-docroute",
            domain="ACME",
            password="...",
            base_folder="Import/AP",
        ).save("acme-share")
        ```
    """

    _block_type_name: ClassVar[str] = "SMB Connection"
    _block_type_slug: ClassVar[str] = "smb-connection"
    _description: ClassVar[str] = (
        "A folder on an SMB 2/3 share that receives exported documents: signing, encryption where the share requires it, "
        "temp name then rename."
    )

    host: str = Field(description="File server host name or IP address.")
    port: int = Field(default=445, ge=1, le=65535, description="SMB port (445).")
    share: str = Field(description="Share name, e.g. Invoices (not a path).")
    username: str = Field(description="Login name (without the domain).")
    domain: str | None = Field(default=None, description="Windows domain or workgroup of the account, if any.")
    password: SecretStr = Field(description="Password of the account.")
    base_folder: str = Field(default="", description="Folder in the share documents are written under ('' = the share's root).")
    test_folder: str | None = Field(default=None, description="Folder used instead of base_folder in test mode.")
    encrypt: bool | None = Field(
        default=None,
        description="True: require SMB 3 encryption for every share; None: encrypt where the share requires it "
        "(smb encrypt = required / EncryptData); False is not offered: a share that requires it is always honoured.",
    )
    require_signing: bool = Field(default=True, description="Require signed SMB messages (refuse a server that will not sign).")
    auth_protocol: Literal["negotiate", "ntlm", "kerberos"] = Field(default="negotiate", description="How to log in.")
    if_exists: ExistingPolicy = Field(
        default="skip_identical",
        description="When the target file exists: skip_identical (no-op if identical, replace if not), overwrite "
        "(always replace), fail (error unless identical). Identical: same size, and same sha256 with verify=hash.",
    )
    verify: VerifyMode = Field(
        default="size",
        description="Check each upload before renaming it: size (of the temp file), hash (the temp file read back and "
        "hashed: SMB has no server-side hash) or none.",
    )
    temp_suffix: str = Field(default=".partial", min_length=2, max_length=16,
                             description="Suffix of the temp name a file is written under. Receivers should ignore it.")
    day_folder: bool = Field(default=False, description="Put each day's deliveries in a sub-folder YYYY-MM-DD (UTC).")
    connect_timeout: float = Field(default=15, gt=0, le=300, description="Seconds to wait for the connection and login.")

    @field_validator("share")
    @classmethod
    def _share(cls, value: str) -> str:
        value = value.strip("\\/")
        if not value or "\\" in value or "/" in value:
            raise ValueError("share is a share name (Invoices), not a path; put folders in base_folder")
        return value

    @field_validator("temp_suffix")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if not value.startswith(".") or "/" in value or "\\" in value:
            raise ValueError("temp_suffix must start with '.' and contain no separator, e.g. '.partial'")
        return value

    def label(self) -> str:
        folder = self.base_folder.strip("/\\").replace("/", "\\")
        return f"smb {self.username}@{self.host}:{self.port}\\{self.share}" + (f"\\{folder}" if folder else "")
