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

import copy
import threading
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from deployments.checks import check_integration, check_overlaps
from deployments.schema import Integration, LookupTable, pydantic_problems
from tasks import registry
from tasks.settings import get_settings


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


# Parsed YAML files by path, with the stat they were parsed at. A warm process (the docroute worker)
# reads the configuration on every run; parsing a hundred client files each time was most of an idle
# poll's CPU. A file is parsed again as soon as it changes (mtime, ctime, size or inode).
_PARSED: dict[Path, tuple[tuple[int, int, int, int], Any]] = {}
_PARSED_LOCK = threading.Lock()


def _read_yaml(path: Path, problems: list[str]) -> dict | None:
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        with _PARSED_LOCK:
            cached = _PARSED.get(path)
        if cached is not None and cached[0] == stamp:
            data = copy.deepcopy(cached[1])  # callers merge templates into what they get
        else:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            with _PARSED_LOCK:
                _PARSED[path] = (stamp, copy.deepcopy(data))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read YAML: {exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping at the top level")
        return None
    return data


class Config:
    """All integrations of all clients, validated."""

    def __init__(self, config_dir: Path, integrations: dict[str, Integration], files: dict[str, Path]):
        self.config_dir = config_dir
        self.integrations = integrations
        self.files = files  # integration key -> client file
        self.blocks: dict[str, Any] = {}  # block reference -> block loaded while checking
        self.bad_clients: set[str] = set()  # clients whose file or integrations have problems
        self.problems: list[str] = []  # what load_config(partial=True) left out, and why

    def block(self, ref: str) -> Any:
        """A source or connection block, loaded once per configuration."""
        if ref not in self.blocks:
            self.blocks[ref] = registry.load_block(ref)
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
    """Read client files and templates; returns the config and the problems found so far.

    `clients`: read only these clients' files. A file that cannot be read at all is taken to be the
    client its name says (clients/<client>.yaml), and a template that cannot be read concerns only
    the integrations that extend it: one client's broken file never stops the others'."""
    problems: list[str] = []
    bad: set[str] = set()
    templates: dict[str, dict] = {}
    broken_templates: dict[str, str] = {}
    for path in sorted((config_dir / "templates").glob("*.yaml")):
        found: list[str] = []
        data = _read_yaml(path, found)
        if data is not None:
            templates[path.stem] = data
        else:
            broken_templates[path.stem] = found[0]
            if not clients:  # `docroute validate` of everything names every problem
                problems.extend(found)
    integrations: dict[str, Integration] = {}
    files: dict[str, Path] = {}
    for path in sorted((config_dir / "clients").glob("*.yaml")):
        found = []
        data = _read_yaml(path, found)
        if data is None:
            if not clients or path.stem in clients:
                problems.extend(found)
                bad.add(path.stem)
            continue
        client = data.get("client", path.stem)
        if clients and client not in clients:
            continue
        before = len(problems)
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
                if isinstance(template, str) and template in broken_templates:
                    problems.append(f"{where}: extends: template {template!r} cannot be read: {broken_templates[template]}")
                    continue
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
                problems.extend(pydantic_problems(where, exc))
                continue
            if integ.key in integrations:
                problems.append(f"{where}: name: another integration of client {client!r} has this name; names must be unique")
                continue
            integrations[integ.key] = integ
            files[integ.key] = path
        if len(problems) > before:
            bad.add(client)
    config = Config(config_dir, integrations, files)
    config.bad_clients = bad
    return config, problems


def load_config(
    config_dir: Path | None = None, *, only: str | None = None, check_blocks: bool = True, partial: bool = False
) -> Config:
    """Read and validate the configuration; raises ConfigError listing every problem.

    `only`: an integration key ("client/name"): read that client's file only, and check that
    integration fully. `partial`: instead of raising, leave out the clients that have problems (their
    file or any of their integrations) and list the problems in `config.problems`: what a deploy or a
    serving process does, so one client's broken file stops only that client.
    """
    config_dir = Path(config_dir or get_settings().config_dir)
    client = only.split("/")[0] if only else None
    config, problems = parse_config(config_dir, [client] if client else None)
    if only and not problems and only not in config.integrations:
        everything, _ = parse_config(config_dir)  # e.g. a misspelt client: name every known integration
        everything.get(only)  # raises ConfigError naming the known integrations
    for key, integ in config.integrations.items():
        if only is None or key == only:
            found = check_integration(config, integ, check_blocks=check_blocks)
            if found:
                problems.extend(found)
                config.bad_clients.add(integ.client)
    for owner, problem in check_overlaps(config):
        problems.append(problem)
        config.bad_clients.add(owner)
    if problems and not partial:
        raise ConfigError(problems)
    config.problems = problems
    for key in [k for k, i in config.integrations.items() if i.client in config.bad_clients]:
        del config.integrations[key]
    return config
