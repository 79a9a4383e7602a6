"""Integrations: per-client export configurations, read from deployments/clients/*.yaml.

One file per client. Each file holds the client's identifiers and a list of
integrations; an integration may `extends:` a template from
deployments/templates/<name>.yaml (a partner-level default activated per
client, as Banqup does) and override any of its fields.

Everything is validated before any document is touched (`load_config`):
unknown fields, unknown placeholders, missing blocks, bad schedules, and
filters that would deliver one document twice to the same place, each with
an error naming the file, the integration, the field and the fix.
"""

from __future__ import annotations

import re
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class Mapping(Strict):
    """How a document becomes files at the destination."""

    fields: dict[str, Any] = Field(
        default_factory=dict,
        description="Output fields. A string is a template ('{number}'); {from: field} renames; "
        "{constant: value}; {lookup: table, key: '{supplier_number}', column: vendor_code, default: ...}.",
    )
    lookups: dict[str, LookupTable] = Field(default_factory=dict)
    filename: str = Field(default="{doc_id}.{ext}", description="Renaming pattern of the main file.")
    folder: str = Field(default="", description="Folder path template, e.g. '{external_id}/{approved_at:%Y/%m}'.")
    sidecar: bool = Field(default=False, description="Write a JSON metadata sidecar next to the PDF.")
    sanitize: Sanitize = Field(default_factory=Sanitize)


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
        from blocks.smtp import _address

        out = []
        for v in values:
            try:
                out.append(_address(v))
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


