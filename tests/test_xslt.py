"""XSLT on a package's XML files (mapping.xslt), on any connector: XSLT 1.0 through lxml, 2.0 and 3.0
through saxonche, chosen by the stylesheet's version; a stylesheet that does not compile fails validation
and the run before any document, one that fails on a document fails that document only, named; preview
shows the transformed output."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from deployments.config import Config, ConfigError, load_config
from flows.cli import main as cli
from flows.sync import sync
from tasks.mapping import Lookups, MappingError, map_document
from tasks.sources.seed import write_document
from tasks.xslt import LxmlStylesheet, SaxonStylesheet, XsltError, compile_stylesheet
from tests.test_mapping import content_file, make_doc, make_integ

UBL = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
# XSLT 1.0: UBL <Invoice><ID> -> <ErpInvoice number=".." supplier="$supplier"/>
TO_ERP_1 = f"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:u="{UBL}" exclude-result-prefixes="u">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:param name="supplier" select="'?'"/>
  <xsl:template match="/u:Invoice"><ErpInvoice number="{{u:ID}}" supplier="{{$supplier}}" engine="{{system-property('xsl:vendor')}}"/></xsl:template>
</xsl:stylesheet>"""
# XSLT 2.0 only: upper-case(), xsl:function, format-number of a sequence sum; libxslt cannot compile it
TO_ERP_2 = f"""<xsl:stylesheet version="2.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:u="{UBL}"
    xmlns:f="urn:docroute:f" exclude-result-prefixes="f u">
  <xsl:function name="f:shout"><xsl:param name="s"/><xsl:sequence select="upper-case($s)"/></xsl:function>
  <xsl:template match="/u:Invoice">
    <xsl:if test="u:ID = 'BROKEN'"><xsl:message terminate="yes">invoice <xsl:value-of select="u:ID"/> has no lines</xsl:message></xsl:if>
    <ErpInvoice number="{{f:shout(u:ID)}}" product="{{system-property('xsl:product-name')}}"/>
  </xsl:template>
</xsl:stylesheet>"""
TO_ERP_3 = """<xsl:stylesheet version="3.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:mode on-no-match="shallow-copy"/>
  <xsl:template match="*:ID"><xsl:copy><xsl:attribute name="checked" select="string-join(('yes', string(.)), '-')"/><xsl:apply-templates/></xsl:copy></xsl:template>
</xsl:stylesheet>"""
BROKEN = """<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/"><xsl:value-of select="concat(("/></xsl:template>
</xsl:stylesheet>"""


