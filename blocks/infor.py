"""Infor blocks: the ION API connection (an .ionapi file's fields and its token), and the IDM, ION and
IDM + ION connections that nest it.

    docroute connect infor-ionapi/acme --ionapi ACME_PRD.ionapi    # creates or updates the block, fetches a token

`InforIonApiConnection` (infor-ionapi) holds every field of an Authorized Apps "Backend Service"
.ionapi file (ti, cn, ci, cs, iu, pu, oa, ot, or, ev, v, saak, sask; the secrets as SecretStr) and the
token. It is an OAuth2 connection (blocks/oauth.py) whose settings are derived from those fields:
the password grant at pu + ot with username saak and password sask (the # in saak form-encoded),
client_id ci and client_secret cs in the form body, revocation at pu + or; API calls go to
iu/ti/<suite>/... So the token is shared by every connection that nests the block, and so by every
integration of the tenant: tasks.oauth.TokenManager refreshes it once, under the block's lock, and
saves it in the block.

`InforIdmConnection` (infor-idm-connection), `InforIonConnection` (infor-ion-connection) and
`InforIdmIonConnection` (infor-idm-ion-connection) nest it (and optionally a second one for test mode).
Save the infor-ionapi block first, under its own name, then pick it in the nesting block: a nested
block that was never saved on its own still works, but gets a token per run instead of sharing one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from blocks.base import ConnectionBlock, http_url
from blocks.oauth import OAuth2Connection, host_entry

# The keys of an .ionapi file, in the order Infor writes them.
IONAPI_KEYS = ("ti", "cn", "ci", "cs", "iu", "pu", "oa", "ot", "or", "ev", "v", "saak", "sask")
REQUIRED_KEYS = ("ti", "ci", "cs", "iu", "pu", "saak", "sask")
MiB = 1024 * 1024


class IonApiFileError(ValueError):
    """An .ionapi file that cannot be used. The message names keys, never a value of the file."""


def _derived(description: str) -> Any:
    return Field(default=None, description=description)


class InforIonApiConnection(OAuth2Connection):
    """Infor ION API gateway credentials (an Authorized Apps "Backend Service" .ionapi file) and their token.

    Create it from the file (`docroute connect infor-ionapi/<name> --ionapi file.ionapi`, which prints
    nothing of the file) or field by field in the UI, copying each value from the file. Then nest it
    in an Infor IDM, ION or IDM + ION connection.

    Example:
        ```python
        from blocks.infor import InforIonApiConnection
        InforIonApiConnection.from_ionapi("ACME_PRD.ionapi").save("acme-prd")
        # or: InforIonApiConnection(ti="ACME_PRD", ci="ACME_PRD~abc", cs="...", iu="https://mingle-ionapi.eu1.inforcloudsuite.com",
        #         pu="https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/", saak="ACME_PRD#...", sask="...").save("acme-prd")
        ```
    """

    _block_type_name: ClassVar[str] = "Infor ION API"
    _block_type_slug: ClassVar[str] = "infor-ionapi"
    _description: ClassVar[str] = (
        "Infor ION API gateway credentials from an .ionapi file (Backend Service app with a service account) and "
        "the token shared by every Infor IDM and ION connection of the tenant."
    )

    ti: str = Field(description="Tenant (the .ionapi file's ti), e.g. ACME_PRD. Calls go to iu/ti/<suite>/...")
    cn: str = Field(default="", description="Name of the authorized app (cn).")
    ci: str = Field(description="Client id (ci) of the Backend Service app.")
    cs: SecretStr = Field(description="Client secret (cs).")
    iu: str = Field(description="ION API gateway base URL (iu), e.g. https://mingle-ionapi.eu1.inforcloudsuite.com.")
    pu: str = Field(
        description="SSO base URL (pu), e.g. https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/; the token "
        "endpoint is pu + ot."
    )
    oa: str = Field(default="authorization.oauth2", description="Authorization endpoint, relative to pu (oa).")
    ot: str = Field(default="token.oauth2", description="Token endpoint, relative to pu (ot).")
    or_: str = Field(default="revoke_token.oauth2", alias="or", description="Token revocation endpoint, relative to pu (or).")
    ev: str | None = Field(default=None, description="The .ionapi file's ev (environment version), kept as given.")
    v: str | None = Field(default=None, description="The .ionapi file's v (file version), kept as given.")
    saak: SecretStr = Field(
        description="Service account access key (saak); it begins with TENANT#. Sent as the password grant's username."
    )
    sask: SecretStr = Field(description="Service account secret key (sask). Sent as the password grant's password.")
    deployment: Literal["cloud", "on-premises"] = Field(
        default="cloud",
        description="Infor CloudSuite (multi-tenant cloud) or an on-premises ION API gateway. On-premises gateways "
        "usually have a certificate from a private CA: set ca_bundle. Assumption: both take the same .ionapi "
        "fields and the same password grant (docs/infor.md).",
    )

    # The OAuth2 settings, derived from the fields above on every load: not shown in the UI, not saved.
    client_id: SkipJsonSchema[str | None] = _derived("ci")
    client_secret: SkipJsonSchema[SecretStr | None] = _derived("cs")
    client_auth: SkipJsonSchema[str] = Field(default="client_secret_post")
    token_url: SkipJsonSchema[str | None] = _derived("pu + ot")
    authorize_url: SkipJsonSchema[str | None] = _derived("pu + oa")
    revoke_url: SkipJsonSchema[str | None] = _derived("pu + or")
    redirect_uri: SkipJsonSchema[str] = Field(default="http://127.0.0.1:8765/callback")
    scopes: SkipJsonSchema[list[str]] = Field(default_factory=list)
    grant: SkipJsonSchema[str] = Field(default="password")
    pkce: SkipJsonSchema[bool] = Field(default=False)
    username: SkipJsonSchema[SecretStr | None] = _derived("saak")
    password: SkipJsonSchema[SecretStr | None] = _derived("sask")

    @model_validator(mode="before")
    @classmethod
    def _derive_oauth2(cls, data: Any) -> Any:
        """The OAuth2 settings from the .ionapi fields: password grant at pu + ot, client secret in the body."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        pu = str(data.get("pu") or "")
        base = pu if pu.endswith("/") else f"{pu}/"

        def at(key: str, default: str) -> str | None:
            return f"{base}{str(data.get(key) or default).lstrip('/')}" if pu else None

        data.update(
            client_id=data.get("ci"), client_secret=data.get("cs"), username=data.get("saak"), password=data.get("sask"),
            grant="password", client_auth="client_secret_post", scopes=[], pkce=False,
            token_url=at("ot", "token.oauth2"), authorize_url=at("oa", "authorization.oauth2"),
            revoke_url=at("or" if "or" in data else "or_", "revoke_token.oauth2"),
        )
        return data

    @field_validator("iu", "pu")
    @classmethod
    def _urls(cls, value: str) -> str:
        return http_url(value)

    @field_validator("ti")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not value or "/" in value or value.strip() != value:
            raise ValueError("the tenant (ti) must be one path segment without spaces, e.g. ACME_PRD")
        return value

    # -- the .ionapi file ---------------------------------------------------------------------------
    @classmethod
    def from_ionapi(cls, source: dict | str | Path, **settings: Any) -> InforIonApiConnection:
        """A block from an .ionapi file (a path) or its parsed content (a dict); `settings` add or override
        block settings (deployment, ca_bundle, ...). IonApiFileError names missing keys, never a value."""
        data = read_ionapi(source) if not isinstance(source, dict) else dict(source)
        missing = [k for k in REQUIRED_KEYS if not data.get(k)]
        if missing:
            raise IonApiFileError(f"the .ionapi file lacks {', '.join(missing)}; download it again from ION API > "
                                  f"Authorized Apps (type Backend Service, with a service account)")
        fields = {k: data[k] for k in IONAPI_KEYS if data.get(k) is not None}
        if "deployment" not in settings:
            host = (urlsplit(str(fields["iu"])).hostname or "").lower()
            settings["deployment"] = "cloud" if host.endswith(".inforcloudsuite.com") else "on-premises"
        try:
            return cls(**fields, **settings)
        except ValueError as exc:  # pydantic: hide_input_in_errors, so no value of the file is in it
            raise IonApiFileError(f"the .ionapi file does not make a valid connection: {exc}") from None

    # -- where things are ---------------------------------------------------------------------------
    def api_base(self) -> str:
        """iu/ti: what every API path is relative to (IDM/api/items, IONSERVICES/api/ion/...)."""
        return f"{self.iu.rstrip('/')}/{self.ti}"

    def token_hosts(self) -> list[str]:
        """Where the token may go: the gateway (iu) and the SSO host (pu), unless api_hosts says otherwise."""
        if self.api_hosts:
            return [h.lower() for h in self.api_hosts]
        return list(dict.fromkeys([host_entry(self.iu), host_entry(self.pu)]))

    def label(self) -> str:
        """'<name> (Infor ION API, tenant <ti> at <gateway host>)': never a secret."""
        name = self._block_document_name or "infor-ionapi"
        where = "on-premises" if self.deployment == "on-premises" else "cloud"
        return f"{name} (Infor ION API {where}, tenant {self.ti} at {urlsplit(self.iu).hostname})"


