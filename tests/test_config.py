"""Integration configuration: templates, merging and every validation error (no Prefect server needed)."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from deployments.config import ConfigError, load_config, parse_config
from deployments.schema import parse_duration
from tasks.settings import PACKAGE_CONFIG_DIR
from tests.conftest import utc

TEMPLATE = {
    "connection": "local-folder-connection/erp-import",
    "source": "capture-inbox-folder/capture-inbox",
    "filters": {"document_types": ["invoice", "credit_note"], "approved_only": True},
    "mapping": {
        "folder": "{external_id}/{doc_type}/{approved_at:%Y/%m}",
        "filename": "{doc_type}_{number}_{supplier}.{ext}",
        "sidecar": True,
        "sanitize": {"allowed": "A-Za-z0-9._ -", "max_length": 150, "ascii": True},
    },
    "schedule": {"interval": "5m"},
    "lookback": "2d",
}

VENDORS_CSV = "supplier_number,vendor_code,cost_center\nS-1001,V-GLOBEX,CC-100\nS-1002,V-INITECH,CC-200\n"


def integration(name: str = "invoices", **overrides) -> dict:
    spec = {
        "name": name,
        "source": "capture-inbox-folder/inbox",
        "connection": "local-folder-connection/out",
        "activated_at": "2026-01-01T00:00:00Z",
        "mapping": {"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}"},
    }
    spec.update(overrides)
    return spec


class ConfigDir:
    """A throwaway deployments folder: clients/, templates/, lookups/."""

    def __init__(self, root: Path):
        self.root = root
        for sub in ("clients", "templates", "lookups"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "lookups" / "vendors.csv").write_text(VENDORS_CSV)
        self.template("erp-folder", TEMPLATE)

    def template(self, name: str, data: dict) -> Path:
        path = self.root / "templates" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def client(self, client: str, integrations: list[dict], identifiers: dict | None = None, **top) -> Path:
        data = {"client": client, "identifiers": identifiers or {"external_id": "EXT1"}, "integrations": integrations, **top}
        path = self.root / "clients" / f"{client}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def problems(self, **kw) -> list[str]:
        try:
            load_config(self.root, check_blocks=False, **kw)
        except ConfigError as exc:
            assert str(exc).startswith("invalid configuration:")
            assert all(p in str(exc) for p in exc.problems)
            return exc.problems
        return []

    def load(self, **kw):
        return load_config(self.root, check_blocks=False, **kw)


@pytest.fixture
def cfg(tmp_path) -> ConfigDir:
    return ConfigDir(tmp_path / "deployments")


def only_problem(problems: list[str], *needles: str) -> str:
    """Exactly one problem, and it contains every needle."""
    assert len(problems) == 1, problems
    for needle in needles:
        assert needle in problems[0], (needle, problems[0])
    return problems[0]


# -- a valid configuration ----------------------------------------------------------------------


def test_integration_extends_a_template_with_a_deep_merge(cfg):
    cfg.client(
        "acme",
        [
            {
                "name": "invoices-to-erp",
                "extends": "erp-folder",
                "activated_at": "2026-01-01T00:00:00Z",
                "mapping": {"filename": "{number}.{ext}", "sanitize": {"max_length": 80}},
                "filters": {"document_types": ["invoice"]},
                "schedule": {"cron": "*/10 7-19 * * 1-5", "timezone": "Europe/Brussels"},
            },
        ],
    )
    cfg.client("globex", [{"name": "invoices-to-erp", "extends": "erp-folder", "activated_at": "2026-02-01T00:00:00Z"}])
    config = cfg.load()
    acme = config.get("acme/invoices-to-erp")
    # overridden, at any depth
    assert acme.mapping.filename == "{number}.{ext}"
    assert acme.mapping.sanitize.max_length == 80
    assert acme.filters.document_types == ["invoice"]
    assert acme.schedule.cron == "*/10 7-19 * * 1-5" and acme.schedule.interval is None
    assert acme.schedule.timezone == "Europe/Brussels"
    # kept from the template, next to the overridden ones
    assert acme.mapping.folder == TEMPLATE["mapping"]["folder"]
    assert acme.mapping.sidecar is True
    assert acme.mapping.sanitize.allowed == "A-Za-z0-9._ -" and acme.mapping.sanitize.ascii is True
    assert acme.filters.approved_only is True
    assert acme.lookback == timedelta(days=2)
    assert acme.activated_at == utc(2026, 1, 1)
    # a second client extending the same template gets the template untouched by the first one's overrides
    globex = config.get("globex/invoices-to-erp")
    assert globex.mapping.filename == TEMPLATE["mapping"]["filename"]
    assert globex.mapping.sanitize.max_length == 150
    assert globex.filters.document_types == ["invoice", "credit_note"]
    assert globex.schedule.interval == timedelta(minutes=5) and globex.schedule.cron is None
    assert globex.activated_at == utc(2026, 2, 1)
    assert config.files["acme/invoices-to-erp"] == cfg.root / "clients" / "acme.yaml"
    assert config.files["globex/invoices-to-erp"] == cfg.root / "clients" / "globex.yaml"


def test_client_identifiers_merge_with_integration_identifiers(cfg):
    tmpl = copy.deepcopy(TEMPLATE) | {"identifiers": {"company_code": "000", "channel": "erp"}}
    cfg.template("with-ids", tmpl)
    cfg.client(
        "acme",
        [
            integration("plain"),
            integration("own", identifiers={"external_id": "OVERRIDE", "division": "D7"}, mapping={"folder": "{division}", "filename": "{doc_id}.{ext}"}),
            {"name": "templated", "extends": "with-ids", "activated_at": "2026-01-01T00:00:00Z",
             "mapping": {"folder": "{external_id}/{channel}"}},
        ],
        identifiers={"external_id": "ACME001", "company_code": "100"},
    )
    config = cfg.load()
    assert config.get("acme/plain").identifiers == {"external_id": "ACME001", "company_code": "100"}
    assert config.get("acme/own").identifiers == {"external_id": "OVERRIDE", "company_code": "100", "division": "D7"}
    # a template's identifiers are defaults: the client's own values win over them
    assert config.get("acme/templated").identifiers == {"company_code": "100", "channel": "erp", "external_id": "ACME001"}
    # identifiers are placeholders
    assert "division" in config.get("acme/own").known_placeholders()
    assert "division" not in config.get("acme/plain").known_placeholders()


def test_client_name_defaults_to_the_file_name_and_keys_are_client_slash_name(cfg):
    path = cfg.root / "clients" / "initech.yaml"
    path.write_text(yaml.safe_dump({"integrations": [integration("a"), integration("b", enabled=False)]}))
    config = cfg.load()
    assert sorted(config.integrations) == ["initech/a", "initech/b"]
    assert config.get("initech/a").slug == "initech-a"


@pytest.mark.parametrize(
    "text,expected",
    [("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200), ("1w", 604800), ("45", 45), (30, 30), (" 1.5 m ", 90)],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["2 days", "m15", "", "-5m", "1y"])
def test_parse_duration_refuses_garbage(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


# -- each validation error names the file, the integration and the field -----------------------


def test_unknown_top_level_field(cfg):
    path = cfg.client("acme", [integration()], integratons=[])
    only_problem(cfg.problems(), str(path), "unknown top-level field(s) ['integratons']", "allowed: client, identifiers, integrations")


@pytest.mark.parametrize(
    "override,field",
    [
        ({"filers": {"document_types": ["invoice"]}}, "filers"),
        ({"filters": {"document_type": ["invoice"]}}, "filters.document_type"),
        ({"mapping": {"filename": "{doc_id}.{ext}", "sanitise": {"ascii": True}}}, "mapping.sanitise"),
        ({"mapping": {"filename": "{doc_id}.{ext}", "sanitize": {"max_len": 20}}}, "mapping.sanitize.max_len"),
        ({"schedule": {"intervall": "5m"}}, "schedule.intervall"),
    ],
)
def test_unknown_field_is_named_with_its_path(cfg, override, field):
    path = cfg.client("acme", [integration("invoices", **override)])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", f": {field}: unknown field", "check its spelling")


def test_missing_required_field(cfg):
    spec = integration()
    del spec["connection"]
    path = cfg.client("acme", [spec])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "connection: required field is missing")


@pytest.mark.parametrize(
    "mapping,field,name",
    [
        ({"filename": "{doc_id}_{supplier_name}.{ext}"}, "mapping.filename", "supplier_name"),
        ({"folder": "{client}/{external_ref}", "filename": "{doc_id}.{ext}"}, "mapping.folder", "external_ref"),
        ({"fields": {"title": "{number} {vendor}"}}, "mapping.fields.title", "vendor"),
        ({"fields": {"v": {"lookup": "vendors", "key": "{supplier_no}", "column": "vendor_code"}},
          "lookups": {"vendors": {"file": "vendors.csv", "key": "supplier_number"}}}, "mapping.fields.v.key", "supplier_no"),
    ],
)
def test_unknown_placeholder_lists_the_known_ones(cfg, mapping, field, name):
    path = cfg.client("acme", [integration("invoices", mapping=mapping)])
    msg = only_problem(cfg.problems(), str(path), "integration 'invoices'", f"{field}: unknown placeholder {{{name}}}")
    known = msg.split("known: ", 1)[1]
    for placeholder in ("doc_id", "client", "approved_at", "ext", "external_id", "supplier", "number"):
        assert placeholder in known
    assert "metadata_fields" in msg  # the fix


def test_declared_metadata_fields_and_mapped_fields_are_known_placeholders(cfg):
    cfg.client(
        "acme",
        [integration("invoices", metadata_fields=["cost_centre"], mapping={
            "fields": {"vendor": "{supplier}", "amount": {"from": "cost_centre"}, "kind": {"constant": "X"}},
            "folder": "{cost_centre}/{vendor}", "filename": "{kind}_{amount}_{number}.{ext}"})],
    )
    assert cfg.problems() == []


def test_from_an_undeclared_field(cfg):
    path = cfg.client("acme", [integration("invoices", mapping={"fields": {"amount": {"from": "grand_total"}}})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.fields.amount.from", "'grand_total'", "metadata_fields")


def test_field_spec_of_an_unknown_kind(cfg):
    path = cfg.client("acme", [integration("invoices", mapping={"fields": {"amount": {"value": 3}}})])
    only_problem(cfg.problems(), str(path), "mapping.fields.amount", "one of from / constant / lookup")


def test_date_format_on_a_non_date_placeholder(cfg):
    path = cfg.client("acme", [integration("invoices", mapping={"folder": "{number:%Y}", "filename": "{doc_id}.{ext}"})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.folder", "date format on {number}")


def test_date_formats_on_date_placeholders_pass(cfg):
    cfg.client("acme", [integration("invoices", mapping={
        "folder": "{approved_at:%Y/%m}/{issue_date:%Y}/{due_date:%m}", "filename": "{today:%Y%m%d}_{doc_id}.{ext}"})])
    assert cfg.problems() == []


def test_absolute_folder(cfg):
    path = cfg.client("acme", [integration("invoices", mapping={"folder": "/srv/{client}", "filename": "{doc_id}.{ext}"})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.folder", "relative", "remove the leading '/'")


@pytest.mark.parametrize("folder,segment", [("{client}/../{doc_type}", ".."), ("../x", ".."), ("a/./b", "."), ("~/{client}", "~")])
def test_dot_dot_and_tilde_segments_in_the_folder(cfg, folder, segment):
    path = cfg.client("acme", [integration("invoices", mapping={"folder": folder, "filename": "{doc_id}.{ext}"})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", f"mapping.folder: segment {segment!r} is not allowed")


@pytest.mark.parametrize("filename", ["{client}/{doc_id}.{ext}", "{client}\\{doc_id}.{ext}"])
def test_separator_in_the_filename(cfg, filename):
    path = cfg.client("acme", [integration("invoices", mapping={"filename": filename})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.filename", "folder separator", "mapping.folder")


def test_empty_filename(cfg):
    path = cfg.client("acme", [integration("invoices", mapping={"filename": ""})])
    only_problem(cfg.problems(), str(path), "mapping.filename: must not be empty")


def test_broken_template_syntax(cfg):
    path = cfg.client("acme", [integration("invoices", mapping={"filename": "{doc_id.{ext}"})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.filename: bad template")


@pytest.mark.parametrize(
    "schedule,message",
    [
        ({"interval": "5m", "cron": "*/5 * * * *"}, "give exactly one of interval or cron"),
        ({"timezone": "UTC"}, "give exactly one of interval or cron"),
        ({"interval": "10s"}, "interval must be at least 30s"),
        ({"interval": 29}, "interval must be at least 30s"),
        ({"interval": "soon"}, "is not a duration"),
        ({"cron": "every monday"}, "is not a valid cron expression"),
        ({"cron": "61 * * * *"}, "is not a valid cron expression"),
        ({"interval": "15m", "timezone": "Europe/Atlantis"}, "unknown timezone 'Europe/Atlantis'"),
    ],
)
def test_bad_schedule(cfg, schedule, message):
    path = cfg.client("acme", [integration("invoices", schedule=schedule)])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", ": schedule", message)


@pytest.mark.parametrize("schedule", [{"interval": "30s"}, {"interval": "1h"}, {"cron": "0 6 * * 1-5", "timezone": "Europe/Brussels"}])
def test_good_schedules_pass(cfg, schedule):
    cfg.client("acme", [integration("invoices", schedule=schedule)])
    assert cfg.problems() == []


def test_bad_lookback_duration(cfg):
    path = cfg.client("acme", [integration("invoices", lookback="two days")])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", ": lookback", "'two days' is not a duration")


@pytest.mark.parametrize("name", ["Invoices", "invoices_to_erp", "-invoices", "in voices"])
def test_name_must_be_a_slug(cfg, name):
    path = cfg.client("acme", [integration(name)])
    only_problem(cfg.problems(), str(path), f"integration {name!r}", ": name", "lowercase slug")


def test_duplicate_names(cfg):
    path = cfg.client("acme", [integration("invoices"), integration("invoices", mapping={"folder": "other", "filename": "{doc_id}.{ext}"})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "name:", "must be unique")


def test_same_name_in_two_clients_is_fine(cfg):
    cfg.client("acme", [integration("invoices")])
    cfg.client("globex", [integration("invoices")])
    assert sorted(cfg.load().integrations) == ["acme/invoices", "globex/invoices"]


@pytest.mark.parametrize("extends", ["erp-foldr", ["erp-folder"]])
def test_extends_an_unknown_template(cfg, extends):
    path = cfg.client("acme", [{"name": "invoices", "extends": extends, "activated_at": "2026-01-01T00:00:00Z"}])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "extends: no template", "known: erp-folder")


def lookup_integration(**mapping_overrides) -> dict:
    mapping = {
        "fields": {
            "vendor_code": {"lookup": "vendors", "key": "{supplier_number}", "column": "vendor_code"},
            "cost_center": {"lookup": "vendors", "key": "{supplier_number}", "column": "cost_center", "default": "CC-0"},
        },
        "lookups": {"vendors": {"file": "vendors.csv", "key": "supplier_number"}},
        "filename": "{vendor_code}_{number}.{ext}",
    }
    mapping.update(mapping_overrides)
    return integration("invoices", mapping=mapping)


def test_lookups_pass_when_file_and_columns_exist(cfg):
    cfg.client("acme", [lookup_integration()])
    config = cfg.load()
    table = config.get("acme/invoices").mapping.lookups["vendors"]
    assert config.lookup_path(table) == cfg.root / "lookups" / "vendors.csv"


def test_lookup_csv_missing(cfg):
    path = cfg.client("acme", [lookup_integration(lookups={"vendors": {"file": "nope.csv", "key": "supplier_number"}})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.lookups.vendors.file", "cannot read CSV", "nope.csv")


def test_lookup_key_column_missing(cfg):
    path = cfg.client("acme", [lookup_integration(lookups={"vendors": {"file": "vendors.csv", "key": "supplier_no"}})])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.lookups.vendors.key", "'supplier_no'", "vendor_code")


def test_lookup_field_column_missing(cfg):
    integ = lookup_integration()
    integ["mapping"]["fields"]["vendor_code"]["column"] = "vendor_id"
    path = cfg.client("acme", [integ])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.fields.vendor_code.column", "'vendor_id'", "cost_center")


def test_field_uses_an_undefined_lookup_table(cfg):
    integ = lookup_integration()
    integ["mapping"]["fields"]["vendor_code"]["lookup"] = "suppliers"
    path = cfg.client("acme", [integ])
    only_problem(cfg.problems(), str(path), "integration 'invoices'", "mapping.fields.vendor_code.lookup", "no lookup table 'suppliers'")


def test_every_problem_is_reported_at_once(cfg):
    path = cfg.client("acme", [
        integration("one", filers={}),
        integration("two", mapping={"filename": "{nope}.{ext}"}),
        integration("three", schedule={"interval": "1s"}),
    ])
    problems = cfg.problems()
    assert len(problems) == 3, problems
    assert all(str(path) in p for p in problems)
    for name, field in (("one", "filers"), ("two", "{nope}"), ("three", "schedule")):
        assert len([p for p in problems if f"integration '{name}'" in p and field in p]) == 1, (name, problems)


# -- overlapping filters ------------------------------------------------------------------------


def test_overlapping_filters_to_the_same_place_are_refused(cfg):
    path = cfg.client("acme", [
        integration("invoices", filters={"document_types": ["invoice", "credit_note"]}),
        integration("all-docs", filters={"sub_organisations": ["finance"]}),
    ])
    msg = only_problem(cfg.problems(), str(path), "'invoices'", "'all-docs'", "delivered twice", "local-folder-connection/out")
    assert "disjoint" in msg and "different folder" in msg  # the fix


@pytest.mark.parametrize(
    "second",
    [
        {"filters": {"document_types": ["order_confirmation"]}},
        {"filters": {"document_types": ["invoice"], "tags": ["capex"]}, "mapping": {"folder": "{client}/capex", "filename": "{doc_id}.{ext}"}},
        {"mapping": {"folder": "{client}/{doc_type}", "filename": "copy_{doc_id}.{ext}"}},
        {"connection": "local-folder-connection/elsewhere"},
        {"mode": "test"},
        {"enabled": False},
    ],
)
def test_disjoint_filters_or_another_place_pass(cfg, second):
    cfg.client("acme", [
        integration("invoices", filters={"document_types": ["invoice", "credit_note"]}),
        integration("second", **second),
    ])
    assert cfg.problems() == []


def test_disjoint_tags_pass_and_shared_tags_do_not(cfg):
    cfg.client("acme", [integration("a", filters={"tags": ["capex"]}), integration("b", filters={"tags": ["opex"]})])
    assert cfg.problems() == []
    path = cfg.client("acme", [integration("a", filters={"tags": ["capex"]}), integration("b", filters={"tags": ["opex", "capex"]})])
    only_problem(cfg.problems(), str(path), "'a' and 'b'", "delivered twice")


def test_two_clients_may_write_the_same_template_place(cfg):
    cfg.client("acme", [integration("invoices")])
    cfg.client("globex", [integration("invoices")])
    assert cfg.problems() == []


# -- only= ---------------------------------------------------------------------------------------


def test_only_checks_one_client(cfg):
    cfg.client("acme", [integration("invoices"), integration("orders", filters={"document_types": ["order_confirmation"]},
                                                             mapping={"folder": "orders", "filename": "{doc_id}.{ext}"})])
    broken = cfg.client("globex", [integration("invoices", mapping={"filename": "{nope}.{ext}"})])
    assert only_problem(cfg.problems(), str(broken), "{nope}")  # checked as a whole: globex is broken
    config = cfg.load(only="acme/invoices")
    assert sorted(config.integrations) == ["acme/invoices", "acme/orders"]
    assert config.get("acme/invoices").client == "acme"


def test_only_checks_only_the_named_integration_fully(cfg):
    cfg.client("acme", [integration("invoices"), integration("orders", mapping={"folder": "o", "filename": "{nope}.{ext}"})])
    cfg.load(only="acme/invoices")  # the sibling's placeholder problem is not this run's business
    with pytest.raises(ConfigError, match=r"\{nope\}"):
        cfg.load(only="acme/orders")


def test_only_an_unknown_key_lists_the_known_integrations(cfg):
    cfg.client("acme", [integration("invoices"), integration("orders", filters={"document_types": ["order_confirmation"]})])
    cfg.client("globex", [integration("invoices")])
    with pytest.raises(ConfigError) as err:
        cfg.load(only="acme/invoice")
    assert "no integration 'acme/invoice'" in str(err.value)
    assert "acme/invoices" in str(err.value) and "acme/orders" in str(err.value)
    with pytest.raises(ConfigError) as err:  # a misspelt client
        cfg.load(only="acme-corp/invoices")
    assert "no integration 'acme-corp/invoices'" in str(err.value)
    for key in ("acme/invoices", "acme/orders", "globex/invoices"):
        assert key in str(err.value)


def test_unreadable_yaml_is_reported_with_its_file(cfg):
    bad = cfg.root / "clients" / "broken.yaml"
    bad.write_text("client: broken\nintegrations: [\n")
    only_problem(cfg.problems(), str(bad), "cannot read YAML")
    bad.write_text("- just\n- a list\n")
    only_problem(cfg.problems(), str(bad), "expected a mapping at the top level")


# -- the shipped samples ------------------------------------------------------------------------


def test_shipped_sample_configs_parse_and_check_cleanly():
    config, problems = parse_config(PACKAGE_CONFIG_DIR)
    assert problems == []
    config = load_config(PACKAGE_CONFIG_DIR, check_blocks=False)
    assert sorted(config.integrations) == [
        "acme/invoices-to-erp", "acme/orders-to-purchasing", "globex/invoices-to-erp", "hooli/invoices-to-infor",
        "initech/archive-to-s3", "initech/invoices-to-ap-webhook", "initech/invoices-to-mailbox", "initech/invoices-to-partner-sftp",
        "umbrella/gmi-to-erp", "vandelay/invoices-to-peppol",
    ]
    assert [i.key for i in config.integrations.values() if not i.enabled] == [
        "initech/archive-to-s3", "initech/invoices-to-mailbox", "initech/invoices-to-partner-sftp",
    ]
    acme = config.get("acme/invoices-to-erp")
    assert acme.mapping.filename == "{vendor_code}_{number}.{ext}"  # overridden
    assert acme.mapping.sidecar is True and acme.mapping.sanitize.ascii is True  # from the template
    assert acme.identifiers["external_id"] == "ACME001"
    assert set(acme.mapping.lookups) == {"vendors"}
    assert config.lookup_path(acme.mapping.lookups["vendors"]).is_file()
    globex = config.get("globex/invoices-to-erp")
    assert globex.schedule.interval == timedelta(minutes=15)
    assert globex.filters.document_types == ["invoice", "credit_note", "order_confirmation"]
    for key in config.integrations:
        assert load_config(PACKAGE_CONFIG_DIR, only=key, check_blocks=False).get(key).key == key


def test_a_warm_process_parses_a_client_file_once_and_again_when_it_changes(tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "cfg"
    shutil.copytree(PACKAGE_CONFIG_DIR, root)
    parsed: list[str] = []
    real = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda text: parsed.append(text) or real(text))
    files = len(list(root.glob("clients/*.yaml"))) + len(list(root.glob("templates/*.yaml")))
    first, _ = parse_config(root)
    assert len(parsed) == files
    again, _ = parse_config(root)
    assert len(parsed) == files  # nothing changed: nothing parsed again
    assert sorted(again.integrations) == sorted(first.integrations)
    again.get("globex/invoices-to-erp").filters.document_types.append("mutated")  # a caller's change stays its own
    assert "mutated" not in parse_config(root)[0].get("globex/invoices-to-erp").filters.document_types
    globex = root / "clients" / "globex.yaml"
    globex.write_text(globex.read_text().replace("interval: 15m", "interval: 20m"))
    changed, _ = parse_config(root)
    assert len(parsed) == files + 1  # only the changed file
    assert changed.get("globex/invoices-to-erp").schedule.interval == timedelta(minutes=20)