class ConfigError(Exception):
    """Bad configuration: names the file, the integration, the field and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, problems: list[str]) -> dict | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read YAML: {exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping at the top level")
        return None
    return data


def _pydantic_problems(where: str, exc: ValidationError) -> list[str]:
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


class Config:
    """All integrations of all clients, validated."""

    def __init__(self, config_dir: Path, integrations: dict[str, Integration], files: dict[str, Path]):
        self.config_dir = config_dir
        self.integrations = integrations
        self.files = files  # integration key -> client file
        self.blocks: dict[str, Any] = {}  # block reference -> block loaded while checking

    def block(self, ref: str) -> Any:
        """A source or connection block, loaded once per configuration."""
        if ref not in self.blocks:
            from blocks.base import load_block

            self.blocks[ref] = load_block(ref)
        return self.blocks[ref]

    def get(self, key: str) -> Integration:
        try:
            return self.integrations[key]
        except KeyError:
            raise ConfigError(
                [f"no integration {key!r}; known: {', '.join(sorted(self.integrations)) or '(none)'}"]
            ) from None

    def lookup_path(self, table: LookupTable) -> Path:
        p = Path(table.file)
        return p if p.is_absolute() else self.config_dir / "lookups" / p


def parse_config(config_dir: Path, clients: list[str] | None = None) -> tuple[Config, list[str]]:
    """Read client files and templates; returns the config and the problems found so far."""
    problems: list[str] = []
    templates: dict[str, dict] = {}
    for path in sorted((config_dir / "templates").glob("*.yaml")):
        data = _read_yaml(path, problems)
        if data is not None:
            templates[path.stem] = data
    integrations: dict[str, Integration] = {}
    files: dict[str, Path] = {}
    for path in sorted((config_dir / "clients").glob("*.yaml")):
        data = _read_yaml(path, problems)
        if data is None:
            continue
        client = data.get("client", path.stem)
        if clients and client not in clients:
            continue
        extra = set(data) - {"client", "identifiers", "integrations", "notify"}
        if extra:
            problems.append(f"{path}: unknown top-level field(s) {sorted(extra)}; allowed: client, identifiers, integrations, notify")
        raw_list = data.get("integrations") or []
        if not isinstance(raw_list, list):
            problems.append(f"{path}: integrations: expected a list")
            continue
        for i, raw in enumerate(raw_list):
            name = raw.get("name", f"#{i + 1}") if isinstance(raw, dict) else f"#{i + 1}"
            where = f"{path}: integration {name!r}"
            if not isinstance(raw, dict):
                problems.append(f"{where}: expected a mapping")
                continue
            raw = dict(raw)
            own_ids = raw.get("identifiers") or {}
            template = raw.pop("extends", None)
            template_ids: Any = {}
            if template is not None:
                if not isinstance(template, str) or template not in templates:
                    problems.append(
                        f"{where}: extends: no template {template!r} in {config_dir / 'templates'}; "
                        f"known: {', '.join(sorted(templates)) or '(none)'}"
                    )
                    continue
                template_ids = templates[template].get("identifiers") or {}
                own_schedule = raw.get("schedule")
                raw = _deep_merge(templates[template], raw)
                if isinstance(own_schedule, dict) and {"interval", "cron"} & set(own_schedule):
                    raw["schedule"] = own_schedule  # replaces the template's: a cron must not inherit its interval
            raw["client"] = client
            if "notify" in data and "notify" not in raw:  # the client's notify is every integration's default
                raw["notify"] = data["notify"]
            # a template's identifiers are defaults: the client's own win, the integration's win over both
            id_layers = [template_ids, data.get("identifiers") or {}, own_ids]
            if all(isinstance(layer, dict) for layer in id_layers):
                raw["identifiers"] = {k: v for layer in id_layers for k, v in layer.items()}
            else:  # let validation name the bad field
                raw["identifiers"] = next(layer for layer in id_layers if not isinstance(layer, dict))
            try:
                integ = Integration.model_validate(raw)
            except ValidationError as exc:
                problems.extend(_pydantic_problems(where, exc))
                continue
            if integ.key in integrations:
                problems.append(f"{where}: name: another integration of client {client!r} has this name; names must be unique")
                continue
            integrations[integ.key] = integ
            files[integ.key] = path
    return Config(config_dir, integrations, files), problems


def check_integration(config: Config, integ: Integration, *, check_blocks: bool = True) -> list[str]:
    """Semantic checks of one integration: placeholders, lookups, blocks, connector options."""
    where = f"{config.files.get(integ.key, config.config_dir)}: integration {integ.name!r}"
    problems: list[str] = []
    known = integ.known_placeholders()
    templates = {"mapping.filename": integ.mapping.filename, "mapping.folder": integ.mapping.folder}
    for fname, spec in integ.mapping.fields.items():
        if isinstance(spec, str):
            templates[f"mapping.fields.{fname}"] = spec
        elif isinstance(spec, dict):
            if "lookup" in spec:
                templates[f"mapping.fields.{fname}.key"] = str(spec.get("key", ""))
            elif "from" in spec and spec["from"] not in known - (set(integ.mapping.fields) - integ.source_fields()):
                problems.append(f"{where}: mapping.fields.{fname}.from: unknown field {spec['from']!r}; declare it in metadata_fields")
            elif not ({"from", "constant", "lookup"} & set(spec)):
                problems.append(f"{where}: mapping.fields.{fname}: use a template string, or one of from / constant / lookup")
    for field, template in templates.items():
        if not template and field != "mapping.folder":
            problems.append(f"{where}: {field}: must not be empty")
            continue
        try:
            names = placeholders(template)
        except ValueError as exc:
            problems.append(f"{where}: {field}: bad template {template!r}: {exc}")
            continue
        for name, spec in names:
            if name not in known:
                problems.append(
                    f"{where}: {field}: unknown placeholder {{{name}}}; known: {', '.join(sorted(known))} "
                    f"(declare extra metadata fields in metadata_fields)"
                )
            elif spec and "%" in spec and name not in DATE_PLACEHOLDERS:
                problems.append(f"{where}: {field}: date format on {{{name}}}, which is not a date")
    for seg in integ.mapping.folder.split("/"):
        if seg in (".", "..") or seg.startswith("~"):
            problems.append(f"{where}: mapping.folder: segment {seg!r} is not allowed (no '.', '..' or '~')")
    if integ.mapping.folder.startswith("/"):
        problems.append(f"{where}: mapping.folder: must be relative to the connection's base folder (remove the leading '/')")
    if "/" in integ.mapping.filename or "\\" in integ.mapping.filename:
        problems.append(f"{where}: mapping.filename: must not contain a folder separator; put folders in mapping.folder")
    for name, table in integ.mapping.lookups.items():
        path = config.lookup_path(table)
        try:
            import pandas as pd

            columns = list(pd.read_csv(path, dtype=str, nrows=0).columns)
        except Exception as exc:  # noqa: BLE001 - any read failure is a config problem
            problems.append(f"{where}: mapping.lookups.{name}.file: cannot read CSV {path}: {exc}")
            continue
        if table.key not in columns:
            problems.append(f"{where}: mapping.lookups.{name}.key: column {table.key!r} not in {path} (columns: {columns})")
        for fname, spec in integ.mapping.fields.items():
            if isinstance(spec, dict) and spec.get("lookup") == name and spec.get("column") not in columns:
                problems.append(f"{where}: mapping.fields.{fname}.column: column {spec.get('column')!r} not in {path} (columns: {columns})")
    for fname, spec in integ.mapping.fields.items():
        if isinstance(spec, dict) and "lookup" in spec and spec["lookup"] not in integ.mapping.lookups:
            problems.append(f"{where}: mapping.fields.{fname}.lookup: no lookup table {spec['lookup']!r} in mapping.lookups")
    problems.extend(_check_mode_and_notify(where, integ))
    if check_blocks:
        problems.extend(_check_blocks(config, where, integ))
    return problems


def _check_mode_and_notify(where: str, integ: Integration) -> list[str]:
    """Certification only on connectors that pass it on; e-mail notification needs recipients and an SMTP block."""
    from tasks.connectors import CONNECTORS, connector_class
    from tasks.connectors.base import Ability, certification_connections
    from tasks.settings import get_settings

    problems = []
    slug = integ.connection.split("/", 1)[0]  # the block type is in the reference: checkable offline
    if integ.mode == "certification" and slug in CONNECTORS and Ability.CERTIFICATION not in connector_class(slug).abilities:
        problems.append(
            f"{where}: mode: connection {integ.connection!r} ({slug}) cannot send in certification mode: its "
            f"destination has no certification flag. Use mode test (the connection's test target) or production, "
            f"or a connection that supports certification ({', '.join(certification_connections())})"
        )
    settings = get_settings()
    if integ.notify.email and not (integ.notify.smtp or settings.notify_smtp):
        problems.append(
            f"{where}: notify.smtp: e-mail recipients need an SMTP connection; set notify.smtp "
            f"(e.g. smtp-connection/ops) or DOCROUTE_NOTIFY_SMTP"
        )
    if integ.notify.smtp and not (integ.notify.email or settings.notify_email_list()):
        problems.append(f"{where}: notify.email: notify.smtp is set but nobody is e-mailed; add notify.email: [ops@example.com]")
    if integ.notify.smtp and not integ.notify.smtp.startswith("smtp-connection/"):
        problems.append(f"{where}: notify.smtp: {integ.notify.smtp!r} is not an SMTP connection; use smtp-connection/<name>")
    return problems


def _check_blocks(config: Config, where: str, integ: Integration) -> list[str]:
    from blocks.base import UnknownBlockError
    from tasks.connectors import connector_class

    problems = []
    for field in ("source", "connection"):
        ref = getattr(integ, field)
        try:
            block = config.block(ref)
        except UnknownBlockError as exc:
            problems.append(f"{where}: {field}: {exc}; create it in the Prefect UI (Blocks) or with docroute demo")
            continue
        if field == "connection":
            try:
                cls = connector_class(block.get_block_type_slug())
                options = cls.options_model.model_validate(integ.connection_options)
                # connector templates (an e-mail subject...) use the same placeholders as file names
                for name in sorted(getattr(options, "placeholders", lambda: set())() - integ.known_placeholders()):
                    problems.append(
                        f"{where}: connection_options: unknown placeholder {{{name}}}; known: {', '.join(sorted(integ.known_placeholders()))}"
                    )
            except LookupError as exc:
                problems.append(f"{where}: connection: {exc}")
            except ValidationError as exc:
                problems.extend(_pydantic_problems(f"{where}: connection_options", exc))
        elif not hasattr(block, "source"):
            problems.append(f"{where}: source: block {ref!r} is not a source")
    if integ.notify.smtp and integ.notify.smtp.startswith("smtp-connection/"):
        try:
            config.block(integ.notify.smtp)
        except UnknownBlockError as exc:
            problems.append(f"{where}: notify.smtp: {exc}; create it in the Prefect UI (Blocks)")
    return problems


def check_overlaps(config: Config) -> list[str]:
    """Two active integrations of one client that would deliver a document twice to the same place."""
    problems = []
    items = [i for i in config.integrations.values() if i.enabled]
    for n, a in enumerate(items):
        for b in items[n + 1:]:
            same_place = (
                a.client == b.client
                and a.connection == b.connection
                and a.mode == b.mode
                and a.mapping.folder == b.mapping.folder
                and a.mapping.filename == b.mapping.filename
            )
            if same_place and a.filters.overlaps(b.filters):
                problems.append(
                    f"{config.files[b.key]}: integrations {a.name!r} and {b.name!r}: filters overlap and both write "
                    f"{a.mapping.folder or '.'}/{a.mapping.filename} on {a.connection}: a document would be delivered "
                    f"twice to the same place; make filters.document_types (or sub_organisations, tags) disjoint "
                    f"or use a different folder"
                )
    return problems


def load_config(
    config_dir: Path | None = None, *, only: str | None = None, check_blocks: bool = True
) -> Config:
    """Read and validate the configuration; raises ConfigError listing every problem.

    `only`: an integration key ("client/name"): validate that client's file only, and that integration fully.
    """
    from tasks.settings import get_settings

    config_dir = Path(config_dir or get_settings().config_dir)
    client = only.split("/")[0] if only else None
    config, problems = parse_config(config_dir, [client] if client else None)
    if only and not problems and only not in config.integrations:
        everything, _ = parse_config(config_dir)  # e.g. a misspelt client: name every known integration
        everything.get(only)  # raises ConfigError naming the known integrations
    for key, integ in config.integrations.items():
        if only is None or key == only:
            problems.extend(check_integration(config, integ, check_blocks=check_blocks))
    problems.extend(check_overlaps(config))
    if problems:
        raise ConfigError(problems)
    return config
