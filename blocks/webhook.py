"""Connection block for an HTTP webhook receiver (Standard Webhooks signing)."""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks.base import ConnectionBlock, http_url, url_label

MiB = 1024 * 1024
SECRET_PREFIX = "whsec_"
# Headers the connector sets itself; an extra header must not replace them.
RESERVED_HEADERS = {
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "authorization", "docroute-mode"
}


class WebhookConnection(ConnectionBlock):
    """POST every document to an HTTPS endpoint, signed per Standard Webhooks.

    Each request carries `webhook-id` (the package's idempotency key: the same on every
    retry, so the receiver dedups on it), `webhook-timestamp` and `webhook-signature`.
    Several signing secrets = key rotation: every request is signed with each of them.

    Example:
        ```python
        from blocks.webhook import WebhookConnection
        WebhookConnection(
            url="https://erp.example.com/hooks/invoices",
            test_url="https://erp-test.example.com/hooks/invoices",
            signing_secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            auth="bearer",
            bearer_token="...",
        ).save("erp-webhook")
        ```
    """

    # Validation errors must not echo a secret that failed a check.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name: ClassVar[str] = "Webhook Connection"
    _block_type_slug: ClassVar[str] = "webhook-connection"
    _logo_url: ClassVar[str] = "https://cdn.sanity.io/images/3ugk85nk/production/13fb0ca5ee1bd0ce5cf3b79ad69a0ddc3e1f1a47-250x250.png"
    _description: ClassVar[str] = (
        "An HTTP endpoint that receives one signed POST per exported document (Standard Webhooks)."
    )

    url: str = Field(description="Endpoint that receives the documents, e.g. https://erp.example.com/hooks/docroute.")
    test_url: str | None = Field(
        default=None, description="Endpoint used instead of url when an integration runs in test mode."
    )
    certification_url: str | None = Field(
        default=None,
        description="Endpoint used when an integration runs in certification mode (default: url). Every request "
        "says its mode in the signed body ('mode') and in a docroute-mode header, so one endpoint can tell them apart.",
    )
    signing_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Standard Webhooks secrets, each 'whsec_<base64>' (at least 24 bytes). With several "
        "(key rotation), every request carries one v1 signature per secret. Empty = requests are not signed.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers (plain text: put credentials in bearer_token or password instead).",
    )
    auth: Literal["none", "bearer", "basic"] = Field(
        default="none", description="HTTP authentication: none, bearer (bearer_token) or basic (username, password)."
    )
    bearer_token: SecretStr | None = Field(default=None, description="Token sent as 'Authorization: Bearer ...' (auth=bearer).")
    username: str | None = Field(default=None, description="User name for HTTP basic authentication (auth=basic).")
    password: SecretStr | None = Field(default=None, description="Password for HTTP basic authentication (auth=basic).")
    verify_tls: bool = Field(
        default=True, description="Verify the endpoint's TLS certificate. Turn off only for a test endpoint."
    )
    ca_bundle: str | None = Field(
        default=None, description="Path of a PEM file with the CA certificate(s) to trust, for a private CA."
    )
    timeout: float = Field(default=30, gt=0, le=300, description="Seconds to wait to connect, and for each read of the answer.")
    inline_max_bytes: int = Field(
        default=5 * MiB,
        ge=0,
        description="Packages up to this many bytes (all files) are inlined as base64 in the JSON body; larger "
        "ones are sent as multipart/form-data (payload=auto) or refused (payload=json).",
    )
    payload: Literal["auto", "json", "multipart"] = Field(
        default="auto",
        description="Body format: json (files inlined as base64), multipart (a 'metadata' JSON part plus one "
        "part per file), or auto (json up to inline_max_bytes, multipart above).",
    )

    @field_validator("url", "test_url", "certification_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("signing_secrets")
    @classmethod
    def _whsec(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for n, secret in enumerate(secrets, 1):
            value = secret.get_secret_value()
            if not value.startswith(SECRET_PREFIX):
                raise ValueError(f"secret #{n} must start with {SECRET_PREFIX!r}")
            try:
                key = base64.b64decode(value[len(SECRET_PREFIX):], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"secret #{n} is not valid base64 after {SECRET_PREFIX!r}") from None
            if len(key) < 24:
                raise ValueError(f"secret #{n} is {len(key)} bytes; Standard Webhooks wants at least 24")
        return secrets

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the connector; remove it (use auth for Authorization)")
            if any(c in f"{name}{value}" for c in "\r\n"):
                raise ValueError(f"header {name!r} contains a line break")
        return headers

    @model_validator(mode="after")
    def _auth_complete(self) -> WebhookConnection:
        if self.auth == "bearer" and not self.bearer_token:
            raise ValueError("auth=bearer needs bearer_token")
        if self.auth == "basic" and not (self.username and self.password):
            raise ValueError("auth=basic needs username and password")
        return self

    def label(self, url: str | None = None) -> str:
        """'webhook scheme://host/path' of the endpoint: never a credential or query string."""
        return f"webhook {url_label(url or self.url)}"

    def secret_values(self) -> list[str]:
        """Values that must never appear in an error (used to scrub receivers' answers)."""
        values = super().secret_values()
        values += [s.get_secret_value()[len(SECRET_PREFIX):] for s in self.signing_secrets]  # the key without its prefix
        if self.auth == "basic" and self.username and self.password:
            values.append(base64.b64encode(f"{self.username}:{self.password.get_secret_value()}".encode()).decode())
        return [v for v in values if v]
