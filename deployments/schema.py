"""The schema of a client file: integrations, filters, mapping (typed field specs), schedules.

Pydantic models with `extra="forbid"`: an unknown field is an error that names it. Reading the
files (YAML, templates) is deployments/config.py's; checks across fields, files and blocks are
deployments/checks.py's.
"""

from __future__ import annotations

import re
import string
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from blocks.smtp import check_address
from deployments.ubl import UblMapping
from tasks.documents import STANDARD_METADATA_FIELDS

BUILTIN_PLACEHOLDERS = frozenset(
    {"doc_id", "client", "doc_type", "sub_org", "approved_at", "year", "month", "day", "ext", "version",
     "integration", "original_name", "today"}
)
DATE_PLACEHOLDERS = frozenset({"approved_at", "today", "issue_date", "due_date"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def parse_duration(value: Any) -> timedelta:
    """'90s', '15m', '2h', '3d', '1w' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration; use e.g. 90s, 15m, 2h, 3d")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def placeholders(template: str) -> list[tuple[str, str]]:
    """(name, format spec) of each {placeholder} in a template."""
    out = []
    for _, name, spec, _ in string.Formatter().parse(template):
        if name is not None:
            out.append((name, spec or ""))
    return out


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(Strict):
    """Which documents an integration takes. Empty lists mean "all"."""

    document_types: list[str] = Field(default_factory=list, description="e.g. [invoice, credit_note]")
    sub_organisations: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list, description="A document matches when it has any of them.")
    approved_only: bool = True

    def matches(self, doc_type: str, sub_org: str | None, tags: list[str]) -> bool:
        if self.document_types and doc_type not in self.document_types:
            return False
        if self.sub_organisations and sub_org not in self.sub_organisations:
            return False
        if self.tags and not set(self.tags) & set(tags):
            return False
        return True

    def overlaps(self, other: Filters) -> bool:
        def meet(a: list[str], b: list[str]) -> bool:
            return not a or not b or bool(set(a) & set(b))

        return (
            meet(self.document_types, other.document_types)
            and meet(self.sub_organisations, other.sub_organisations)
            and meet(self.tags, other.tags)
        )


class LookupTable(Strict):
    """A CSV table read with pandas, e.g. supplier number -> vendor code."""

    file: str = Field(description="CSV path, relative to the config folder's lookups/ (or absolute).")
    key: str = Field(description="Column holding the lookup key.")


class Sanitize(Strict):
    """How values are made safe for paths. Defaults suit most receivers; tighten for strict ones."""

    allowed: str | None = Field(
        default=None,
        description="Regex character class body of allowed characters, e.g. 'A-Za-z0-9._ -' (Basware).",
    )
    replacement: str = "_"
    max_length: int = Field(default=150, ge=8, le=255, description="Maximum length of one path segment.")
    ascii: bool = Field(default=False, description="Transliterate to ASCII (é -> e) before filtering.")

    @field_validator("allowed")
    @classmethod
    def _valid_class(cls, v: str | None) -> str | None:
        if v is not None:
            re.compile(f"[^{v}]")
        return v


class TemplateField(Strict):
    """A field rendered from a template: `amount: "{total}"` (written as a plain string)."""

    template: str

    def templates(self) -> dict[str, str]:
        return {"": self.template}


class FromField(Strict):
    """A metadata field under another name: `amount: {from: total}`."""

    from_: str = Field(alias="from")

    def templates(self) -> dict[str, str]:
        return {}


class ConstantField(Strict):
    """A constant: `currency: {constant: EUR}`."""

    constant: Any

    def templates(self) -> dict[str, str]:
        return {}


class LookupField(Strict):
    """A value from a lookup table: `vendor_code: {lookup: vendors, key: "{supplier_number}", column: vendor_code}`."""

    lookup: str = Field(description="Name of a table in mapping.lookups.")
    key: str = Field(description="Template of the key to look up, e.g. '{supplier_number}'.")
    column: str = Field(description="Column of the table holding the value.")
    default: Any = Field(default=None, description="Value when the key is not in the table (absent: the document fails).")
    has_default: bool = Field(default=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _default_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and "default" in data:
            data = {**data, "has_default": True}
        return data

    def templates(self) -> dict[str, str]:
        return {".key": self.key}


def _field_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "template"
    if isinstance(value, (TemplateField, FromField, ConstantField, LookupField)):
        return {TemplateField: "template", FromField: "from", ConstantField: "constant", LookupField: "lookup"}[type(value)]
    if isinstance(value, dict):
        for kind in ("lookup", "from", "constant", "template"):
            if kind in value:
                return kind
    return None


def _as_template(value: Any) -> Any:
    return {"template": value} if isinstance(value, str) else value


FieldSpec = Annotated[
    Annotated[TemplateField, Tag("template")]
    | Annotated[FromField, Tag("from")]
    | Annotated[ConstantField, Tag("constant")]
    | Annotated[LookupField, Tag("lookup")],
    Discriminator(
        _field_kind,
        custom_error_type="field_spec",
        custom_error_message="use a template string, or one of from / constant / lookup",
    ),
    BeforeValidator(_as_template),
]


class XsltStep(Strict):
    """An XSLT run on the package's XML files before delivery, on any connector (tasks/xslt.py).

    `xslt: to-erp.xsl` or `xslt: [{stylesheet: to-erp.xsl, files: ["*.xml"], params: {supplier: "{supplier_number}"}}]`."""

    stylesheet: str = Field(
        description="XSLT file, relative to the config folder's xslt/ (or absolute). Its version attribute picks "
        "the engine: 1.0 lxml, 2.0 and 3.0 Saxon (saxonche)."
    )
    files: list[str] = Field(
        default_factory=lambda: ["*.xml"],
        description="Which files of the package it transforms: glob patterns on the delivered file name, case-insensitive.",
    )
    params: dict[str, str] = Field(
        default_factory=dict, description="Stylesheet parameters (xsl:param), templates of the document's values."
    )


def _as_steps(value: Any) -> Any:
    if isinstance(value, (str, dict)):
        value = [value]
    if isinstance(value, list):
        return [{"stylesheet": v} if isinstance(v, str) else v for v in value]
    return value


class Mapping(Strict):
    """How a document becomes files at the destination."""

    fields: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="Output fields. A string is a template ('{number}'); {from: field} renames; "
        "{constant: value}; {lookup: table, key: '{supplier_number}', column: vendor_code, default: ...}.",
    )
    lookups: dict[str, LookupTable] = Field(default_factory=dict)
    filename: str = Field(default="{doc_id}.{ext}", description="Renaming pattern of the main file.")
    folder: str = Field(default="", description="Folder path template, e.g. '{external_id}/{approved_at:%Y/%m}'.")
    sidecar: bool = Field(default=False, description="Write a JSON metadata sidecar next to the PDF.")
    sanitize: Sanitize = Field(default_factory=Sanitize)
    xslt: Annotated[list[XsltStep], BeforeValidator(_as_steps)] = Field(
        default_factory=list,
        description="Stylesheets run, in order, on the package's XML files before delivery: a file name "
        "(config folder's xslt/), or a list of {stylesheet, files, params}.",
    )
    ubl: UblMapping | None = Field(
        default=None,
        description="A Peppol BIS Billing 3.0 UBL in every package, validated before sending (tasks/ubl/): the source's "
        "own UBL passed through, else one built from the metadata by this mapping (deployments/ubl.py; "
        "docs/accounting-and-einvoicing.md). `ubl: {}` takes the defaults.",
    )


class Schedule(Strict):
    interval: timedelta | None = Field(default=None, description="e.g. 15m; at least 30s.")
    cron: str | None = Field(default=None, description="e.g. '*/10 7-19 * * 1-5'.")
    timezone: str = "UTC"

    @field_validator("interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("give exactly one of interval or cron")
        if self.interval is not None and self.interval < timedelta(seconds=30):
            raise ValueError("interval must be at least 30s")
        if self.cron is not None:
            from prefect.client.schemas.schedules import CronSchedule

            try:
                CronSchedule(cron=self.cron)  # Prefect's own check, so the server accepts it
            except ValueError:
                raise ValueError(f"cron {self.cron!r} is not a valid cron expression") from None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        return self


class Notify(Strict):
    """Who is e-mailed when a sync run of the integration fails or crashes (the sync flow's on-failure hook)."""

    email: list[str] = Field(default_factory=list, description="Recipients, e.g. [ops@client.example].")
    smtp: str | None = Field(
        default=None, description="SMTP connection block, e.g. smtp-connection/ops (default: DOCROUTE_NOTIFY_SMTP)."
    )

    @field_validator("email")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        out = []
        for v in values:
            try:
                out.append(check_address(v))
            except ValueError as exc:
                raise ValueError(f"{v!r}: {exc}") from None
        return out


class Integration(Strict):
    """One client's export configuration."""

    name: str = Field(description="Slug, unique per client, e.g. invoices-to-erp.")
    client: str
    description: str = ""
    source: str = Field(description="Source block, 'type-slug/name', e.g. capture-inbox-folder/main-inbox.")
    connection: str = Field(description="Connection block, 'type-slug/name', e.g. sftp-connection/partner-a.")
    connection_options: dict[str, Any] = Field(default_factory=dict, description="Connector settings of this integration.")
    source_options: dict[str, Any] = Field(default_factory=dict, description="Source settings of this integration (API sources: a type map, how a document is marked exported); see docs/api-sources.md.")
    identifiers: dict[str, str] = Field(default_factory=dict, description="The client's own ids: external_id, company_code, vat_number...")
    filters: Filters = Field(default_factory=Filters)
    mapping: Mapping = Field(default_factory=Mapping)
    metadata_fields: list[str] = Field(default_factory=list, description="Metadata fields beyond the standard ones.")
    mode: Literal["production", "test", "certification", "dry-run"] = "production"
    schedule: Schedule | None = None
    activated_at: datetime = Field(description="Only documents approved at or after this time are exported.")
    lookback: timedelta = Field(default=timedelta(days=1), description="How far before the cursor each run looks again (late approvals).")
    archive_after_transfer: bool = False
    max_attempts: int = Field(default=3, ge=1, description="Runs a permanently failing document is tried before it is parked.")
    retries: int = Field(default=3, ge=0, description="Retries of a transient error within one run.")
    retry_delay: float = Field(default=1.0, ge=0, description="First backoff delay in seconds (doubles each retry).")
    throttle_per_second: float | None = Field(default=None, gt=0, description="At most this many documents a second (receiver limits).")
    enabled: bool = Field(default=True, description="False: an alternate export, run on demand only (no schedule).")
    notify: Notify = Field(default_factory=Notify, description="E-mail on failed runs (client-level default: top-level notify).")

    @field_validator("name", "client")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _SLUG.match(v):
            raise ValueError(f"{v!r} must be a lowercase slug (a-z, 0-9, -)")
        return v

    @field_validator("lookback", mode="before")
    @classmethod
    def _lookback(cls, v: Any) -> Any:
        return parse_duration(v)

    @field_validator("activated_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)

    @property
    def key(self) -> str:
        return f"{self.client}/{self.name}"

    @property
    def slug(self) -> str:
        return f"{self.client}-{self.name}"

    def source_fields(self) -> set[str]:
        """Values a document brings: built-ins, the client's identifiers and metadata fields."""
        return set(BUILTIN_PLACEHOLDERS) | set(self.identifiers) | set(STANDARD_METADATA_FIELDS) | set(self.metadata_fields)

    def known_placeholders(self) -> set[str]:
        return self.source_fields() | set(self.mapping.fields)


def pydantic_problems(where: str, exc: ValidationError) -> list[str]:
    """One line per validation error: where, the field's dotted path, and what is wrong with it."""
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(integration)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif err["type"] == "missing":
            msg = "required field is missing"
        out.append(f"{where}: {field}: {msg}")
    return out
