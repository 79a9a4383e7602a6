"""Mapping: placeholders, mapped fields, sanitising, extra files, the sidecar and preview."""

from __future__ import annotations

import hashlib
import io
import json
import unicodedata
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pytest

from deployments.config import Config
from deployments.schema import Integration
from tasks.connectors.base import Mode
from tasks.documents import Document, DocumentFile
from tasks.mapping import Lookups, MappingError, map_document, preview, sanitize_segment
from tasks.sources.seed import pdf_bytes
from tests.conftest import utc

APPROVED = utc(2026, 3, 5, 10, 30)
VENDORS_CSV = "supplier_number,vendor_code,cost_center\nS-1001,V-GLOBEX,CC-100\n007,V-BOND,CC-700\nS-1002,V-INITECH,CC-200\n"


def content_file(name: str, data: bytes, media_type: str = "application/pdf", opened: list | None = None) -> DocumentFile:
    def opener():
        if opened is not None:
            opened.append(name)
        return io.BytesIO(data)

    return DocumentFile(name=name, media_type=media_type, size=len(data), sha256=hashlib.sha256(data).hexdigest()).with_opener(opener)


def make_doc(doc_id: str = "INV-1001", *, files: list[DocumentFile] | None = None, metadata: dict | None = None, **kw) -> Document:
    base = dict(
        id=doc_id,
        client="acme",
        type="invoice",
        sub_organisation="finance",
        tags=["urgent"],
        status="approved",
        approved_at=APPROVED,
        fields={
            "number": "INV-2026-0042",
            "supplier": "Globex Industrial BV",
            "supplier_number": "S-1001",
            "issue_date": "2025-12-30",
            "total": "121.00",
        }
        if metadata is None
        else metadata,
        files=files if files is not None else [content_file(f"{doc_id}.pdf", pdf_bytes(doc_id))],
        version="v1",
    )
    base.update(kw)
    return Document(**base)


def make_integ(mapping: dict | None = None, **kw) -> Integration:
    spec = dict(
        name="invoices",
        client="acme",
        source="capture-inbox-folder/inbox",
        connection="local-folder-connection/out",
        activated_at="2026-01-01T00:00:00Z",
        identifiers={"external_id": "ACME001", "company_code": "100"},
        mapping=mapping or {},
    )
    spec.update(kw)
    return Integration.model_validate(spec)


@pytest.fixture
def config_dir(tmp_path) -> Path:
    (tmp_path / "lookups").mkdir()
    (tmp_path / "lookups" / "vendors.csv").write_text(VENDORS_CSV)
    return tmp_path


def mapped(doc: Document, integ: Integration, config_dir: Path, mode: Mode | None = None):
    config = Config(config_dir, {integ.key: integ}, {})
    return map_document(doc, integ, Lookups(config, integ), mode)


def paths(package) -> list[str]:
    return [package.path_of(f) for f in package.files]


# -- placeholders ---------------------------------------------------------------------------------


def test_every_placeholder_kind(config_dir):
    integ = make_integ({
        "folder": "{client}/{doc_type}/{sub_org}/{external_id}/{approved_at:%Y/%m}/{year}-{month}-{day}/{issue_date:%Y}",
        "filename": "{doc_id}_{number}_{supplier}_{company_code}_{approved_at}.{ext}",
    })
    package = mapped(make_doc(), integ, config_dir)
    assert package.folder == "acme/invoice/finance/ACME001/2026/03/2026-03-05/2025"
    assert package.files[0].name == "INV-1001_INV-2026-0042_Globex Industrial BV_100_2026-03-05.pdf"
    assert paths(package) == ["acme/invoice/finance/ACME001/2026/03/2026-03-05/2025/" + package.files[0].name]


def test_date_format_makes_two_folder_levels_and_other_builtins(config_dir):
    integ = make_integ({"folder": "{approved_at:%Y/%m/%d}", "filename": "{integration}_{version}_{original_name}_{today:%Y}.{ext}"})
    doc = make_doc(files=[content_file("Scan 0001.PDF", pdf_bytes("x"))], approved_at=utc(2025, 11, 2, 23, 59))
    package = mapped(doc, integ, config_dir)
    assert package.folder.split("/") == ["2025", "11", "02"]
    assert package.files[0].name == f"invoices_v1_Scan 0001_{datetime.now(timezone.utc):%Y}.pdf"  # ext lowercased


