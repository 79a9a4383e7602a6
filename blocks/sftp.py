"""Connection block for an SFTP server (OpenSSH or any SFTPv3 server)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks.base import ConnectionBlock

ExistingPolicy = Literal["skip_identical", "overwrite", "fail"]
VerifyMode = Literal["size", "hash", "none"]

_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")


def parse_host_key(value: str) -> tuple[str | None, str]:
    """Split a pinned host key into (key type or None, "SHA256:<b64>" fingerprint).

    Accepts a known_hosts line ("host keytype base64 [comment]"), a bare public key
    ("keytype base64") or an OpenSSH fingerprint ("SHA256:...").
    """
    import hashlib

    text = value.strip()
    if _FINGERPRINT.match(text):
        return None, text.rstrip("=")
    parts = text.split()
    if parts and parts[0].startswith("@"):
        raise ValueError("known_hosts markers (@cert-authority, @revoked) are not supported; pin the host's own key")
    for i in range(min(2, len(parts) - 1)):  # "keytype b64" or "host keytype b64"
        keytype, blob = parts[i], parts[i + 1]
        if keytype.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                raw = base64.b64decode(blob, validate=True)
            except binascii.Error:
                break
            digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
            return keytype, f"SHA256:{digest}"
    raise ValueError(
        "host_key must be a known_hosts line ('host ssh-ed25519 AAAA...') or a fingerprint ('SHA256:...'); "
        "get it with `ssh-keyscan -p PORT HOST` or `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the server"
    )


class SftpConnection(ConnectionBlock):
    """Deliver documents to a folder on an SFTP server.

    Files go to a temp name in the target folder, are verified, then renamed into
    place (posix-rename where the server offers it), so a receiver never sees a
    half-written file. The host key is pinned: a server presenting another key is
    refused.

    Example:
        ```python
        from blocks.sftp import SftpConnection
        SftpConnection(
            host="sftp.partner.example",
            username="acme",
            private_key=open("/secrets/acme_ed25519").read(),
            host_key="sftp.partner.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA...",
            base_folder="/upload/invoices",
            test_folder="/upload/test",
        ).save("partner-sftp")
        ```
    """

    _block_type_name: ClassVar[str] = "SFTP Connection"
    _block_type_slug: ClassVar[str] = "sftp-connection"
    _logo_url: ClassVar[str] = "https://cdn.sanity.io/images/3ugk85nk/production/13fb0ca5ee1bd0ce5cf3b79ad69a0ddc3e1f1a47-250x250.png"
    _description: ClassVar[str] = (
        "An SFTP folder that receives exported documents: pinned host key, temp name then rename, "
        "size or sha256 verification."
    )

    host: str = Field(description="Server host name or IP address.")
    port: int = Field(default=22, ge=1, le=65535, description="Server port.")
    username: str = Field(description="Login name.")
    password: SecretStr | None = Field(default=None, description="Password (or leave empty and use private_key).")
    private_key: SecretStr | None = Field(
        default=None,
        description="Private key as text (PEM or OpenSSH format: ed25519, ECDSA or RSA). Tried before the password.",
    )
    private_key_passphrase: SecretStr | None = Field(
        default=None, description="Passphrase of private_key, if it is encrypted."
    )
    host_key: str | None = Field(
        default=None,
        description="The server's pinned host key: a known_hosts line ('host ssh-ed25519 AAAA...', from "
        "`ssh-keyscan`) or a fingerprint ('SHA256:...'). Required unless verify_host_key is off.",
    )
    verify_host_key: bool = Field(
        default=True,
        description="Refuse servers whose host key differs from host_key. Turn off only for throwaway test servers.",
    )
    base_folder: str = Field(
        default=".", description="Folder documents are written under (absolute, or relative to the login folder)."
    )
    test_folder: str | None = Field(
        default=None, description="Folder used instead of base_folder when an integration runs in test mode."
    )
    connect_timeout: float = Field(default=15.0, gt=0, description="Seconds to wait for TCP connect, SSH handshake and login.")
    timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for any single SFTP operation before giving up (transient)."
    )
    if_exists: ExistingPolicy = Field(
        default="skip_identical",
        description="When the target file exists: skip_identical (no-op if identical, replace if not), "
        "overwrite (always replace), fail (error unless identical). Identical means same size, and same "
        "sha256 when verify=hash.",
    )
    verify: VerifyMode = Field(
        default="size",
        description="Check each upload before renaming it into place: size, hash (size plus a remote "
        "`sha256sum` over SSH exec where the server allows it, else size only) or none.",
    )
    drop_box: bool = Field(
        default=False,
        description="The server takes files away on arrival (inotify pickers, Sterling-style mailboxes): "
        "no stat after the upload and no existence checks; the ledger is the only dedup.",
    )
    temp_suffix: str = Field(
        default=".partial",
        min_length=1,
        max_length=16,
        description="Suffix of the temp name a file is uploaded under before the rename. Receivers should ignore it.",
    )
    day_folder: bool = Field(
        default=False, description="Put each day's deliveries in a sub-folder YYYY-MM-DD (UTC) of the package folder."
    )
    pool_size: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Documents sent at once, each over its own SSH connection (like rclone's --transfers). "
        "1 sends one document at a time over one connection; lower it for servers that limit sessions per user.",
    )
    use_posix_rename: bool = Field(
        default=True,
        description="Use the posix-rename@openssh.com extension when the server offers it (atomic replace); "
        "off: plain rename, removing an existing target first.",
    )

    @field_validator("temp_suffix")
    @classmethod
    def _suffix_is_a_name(cls, value: str) -> str:
        if "/" in value or not value.startswith("."):
            raise ValueError("temp_suffix must start with '.' and contain no '/', e.g. '.partial'")
        return value

    @model_validator(mode="after")
    def _host_key_pinned(self) -> SftpConnection:
        if self.host_key:
            parse_host_key(self.host_key)
        elif self.verify_host_key:
            raise ValueError(
                "host_key is required: paste the server's known_hosts line (`ssh-keyscan -p PORT HOST`) or its "
                "SHA256 fingerprint, or set verify_host_key=False explicitly for a throwaway test server"
            )
        if self.password is None and self.private_key is None:
            raise ValueError("set password or private_key")
        return self

    def label(self) -> str:
        folder = self.base_folder if self.base_folder.startswith("/") else f"/~/{self.base_folder}"
        return f"sftp {self.username}@{self.host}:{self.port}{folder}"