def ubl(doc_id: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><Invoice xmlns="{UBL}"><ID>{doc_id}</ID></Invoice>'.encode()


def doc_with_xml(doc_id: str):
    from tasks.sources.seed import pdf_bytes

    return make_doc(doc_id, files=[content_file(f"{doc_id}.pdf", pdf_bytes(doc_id)),
                                   content_file(f"{doc_id}.xml", ubl(doc_id), "application/xml")])


def mapped(tmp_path, doc, **mapping):
    integ = make_integ(mapping)
    config = Config(tmp_path, {integ.key: integ}, {})
    return map_document(doc, integ, Lookups(config, integ))


@pytest.fixture
def sheets(tmp_path):
    folder = tmp_path / "xslt"
    folder.mkdir()
    for name, text in {"erp1.xsl": TO_ERP_1, "erp2.xsl": TO_ERP_2, "erp3.xsl": TO_ERP_3, "broken.xsl": BROKEN}.items():
        (folder / name).write_text(text)
    return folder


def test_xslt_1_0_runs_on_lxml_with_parameters_from_the_document(tmp_path, sheets):
    assert isinstance(compile_stylesheet(sheets / "erp1.xsl"), LxmlStylesheet)
    package = mapped(tmp_path, doc_with_xml("INV-1"), xslt=[{"stylesheet": "erp1.xsl", "params": {"supplier": "{supplier_number}"}}])
    pdf, xml = package.files
    assert pdf.open().read().startswith(b"%PDF")  # only the XML files are transformed
    out = xml.open().read()
    assert b'<ErpInvoice number="INV-1" supplier="S-1001" engine="libxslt"/>' in out
    assert xml.size == len(out)  # what connectors verify while sending


def test_xslt_2_0_and_3_0_run_on_saxon(tmp_path, sheets):
    assert isinstance(compile_stylesheet(sheets / "erp2.xsl"), SaxonStylesheet)
    with pytest.raises(XsltError):  # libxslt cannot run it: the version picks the engine, not a fallback
        LxmlStylesheet(sheets / "erp2.xsl", "2.0").transform(ubl("inv-2"))
    package = mapped(tmp_path, doc_with_xml("inv-2"), xslt="erp2.xsl")
    assert b'<ErpInvoice number="INV-2" product="SAXON"/>' in package.files[1].open().read()
    assert b'<ID checked="yes-INV-3">INV-3</ID>' in mapped(tmp_path, doc_with_xml("INV-3"), xslt="erp3.xsl").files[1].open().read()
    package = mapped(tmp_path, doc_with_xml("INV-3"), xslt=["erp3.xsl", "erp1.xsl"])  # steps run in order, each on the last's output
    assert b'<ErpInvoice number="INV-3" supplier="?" engine="libxslt"/>' in package.files[1].open().read()
    assert package.files[1].stylesheets == ("erp3.xsl", "erp1.xsl")


def test_a_stylesheet_failing_on_one_document_names_the_integration_the_stylesheet_and_the_document(tmp_path, sheets):
    mapped(tmp_path, doc_with_xml("INV-OK"), xslt="erp2.xsl")
    with pytest.raises(MappingError) as info:
        mapped(tmp_path, doc_with_xml("BROKEN"), xslt="erp2.xsl")
    text = str(info.value)
    assert "integration 'acme/invoices'" in text and "erp2.xsl (XSLT 2.0, Saxon)" in text
    assert "document BROKEN, file BROKEN.xml" in text and "invoice BROKEN has no lines" in text
    bad_xml = make_doc("INV-9", files=[content_file("INV-9.pdf", b"%PDF-1.4"), content_file("INV-9.xml", b"<Invoice>", "application/xml")])
    with pytest.raises(MappingError, match=r"document INV-9, file INV-9.xml is not well-formed XML"):
        mapped(tmp_path, bad_xml, xslt="erp1.xsl")


def test_a_stylesheet_that_does_not_compile_is_a_configuration_error(tmp_path, sheets):
    with pytest.raises(ConfigError) as info:
        mapped(tmp_path, doc_with_xml("INV-1"), xslt="broken.xsl")
    assert "integration 'acme/invoices': mapping.xslt[0].stylesheet: stylesheet" in str(info.value)
    assert "broken.xsl (XSLT 1.0, lxml) does not compile" in str(info.value)
    with pytest.raises(ConfigError, match="missing.xsl cannot be read"):
        mapped(tmp_path, doc_with_xml("INV-1"), xslt="missing.xsl")


def _seed_xml(ws, *ids):
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    for doc_id in ids:
        write_document(ws.inbox, doc_id, client="acme", approved_at=when, metadata={"number": doc_id, "supplier": "Globex"}, xml=True)


def test_on_any_connector_a_run_delivers_the_transformed_xml_and_fails_only_the_document_it_fails_on(workspace):
    (workspace.config_dir / "xslt").mkdir()
    (workspace.config_dir / "xslt" / "erp2.xsl").write_text(TO_ERP_2)
    key = workspace.integration(mapping={"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}", "xslt": "erp2.xsl"})
    _seed_xml(workspace, "inv-1", "BROKEN")
    state = sync(integration=key, return_state=True)
    assert state.is_failed()
    assert "BROKEN: integration 'acme/invoices': stylesheet" in state.message and "erp2.xsl" in state.message
    out = workspace.out / "acme" / "invoice"
    assert b'<ErpInvoice number="INV-1" product="SAXON"/>' in (out / "inv-1.xml").read_bytes()
    assert (out / "inv-1.pdf").read_bytes() == (workspace.inbox / "inv-1.pdf").read_bytes()
    assert not (out / "BROKEN.xml").exists() and not (out / "BROKEN.pdf").exists()


def test_validate_and_the_run_stop_at_a_stylesheet_that_does_not_compile(workspace):
    (workspace.config_dir / "xslt").mkdir()
    (workspace.config_dir / "xslt" / "broken.xsl").write_text(BROKEN)
    key = workspace.integration(mapping={"xslt": "broken.xsl"})
    with pytest.raises(ConfigError) as info:
        load_config(only=key)
    (problem,) = [p for p in info.value.problems if "xslt" in p]
    assert "acme.yaml: integration 'invoices': mapping.xslt[0].stylesheet: stylesheet" in problem and "does not compile" in problem
    _seed_xml(workspace, "INV-1")
    state = sync(integration=key, return_state=True)
    assert state.is_failed() and "broken.xsl" in state.message
    assert not (workspace.out / "acme").exists()  # nothing delivered


def test_preview_shows_the_transformed_output(workspace, capsys):
    (workspace.config_dir / "xslt").mkdir()
    (workspace.config_dir / "xslt" / "erp1.xsl").write_text(TO_ERP_1)
    key = workspace.integration(mapping={"folder": "{client}", "filename": "{doc_id}.{ext}",
                                         "xslt": [{"stylesheet": "erp1.xsl", "params": {"supplier": "{supplier}"}}]})
    _seed_xml(workspace, "INV-7")
    assert cli(["preview", key, "INV-7"]) == 0
    shown = json.loads(capsys.readouterr().out)
    (xml,) = [f for f in shown["files"] if f["path"] == "acme/INV-7.xml"]
    assert xml["xslt"] == ["erp1.xsl"] and 'supplier="Globex"' in xml["content"] and "ErpInvoice" in xml["content"]
    assert "content" not in next(f for f in shown["files"] if f["path"].endswith(".pdf"))