def test_issue_date_formats_from_an_iso_string_and_a_non_date_is_an_error(config_dir):
    integ = make_integ({"folder": "{issue_date:%Y}/{issue_date:%m}", "filename": "{doc_id}.{ext}"})
    assert mapped(make_doc(), integ, config_dir).folder == "2025/12"
    bad = make_doc(metadata={"issue_date": "30/12/2025"})
    with pytest.raises(MappingError, match=r"INV-1001: \{issue_date\} = '30/12/2025' is not a date"):
        mapped(bad, integ, config_dir)


@pytest.mark.parametrize("value", [None, ""])
def test_missing_metadata_field_in_filename_names_document_and_placeholder(config_dir, value):
    integ = make_integ({"filename": "{po_number}_{doc_id}.{ext}"})
    metadata = {"number": "N1"} if value is None else {"number": "N1", "po_number": value}
    with pytest.raises(MappingError) as err:
        mapped(make_doc("INV-77", metadata=metadata), integ, config_dir)
    assert "document INV-77" in str(err.value) and "{po_number}" in str(err.value) and "mapping.filename" in str(err.value)


def test_missing_sub_org_in_folder_is_an_error_not_an_empty_segment(config_dir):
    integ = make_integ({"folder": "{sub_org}/x", "filename": "{doc_id}.{ext}"})
    with pytest.raises(MappingError, match=r"INV-1001.*mapping.folder uses \{sub_org\}"):
        mapped(make_doc(sub_organisation=None), integ, config_dir)


# -- mapped fields --------------------------------------------------------------------------------

FIELDS = {
    "invoice_number": "{number}",
    "title": "{supplier} / {number} ({approved_at:%d.%m.%Y})",
    "amount": {"from": "total"},
    "currency": {"constant": "EUR"},
    "vendor_code": {"lookup": "vendors", "key": "{supplier_number}", "column": "vendor_code"},
    "cost_center": {"lookup": "vendors", "key": "{supplier_number}", "column": "cost_center", "default": "CC-000"},
}
LOOKUPS = {"vendors": {"file": "vendors.csv", "key": "supplier_number"}}


def test_mapped_fields_of_every_kind(config_dir):
    integ = make_integ({"fields": FIELDS, "lookups": LOOKUPS, "filename": "{vendor_code}_{invoice_number}.{ext}"})
    package = mapped(make_doc(), integ, config_dir)
    assert package.fields == {
        "invoice_number": "INV-2026-0042",
        "title": "Globex Industrial BV / INV-2026-0042 (05.03.2026)",  # text fields are not path-sanitised
        "amount": "121.00",
        "currency": "EUR",
        "vendor_code": "V-GLOBEX",
        "cost_center": "CC-100",
    }
    assert package.files[0].name == "V-GLOBEX_INV-2026-0042.pdf"  # mapped fields usable in names


def test_lookup_keys_keep_leading_zeros(config_dir):
    integ = make_integ({"fields": FIELDS, "lookups": LOOKUPS})
    package = mapped(make_doc(metadata={"number": "1", "supplier": "B", "supplier_number": "007", "total": "1"}), integ, config_dir)
    assert (package.fields["vendor_code"], package.fields["cost_center"]) == ("V-BOND", "CC-700")


def test_lookup_miss_uses_the_default_or_names_document_table_and_key(config_dir):
    fields = {k: v for k, v in FIELDS.items() if k != "vendor_code"}
    integ = make_integ({"fields": fields, "lookups": LOOKUPS})
    doc = make_doc("INV-9", metadata={"number": "9", "supplier": "Nobody", "supplier_number": "S-9999", "total": "1"})
    assert mapped(doc, integ, config_dir).fields["cost_center"] == "CC-000"
    integ = make_integ({"fields": FIELDS, "lookups": LOOKUPS})
    with pytest.raises(MappingError) as err:
        mapped(doc, integ, config_dir)
    msg = str(err.value)
    assert "document INV-9" in msg and "'vendors'" in msg and "'S-9999'" in msg and "mapping.fields.vendor_code" in msg
    assert str(config_dir / "lookups" / "vendors.csv") in msg


