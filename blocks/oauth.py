"""Base blocks for connections and sources that authenticate with OAuth2 (tasks/oauth.py does the protocol).

`OAuth2Block` holds what every OAuth2 client needs: the client's credentials, the authorization
server's endpoints, the grant, the tokens (kept in the block, refreshed and re-saved by
tasks.oauth.TokenManager) and the hosts a token may be sent to. `OAuth2Connection` and
`OAuth2Source` are the bases concrete block types subclass (an Exact Online or a Pagero connection);
none of them is a registered block type itself.
"""

from __future__ import annotations

import base64
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks.base import ConnectionBlock, DocrouteBlock, SourceBlock, http_url

Grant = Literal["authorization_code", "client_credentials", "password"]
ClientAuth = Literal["client_secret_basic", "client_secret_post"]


def host_entry(url: str) -> str:
    """"host" or "host:port" (the port only where the URL names one) of a URL, lower-cased."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets, so "[::1]:8443" still parses
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


class OAuth2Block(DocrouteBlock):
    """OAuth2 client settings and tokens for a connector or a source.

    Subclass it (through OAuth2Connection or OAuth2Source) per remote, with that remote's endpoints
    as defaults and the hosts of its API in `default_api_hosts`; then `docroute connect
    <type-slug>/<name>` authorises the block once and saves its first tokens. Every later refresh is
    saved back into the block at once (refresh tokens rotate: Exact Online's change on every use).

    Example:
        ```python
        from blocks.oauth import OAuth2Connection

        class ExactOnlineConnection(OAuth2Connection):
            _block_type_slug = "exact-online-connection"
            default_api_hosts = ("start.exactonline.nl",)

        ExactOnlineConnection(
            client_id="7b0c...",
            client_secret="...",
            authorize_url="https://start.exactonline.nl/api/oauth2/auth",
            token_url="https://start.exactonline.nl/api/oauth2/token",
            redirect_uri="http://127.0.0.1:8765/callback",
        ).save("acme-exact")
        # then, once: docroute connect exact-online-connection/acme-exact
        ```
    """

    # Validation errors must not echo a secret that failed a check.
    model_config = ConfigDict(hide_input_in_errors=True)

    # Hosts (or host:port) of the remote's API that a subclass always allows, besides the token URL's host.
    default_api_hosts: ClassVar[tuple[str, ...]] = ()

    client_id: str = Field(description="The OAuth2 client (application) id registered with the authorization server.")
    client_secret: SecretStr | None = Field(
        default=None, description="The client secret. Leave empty for a public client (authorization code with PKCE)."
    )
    client_auth: ClientAuth = Field(
        default="client_secret_basic",
        description="How the client authenticates at the token endpoint: client_secret_basic (HTTP basic "
        "header) or client_secret_post (client_id and client_secret in the form body, as the Infor ION API gateway wants).",
    )
    token_url: str = Field(description="Token endpoint, e.g. https://start.exactonline.nl/api/oauth2/token.")
    authorize_url: str | None = Field(
        default=None,
        description="Authorization endpoint, for the authorization_code grant, e.g. https://start.exactonline.nl/api/oauth2/auth.",
    )
    revoke_url: str | None = Field(default=None, description="Token revocation endpoint (RFC 7009), if the server has one.")
    redirect_uri: str = Field(
        default="http://127.0.0.1:8765/callback",
        description="Redirect URI registered for the client. A 127.0.0.1 or localhost URI lets `docroute connect` "
        "catch the redirect itself; with any other, paste the URL the browser was sent to.",
    )
    scopes: list[str] = Field(default_factory=list, description="Scopes to ask for (empty: the server's default).")
    grant: Grant = Field(
        default="authorization_code",
        description="How tokens are obtained: authorization_code (a user authorises once; refresh tokens after "
        "that), client_credentials (the client's own credentials), or password (username and password, e.g. an "
        "Infor ION service account's saak and sask).",
    )
    pkce: bool = Field(default=False, description="Use PKCE (S256) in the authorization code grant.")
    username: SecretStr | None = Field(
        default=None, description="User name for the password grant (Infor: the service account access key, saak)."
    )
    password: SecretStr | None = Field(
        default=None, description="Password for the password grant (Infor: the service account secret key, sask)."
    )
    access_token: SecretStr | None = Field(
        default=None, description="Current access token. Written by docroute (connect, refresh); leave empty."
    )
    refresh_token: SecretStr | None = Field(
        default=None, description="Current refresh token. Written by docroute (connect, refresh); leave empty."
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the access token expires (with its timezone). Written by docroute."
    )
    api_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (or host:port) the access token may be sent to. Empty: the token URL's host plus the "
        "hosts this connection type names. A request to any other host is refused before it is sent.",
    )
    verify_tls: bool = Field(default=True, description="Verify TLS certificates. Turn off only for a test server.")
    ca_bundle: str | None = Field(
        default=None, description="Path of a PEM file with the CA certificate(s) to trust, for a private CA."
    )
    timeout: float = Field(default=30, gt=0, le=300, description="Seconds to wait for the token endpoint to connect and to answer.")

    @field_validator("token_url", "authorize_url", "revoke_url", "redirect_uri")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @model_validator(mode="after")
    def _grant_complete(self) -> OAuth2Block:
        if self.grant == "password" and not (self.username and self.password):
            raise ValueError("grant=password needs username and password")
        if self.grant == "client_credentials" and not self.client_secret:
            raise ValueError("grant=client_credentials needs client_secret")
        return self

    def token_hosts(self) -> list[str]:
        """Where the access token may go: `api_hosts` if set, else the token URL's host and `default_api_hosts`.

        An entry without a port allows that host on any port."""
        if self.api_hosts:
            return [h.lower() for h in self.api_hosts]
        return list(dict.fromkeys([host_entry(self.token_url), *(h.lower() for h in self.default_api_hosts)]))

    def label(self) -> str:
        """'<name> (OAuth2 at <token host>)': never a secret."""
        return f"{super().label()} (OAuth2 at {urlsplit(self.token_url).hostname})"

    def secret_values(self) -> list[str]:
        """Every secret and token, plus the basic-auth pair as it travels."""
        values = super().secret_values()
        if self.client_secret:
            pair = f"{self.client_id}:{self.client_secret.get_secret_value()}"
            values.append(base64.b64encode(pair.encode()).decode())
        return values


class OAuth2Connection(OAuth2Block, ConnectionBlock):
    """A connection whose remote authenticates with OAuth2: subclass it per remote (see OAuth2Block).

    Example:
        ```python
        from blocks.oauth import OAuth2Connection

        class PageroConnection(OAuth2Connection):
            _block_type_slug = "pagero-connection"
            default_api_hosts = ("api.pageroonline.com",)
        ```
    """


class OAuth2Source(OAuth2Block, SourceBlock):
    """A source whose capture system authenticates with OAuth2: subclass it per system (see OAuth2Block).

    Example:
        ```python
        from blocks.oauth import OAuth2Source

        class CaptureApiSource(OAuth2Source):
            _block_type_slug = "capture-api-source"
        ```
    """
