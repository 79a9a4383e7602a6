"""Connection block for an SMTP server (documents sent as e-mail attachments)."""

from __future__ import annotations

import smtplib
import ssl
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator

from blocks.base import ConnectionBlock

MiB = 1024 * 1024


def check_address(value: str) -> str:
    """One plain e-mail address, stripped; ValueError otherwise."""
    if any(c in value for c in "\r\n,;<>") or value.count("@") != 1 or value.startswith("@") or value.endswith("@"):
        raise ValueError("must be one plain e-mail address, like invoices@example.com")
    return value.strip()


class SmtpConnection(ConnectionBlock):
    """Send each document as one e-mail, PDF and other files attached, through an SMTP server.

    Recipients, subject and body are per integration (the connector's options: to, cc,
    subject, body), so one connection serves many clients.

    Example:
        ```python
        from blocks.smtp import SmtpConnection
        SmtpConnection(
            host="smtp.example.com",
            port=587,
            security="starttls",
            username="docroute@example.com",
            password="...",
            from_address="docroute@example.com",
            test_recipient="qa@example.com",
        ).save("outbound-mail")
        ```
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name: ClassVar[str] = "SMTP Connection"
    _block_type_slug: ClassVar[str] = "smtp-connection"
    _logo_url: ClassVar[str] = "https://cdn.sanity.io/images/3ugk85nk/production/13fb0ca5ee1bd0ce5cf3b79ad69a0ddc3e1f1a47-250x250.png"
    _description: ClassVar[str] = "An SMTP server that e-mails exported documents as attachments."

    host: str = Field(description="SMTP server host name.")
    port: int = Field(default=587, ge=1, le=65535, description="SMTP port: 587 for starttls, 465 for ssl, 25 for none.")
    security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls",
        description="starttls (plain connect, then STARTTLS, required), ssl (TLS from the first byte) or none "
        "(no encryption: only for a relay on a trusted network).",
    )
    username: str | None = Field(default=None, description="User to log in as; empty = no authentication.")
    password: SecretStr | None = Field(default=None, description="Password of username.")
    from_address: str = Field(description="Sender address (From and envelope sender).")
    test_recipient: str | None = Field(
        default=None,
        description="In test mode every message goes to this address only, instead of the integration's to and cc.",
    )
    max_message_bytes: int = Field(
        default=10 * MiB,
        ge=10_000,
        description="Largest message to send, attachments encoded (many capture mailboxes take at most 10 MB).",
    )
    timeout: float = Field(default=30, gt=0, le=300, description="Seconds to wait for the server on each step.")
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate and host name.")
    ca_bundle: str | None = Field(
        default=None, description="Path of a PEM file with the CA certificate(s) to trust, for a private CA."
    )

    @field_validator("from_address", "test_recipient")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        return check_address(value) if value else None

    def label(self) -> str:
        """'smtp host:port': never a user name or password."""
        return f"smtp {self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context for ssl/starttls: verified against ca_bundle or the system CAs unless verify_tls is off."""
        if not self.verify_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=self.ca_bundle)

    def connect(self) -> smtplib.SMTP:
        """A connected, logged-in client with this connection's security (closed again on failure)."""
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.tls_context())
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.ehlo()
                smtp.starttls(context=self.tls_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password.get_secret_value() if self.password else "")
        except BaseException:
            smtp.close()
            raise
        return smtp