def test_package_fields_fall_back_to_metadata_and_mode(config_dir):
    doc = make_doc()
    package = mapped(doc, make_integ(), config_dir)
    assert package.fields == doc.fields
    assert package.mode is Mode.PRODUCTION
    assert mapped(doc, make_integ(mode="dry-run"), config_dir).mode is Mode.PRODUCTION
    assert mapped(doc, make_integ(mode="test"), config_dir).mode is Mode.TEST
    assert mapped(doc, make_integ(), config_dir, Mode.CERTIFICATION).mode is Mode.CERTIFICATION
    assert (package.doc_id, package.version, package.client, package.integration) == ("INV-1001", "v1", "acme", "acme/invoices")


# -- sanitising ------------------------------------------------------------------------------------

EVIL = [
    "../../etc/passwd",
    "a/b\\c",
    "..",
    "...",
    ".",
    "/abs/olute",
    "\\\\server\\share\\..\\x",
    "x\x00y\n\r\t\x1b\x7f\x85\x9fz",
    ".hidden",
    " . ",
    "..\\..\\windows",
    "\uff0e\uff0e\uff0fetc",  # fullwidth '..' and '/': NFKD turns them into real ones
    "\u2025/x",
]
ALL_PLACEHOLDERS = {
    "folder": "{client}/{doc_type}/{sub_org}/{external_id}/{supplier}/{doc_id}/{version}/{original_name}/{number}",
    "filename": "{number}_{supplier}_{original_name}_{doc_id}.{ext}",
}


def evil_doc(value: str, main_name: str) -> Document:
    return make_doc(
        value,
        client=value,
        type=value,
        sub_organisation=value,
        version=value,
        metadata={"number": value, "supplier": value},
        files=[content_file(main_name, pdf_bytes("x")), content_file(value, b"<xml/>", "application/xml")],
    )


def assert_safe(package, base: Path, folder_levels: int) -> None:
    segments = package.folder.split("/")
    assert len(segments) == folder_levels, package.folder  # a value never adds or removes a level
    for p in paths(package):
        assert not p.startswith("/") and "\\" not in p
        parts = PurePosixPath(p).parts
        assert len(parts) == folder_levels + 1, p
        for seg in parts:
            assert seg not in ("", ".", "..") and ".." not in seg and not seg.startswith((".", " ")), p
            assert not any(unicodedata.category(c) == "Cc" for c in seg), p
        resolved = (base / p).resolve()
        assert resolved.is_relative_to(base.resolve()), p
    for f in package.files:
        assert "/" not in f.name and "\\" not in f.name


@pytest.mark.parametrize("ascii_only", [False, True], ids=["unicode", "ascii"])
@pytest.mark.parametrize("value", EVIL)
def test_no_placeholder_value_escapes_the_folder(config_dir, value, ascii_only):
    integ = make_integ(dict(ALL_PLACEHOLDERS, sidecar=True, sanitize={"ascii": ascii_only}), identifiers={"external_id": value})
    for main_name in (f"{value}.pdf", f"scan.{value}"):
        if main_name.endswith("."):  # no extension at all: a clear error, not an empty name part
            with pytest.raises(MappingError, match=r"uses \{ext\}, which this document does not have"):
                mapped(evil_doc(value, main_name), integ, config_dir)
            continue
        package = mapped(evil_doc(value, main_name), integ, config_dir)
        assert_safe(package, config_dir / "out" / "base", 9)


def test_date_format_parts_cannot_escape_either(config_dir):
    integ = make_integ({"folder": "{approved_at:%Y/../%m/.%d}", "filename": "{doc_id}.{ext}"})
    assert mapped(make_doc(), integ, config_dir).folder == "2026/03/05"


def test_a_template_literal_dot_dot_is_refused_at_render_time(config_dir):
    integ = make_integ({"folder": "{client}/{doc_type}/..", "filename": "{doc_id}.{ext}"})
    with pytest.raises(MappingError, match=r"INV-1001: mapping.folder renders to an unsafe path segment '\.\.'"):
        mapped(make_doc(), integ, config_dir)