def read_ionapi(path: str | Path) -> dict[str, Any]:
    """The keys of an .ionapi file (JSON). IonApiFileError says what is wrong without quoting the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise IonApiFileError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise IonApiFileError(f"{path} is not UTF-8 text: is it an .ionapi file?") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:  # its message has a position, never the text
        raise IonApiFileError(f"{path} is not JSON (line {exc.lineno}, column {exc.colno}): is it an .ionapi file?") from None
    if not isinstance(data, dict):
        raise IonApiFileError(f"{path} holds no JSON object: is it an .ionapi file?")
    return data


def save_from_ionapi(ref: str, path: str | Path) -> InforIonApiConnection:
    """Create or update the infor-ionapi block `ref` ("infor-ionapi/<name>") from an .ionapi file.

    An existing block keeps its own settings (deployment, ca_bundle, verify_tls, api_hosts, timeout);
    its tokens are cleared, as they belong to the credentials being replaced."""
    slug, _, name = ref.partition("/")
    if slug != InforIonApiConnection.get_block_type_slug() or not name:
        raise IonApiFileError(f"--ionapi makes an {InforIonApiConnection.get_block_type_slug()} block: name it "
                              f"{InforIonApiConnection.get_block_type_slug()}/<name>, not {ref!r}")
    kept: dict[str, Any] = {}
    try:
        old = InforIonApiConnection.load(name, _sync=True)
    except ValueError:
        old = None
    if old is not None:
        kept = {k: getattr(old, k) for k in ("deployment", "ca_bundle", "verify_tls", "api_hosts", "timeout")}
    block = InforIonApiConnection.from_ionapi(path, **kept)
    block.save(name, overwrite=True, _sync=True)
    return InforIonApiConnection.load(name, _sync=True)


class _InforConnection(ConnectionBlock):
    """What the Infor connections share: the ION API connection, its test twin, timeouts and pacing."""

    ionapi: InforIonApiConnection = Field(
        description="The Infor ION API connection (infor-ionapi block): credentials and the shared token."
    )
    test_ionapi: InforIonApiConnection | None = Field(
        default=None,
        description="The ION API connection of the test tenant, used when an integration runs in test mode.",
    )
    timeout: float = Field(
        default=75, gt=0, le=600,
        description="Seconds to wait for an answer. Above the gateway's own 60 s cut-off, so its 504 arrives "
        "rather than our timeout.",
    )
    calls_per_minute: int | None = Field(
        default=None, ge=1,
        description="At most this many calls a minute through this connection (the gateway's quota policy answers "
        "429 beyond the tenant's limit; empty: only what its answers say).",
    )

    def _label(self, what: str) -> str:
        name = self._block_document_name or self.get_block_type_slug()
        return f"{name} (Infor {what}, tenant {self.ionapi.ti} at {urlsplit(self.ionapi.iu).hostname})"


class _IdmSettings(ConnectionBlock):
    after_timeout_wait: float = Field(
        default=20, ge=0, le=600,
        description="Seconds to wait after a gateway timeout (504) or a cut connection during an upload before "
        "searching IDM for the item (IDM may still be storing it); not found, the upload is tried again later.",
    )
    max_item_bytes: int = Field(
        default=25 * MiB, ge=1,
        description="Largest total of files per item. Assumption (IDM's limit is not documented): base64 adds 33% "
        "and the gateway cuts a request off at 60 s; a larger document fails, named, instead of timing out.",
    )


class InforIdmConnection(_IdmSettings, _InforConnection):
    """Infor IDM (Document Management) through the ION API gateway: one item per document.

    Which entity, attributes, ACL and names: the integration's IDM mapping file
    (connection_options: {idm_mapping: acme-idm.yaml}, deployments/mappings/).

    Example:
        ```python
        from blocks.infor import InforIdmConnection, InforIonApiConnection
        InforIdmConnection(ionapi=InforIonApiConnection.load("acme-prd")).save("acme-idm")
        ```
    """

    _block_type_name: ClassVar[str] = "Infor IDM Connection"
    _block_type_slug: ClassVar[str] = "infor-idm-connection"
    _description: ClassVar[str] = "Infor Document Management (IDM): one item per document, through the ION API gateway."

    def label(self) -> str:
        return self._label("IDM")


class InforIonConnection(_InforConnection):
    """Infor ION messaging through the ION API gateway: one SyncCaptureDocument BOD per document.

    The BOD's content: the integration's BOD mapping file (connection_options: {bod_mapping: acme-bod.yaml}).

    Example:
        ```python
        from blocks.infor import InforIonApiConnection, InforIonConnection
        InforIonConnection(ionapi=InforIonApiConnection.load("acme-prd"), logical_id="lid://infor.ims.docroute",
                           accounting_entity="infor.ln.100").save("acme-ion")
        ```
    """

    _block_type_name: ClassVar[str] = "Infor ION Connection"
    _block_type_slug: ClassVar[str] = "infor-ion-connection"
    _description: ClassVar[str] = "Infor ION messaging: one SyncCaptureDocument BOD per document, through the ION API gateway."

    logical_id: str = Field(
        default="lid://infor.ims.docroute",
        description="The IMS connection point docroute sends from (lid://infor.ims.<point>): ParameterRequest "
        "fromLogicalId and the BOD's Sender/LogicalID.",
    )
    to_logical_id: str = Field(default="lid://default", description="toLogicalId: lid://default lets ION route the BOD.")
    accounting_entity: str | None = Field(
        default=None,
        description="DataArea/Sync/AccountingEntityID and ParameterRequest accountingEntity, e.g. infor.ln.100 "
        "(a BOD mapping file's accounting_entity wins).",
    )
    max_message_bytes: int = Field(
        default=10 * MiB, ge=1024,
        description="Largest BOD sent. Assumption (ION's limit is not documented here): a document whose BOD "
        "would be larger fails, named; for large files use IDM + ION, where the BOD carries no file.",
    )

    @field_validator("logical_id", "to_logical_id")
    @classmethod
    def _lid(cls, value: str) -> str:
        if not value.startswith("lid://") or len(value) <= len("lid://"):
            raise ValueError("a logical id looks like lid://infor.ims.<connection point> (or lid://default)")
        return value

    def label(self) -> str:
        return self._label("ION")


class InforIdmIonConnection(_IdmSettings, InforIonConnection):
    """Infor IDM + ION (Docbits' "IDM + ION BOD"): the document to IDM, then a BOD carrying the IDM item's PID.

    connection_options: {idm_mapping: acme-idm.yaml, bod_mapping: acme-bod.yaml}.

    Example:
        ```python
        from blocks.infor import InforIdmIonConnection, InforIonApiConnection
        InforIdmIonConnection(ionapi=InforIonApiConnection.load("acme-prd"), accounting_entity="infor.ln.100").save("acme")
        ```
    """

    _block_type_name: ClassVar[str] = "Infor IDM + ION Connection"
    _block_type_slug: ClassVar[str] = "infor-idm-ion-connection"
    _description: ClassVar[str] = (
        "Infor IDM + ION: each document uploaded to IDM, then a SyncCaptureDocument BOD carrying the item's PID to ION."
    )

    def label(self) -> str:
        return self._label("IDM + ION")