def test_sanitize_segment_rules():
    from deployments.schema import Sanitize

    assert sanitize_segment("../../etc/passwd", Sanitize()) == "_._etc_passwd"
    assert sanitize_segment("..", Sanitize()) == ""
    assert sanitize_segment("a\tb\x00c\x85d", Sanitize()) == "abcd"
    assert sanitize_segment("a/b\\c", Sanitize(replacement="-")) == "a-b-c"
    assert sanitize_segment("  .hidden. ", Sanitize()) == "hidden"


def test_allowed_character_class_and_ascii_transliteration(config_dir):
    supplier = "Société Générale d'Électricité SA & Co"
    doc = make_doc(metadata={"number": "№1", "supplier": supplier})
    basware = {"allowed": "A-Za-z0-9._ -"}
    name = mapped(doc, make_integ({"filename": "{supplier}_{number}.{ext}", "sanitize": {**basware, "ascii": True}}), config_dir).files[0].name
    assert name == "Societe Generale d_Electricite SA _ Co_No1.pdf"
    name = mapped(doc, make_integ({"filename": "{supplier}.{ext}", "sanitize": basware}), config_dir).files[0].name
    assert name == "Soci_t_ G_n_rale d__lectricit_ SA _ Co.pdf"
    name = mapped(doc, make_integ({"filename": "{supplier}.{ext}", "sanitize": {"ascii": True}}), config_dir).files[0].name
    assert name == "Societe Generale d'Electricite SA & Co.pdf"
    ascii_doc = make_doc(metadata={"supplier": "Société Générale"})
    name = mapped(ascii_doc, make_integ({"filename": "{supplier}.{ext}", "sanitize": {"ascii": True}}), config_dir).files[0].name
    assert name == "Societe Generale.pdf"


def test_non_ascii_names_are_kept_in_nfc_when_ascii_is_off(config_dir):
    decomposed = unicodedata.normalize("NFD", "Société Générale Ærø Łódź")
    assert decomposed != unicodedata.normalize("NFC", decomposed)
    package = mapped(make_doc(metadata={"supplier": decomposed}), make_integ({"folder": "{supplier}", "filename": "{supplier}.{ext}"}), config_dir)
    assert package.folder == "Société Générale Ærø Łódź"
    assert package.files[0].name == "Société Générale Ærø Łódź.pdf"
    assert unicodedata.is_normalized("NFC", package.folder)


@pytest.mark.parametrize("max_length", [8, 40, 150])
def test_max_length_truncation_keeps_the_extension(config_dir, max_length):
    supplier = "Very Long Supplier Name Industries International Holding " * 10
    doc = make_doc(metadata={"number": "INV-1", "supplier": supplier},
                   files=[content_file("a.pdf", pdf_bytes("a")), content_file("a.xml", b"<x/>", "application/xml")])
    integ = make_integ({"folder": "{supplier}/{number}", "filename": "{supplier}_{number}.{ext}", "sidecar": True,
                        "sanitize": {"max_length": max_length}})
    package = mapped(doc, integ, config_dir)
    assert [f.name.rsplit(".", 1)[1] for f in package.files] == ["pdf", "xml", "json"]
    for f in package.files:
        assert len(f.name) <= max_length, f.name
        assert not f.name.rsplit(".", 1)[0].endswith((" ", ".")), f.name
    stems = {f.name.rsplit(".", 1)[0] for f in package.files}
    assert len(stems) == 1  # extra files and sidecar still follow the (shortened) main name
    assert stems.pop() == supplier[: max_length - 1 - len("json")].rstrip(" .")
    assert all(len(seg) <= max_length for seg in package.folder.split("/"))
    assert package.folder.split("/")[1] == "INV-1"


def test_very_long_supplier_names_fit_the_default_length(config_dir):
    supplier = "Ü" * 1000
    package = mapped(make_doc(metadata={"number": "1", "supplier": supplier}), make_integ({"filename": "{supplier}.{ext}"}), config_dir)
    # 146 characters would be 296 bytes: more than a file system takes in one name (255 bytes, and
    # the connectors' temp names are 18 longer): names stop at 200 bytes
    assert package.files[0].name == "Ü" * 98 + ".pdf"
    assert len(package.files[0].name.encode()) <= 200


# -- extra files, sidecar and order ----------------------------------------------------------------


def test_extra_files_are_named_after_the_main_files_stem(config_dir):
    pdf, xml = pdf_bytes("INV-1001"), b"<Invoice><ID>INV-1001</ID></Invoice>"
    doc = make_doc(files=[content_file("scan_8812.pdf", pdf), content_file("ubl-export.XML", xml, "application/xml")])
    package = mapped(doc, make_integ({"filename": "{number}.{ext}"}), config_dir)
    assert [(f.name, f.role) for f in package.files] == [("INV-2026-0042.pdf", "document"), ("INV-2026-0042.xml", "attachment")]
    assert package.files[1].open().read() == xml and package.files[0].open().read() == pdf
    assert (package.files[1].sha256, package.files[1].size) == (hashlib.sha256(xml).hexdigest(), len(xml))


def test_colliding_extra_files_get_their_own_names(config_dir):
    doc = make_doc(files=[
        content_file("main.pdf", pdf_bytes("m")),
        content_file("ubl.xml", b"<a/>", "application/xml"),
        content_file("cii.xml", b"<b/>", "application/xml"),
        content_file("annex.pdf", pdf_bytes("annex")),
        content_file("meta.json", b"{}", "application/json"),
        content_file("README", b"readme", "text/plain"),
    ])
    package = mapped(doc, make_integ({"filename": "{number}.{ext}", "sidecar": True}), config_dir)
    names = [f.name for f in package.files]
    assert names == [
        "INV-2026-0042.pdf",
        "INV-2026-0042.xml",
        "INV-2026-0042_cii.xml",
        "INV-2026-0042_annex.pdf",
        "INV-2026-0042_meta.json",  # the sidecar keeps <stem>.json
        "INV-2026-0042_README",
        "INV-2026-0042.json",
    ]
    assert len(set(names)) == len(names)
    assert package.files[2].open().read() == b"<b/>"


def test_extra_file_names_from_a_source_are_sanitised(config_dir):
    doc = make_doc(files=[content_file("main.pdf", pdf_bytes("m")), content_file("../../evil", b"x", "text/plain"),
                          content_file("x.xml/../../../y", b"y", "text/plain")])
    package = mapped(doc, make_integ({"folder": "{client}", "filename": "{doc_id}.{ext}"}), config_dir)
    for f in package.files:
        assert "/" not in f.name and "\\" not in f.name and ".." not in f.name, f.name
        assert f.name.startswith("INV-1001")


def test_sidecar_is_last_with_correct_hash_size_and_content(config_dir):
    xml = b"<Invoice/>"
    doc = make_doc(files=[content_file("INV-1001.pdf", pdf_bytes("INV-1001")), content_file("INV-1001.xml", xml, "application/xml")])
    integ = make_integ({"fields": {"invoice_number": "{number}", "currency": {"constant": "EUR"}},
                        "folder": "{external_id}", "filename": "{number}.{ext}", "sidecar": True})
    package = mapped(doc, integ, config_dir)
    assert [f.role for f in package.files] == ["document", "attachment", "sidecar"]
    sidecar = package.files[-1]
    assert sidecar.name == "INV-2026-0042.json" and sidecar.media_type == "application/json"
    body = sidecar.open().read()
    assert sidecar.open().read() == body  # a fresh stream each time
    assert (sidecar.size, sidecar.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    content = json.loads(body)
    assert content["doc_id"] == "INV-1001" and content["version"] == "v1" and content["client"] == "acme"
    assert content["document_type"] == "invoice" and content["sub_organisation"] == "finance" and content["tags"] == ["urgent"]
    assert datetime.fromisoformat(content["approved_at"]) == APPROVED
    assert content["fields"] == {"invoice_number": "INV-2026-0042", "currency": "EUR"}
    assert content["files"] == [
        {"name": f.name, "media_type": f.media_type, "size": f.size, "sha256": f.sha256} for f in doc.files
    ]
    assert paths(package) == ["ACME001/INV-2026-0042.pdf", "ACME001/INV-2026-0042.xml", "ACME001/INV-2026-0042.json"]


def test_sidecar_without_mapped_fields_carries_the_metadata_and_keeps_unicode(config_dir):
    doc = make_doc(metadata={"number": "1", "supplier": "Société"})
    body = mapped(doc, make_integ({"sidecar": True}), config_dir).files[-1].open().read()
    assert "Société".encode() in body
    assert json.loads(body)["fields"] == {"number": "1", "supplier": "Société"}


def test_no_sidecar_unless_asked(config_dir):
    package = mapped(make_doc(), make_integ(), config_dir)
    assert [f.role for f in package.files] == ["document"]
    assert package.files[0].name == "INV-1001.pdf" and package.folder == ""
    assert paths(package) == ["INV-1001.pdf"]


def test_a_document_without_files_cannot_be_mapped(config_dir):
    with pytest.raises(MappingError, match="INV-1001: has no files"):
        mapped(make_doc(files=[]), make_integ(), config_dir)


def test_preview_returns_paths_without_delivering_or_reading(config_dir):
    opened: list[str] = []
    doc = make_doc(files=[content_file("INV-1001.pdf", pdf_bytes("p"), opened=opened),
                          content_file("INV-1001.xml", b"<x/>", "application/xml", opened=opened)])
    integ = make_integ({"fields": FIELDS, "lookups": LOOKUPS, "folder": "{external_id}/{approved_at:%Y/%m}",
                        "filename": "{vendor_code}_{number}.{ext}", "sidecar": True})
    lookups = Lookups(Config(config_dir, {integ.key: integ}, {}), integ)
    out = preview(doc, integ, lookups)
    assert out["doc_id"] == "INV-1001" and out["integration"] == "acme/invoices" and out["connection"] == "local-folder-connection/out"
    assert [(f["path"], f["role"]) for f in out["files"]] == [
        ("ACME001/2026/03/V-GLOBEX_INV-2026-0042.pdf", "document"),
        ("ACME001/2026/03/V-GLOBEX_INV-2026-0042.xml", "attachment"),
        ("ACME001/2026/03/V-GLOBEX_INV-2026-0042.json", "sidecar"),
    ]
    assert out["files"][0]["size"] == doc.files[0].size
    assert out["fields"]["vendor_code"] == "V-GLOBEX"
    assert opened == []  # nothing was read, let alone sent
    assert not (config_dir / "out").exists() and sorted(p.name for p in config_dir.iterdir()) == ["lookups"]


# -- spoofing characters (names that display as something else) --------------------------------------

SPOOFING = {
    "bidirectional override": ("invoice\u202efdp.exe", "invoicefdp.exe"),  # displays as "invoiceexe.pdf"
    "bidirectional isolates and marks": ("a\u2066b\u2067c\u2068d\u2069e\u200ef\u200fg\u061c", "abcdefg"),
    "zero-width characters": ("Glo\u200bbex\u200c \u200dBV\u2060\ufeff", "Globex BV"),
    "soft hyphen and separators": ("in\u00advoice\u2028x\u2029y", "invoicexy"),
    "fullwidth look-alikes": ("\uff0e\uff0e\uff0fetc\uff0fpasswd", "_etc_passwd"),  # "../etc/passwd": no dots, no slashes
    "fullwidth letters and digits": ("\uff21\uff23\uff2d\uff25\uff11", "ACME1"),
}


@pytest.mark.parametrize("value,expected", list(SPOOFING.values()), ids=list(SPOOFING))
def test_spoofing_characters_never_reach_a_file_or_folder_name(config_dir, value, expected):
    doc = make_doc(metadata={"number": "INV-1", "supplier": value})
    package = mapped(doc, make_integ({"folder": "{client}/{supplier}", "filename": "{supplier}_{number}.{ext}"}), config_dir)
    assert package.folder == f"acme/{expected}"
    assert package.main.name == f"{expected}_INV-1.pdf"
    for text in (package.folder, package.main.name):
        assert not any(unicodedata.category(c) in ("Cf", "Zl", "Zp") for c in text), text
        assert all(unicodedata.normalize("NFKC", c) == c for c in text), text  # no look-alike left
