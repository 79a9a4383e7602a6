"""Infor IDM and ION connectors against the local ION API gateway (tests/fakes/infor_gateway.py): the token
(password grant, expiry, 401 then refresh, a wrong saak), IDM's datamodel, items and search, ION's ping and
multipartMessage, the BOD (mapping, required elements, XML schema, XSLT), and the gateway's faults (429 with
Retry-After, 502/503, a 504 after its cut-off, cut connections). Clients reach the gateway through their own
settings (the .ionapi file's iu and pu); nothing of docroute is replaced."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import requests
import yaml

from blocks.infor import InforIdmConnection, InforIdmIonConnection, InforIonApiConnection, InforIonConnection, IonApiFileError
from tasks.connectors.base import CredentialsRefusedError, PermanentDeliveryError, TransientDeliveryError
from tasks.connectors.infor_ion import PUBLISHED
from tasks.settings import get_settings
from tests.connectors.conformance import make_package
from tests.fakes.base import Fault
from tests.fakes.infor_gateway import InforGateway, Published, start_gateway

IDM_MAPPING = {
    "kind": "idm",
    "entities": {"invoice": "LN_SupplierInvoice"},
    "constants": {"MDS_EntityType": "InforERPEnterpriseFinancialsReceivedInvoice", "MDS_AccountingEntity": "100"},
    "attributes": {"SupplierInvoiceNumber": "{number}", "SupplierName": "{supplier}", "InvoiceAmount": "{total}"},
    "acl": "Private",
    "pdf_name": "INV_{number}.pdf",
}
BOD_MAPPING = {
    "kind": "bod",
    "document_types": {"invoice": "SupplierInvoice"},
    "accounting_entity": "infor.ln.{company}",
    "fields": {"InvoiceNumber": "{number}", "SupplierName": "{supplier}", "Total": "{total}"},
}


@pytest.fixture
def gateway():
    gw = InforGateway("ACME_TST").start()
    yield gw
    gw.stop()


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """A config folder with mappings/ and xslt/, used by the connectors through DOCROUTE_CONFIG_DIR."""
    root = tmp_path / "config"
    for sub in ("clients", "templates", "lookups", "mappings", "xslt"):
        (root / sub).mkdir(parents=True)
    monkeypatch.setenv("DOCROUTE_CONFIG_DIR", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


def write_mapping(config_dir: Path, name: str, data: dict) -> str:
    (config_dir / "mappings" / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return name


def ionapi(gw: InforGateway, **changes) -> InforIonApiConnection:
    return InforIonApiConnection.from_ionapi(gw.ionapi(**changes))


def idm(gw, **settings) -> InforIdmConnection:
    return InforIdmConnection(**{"ionapi": ionapi(gw), "timeout": 10, "after_timeout_wait": 0.05, **settings})


def ion(gw, **settings) -> InforIonConnection:
    return InforIonConnection(**{"ionapi": ionapi(gw), "timeout": 10, "accounting_entity": "infor.ln.100", **settings})


def package(tmp_path, doc_id="INV-1001", **kw):
    p = make_package(tmp_path, doc_id, **kw)
    values = {"doc_id": doc_id, "number": doc_id, "supplier": "Globex BV", "total": "121.00", "client": "acme",
              "doc_type": "invoice", "company": "100"}
    return dataclasses.replace(p, values=values)


def secrets_of(gw: InforGateway) -> list[str]:
    return [gw.client_secret, gw.saak, gw.saak.split("#", 1)[1], gw.sask]


# -- the .ionapi file and the token --------------------------------------------------------------------
def test_the_ionapi_file_makes_a_password_grant_at_pu_plus_ot_with_the_hash_form_encoded(gateway, tmp_path):
    block = ionapi(gateway)
    assert block.token_url == f"{gateway.url}/ACME_TST/as/token.oauth2"
    assert block.revoke_url == f"{gateway.url}/ACME_TST/as/revoke_token.oauth2"
    assert block.api_base() == f"{gateway.url}/ACME_TST"
    with InforIdmConnection(ionapi=block).connector() as conn:  # open: the datamodel check needs a token
        assert conn.check().ok
    assert gateway.grants == {"password": 1}
    body = gateway.raw_token_bodies[0].decode()
    assert "%23" in body and "#" not in body  # the saak's '#' arrives form-encoded
    assert "client_secret=" in body  # client_secret_post, as the gateway wants
    assert gateway.unauthorised == 0


def test_a_wrong_saak_is_refused_clearly_without_any_secret(gateway, tmp_path):
    bad = idm(gateway, ionapi=ionapi(gateway, saak=f"{gateway.tenant}#not-the-key"))
    with pytest.raises(CredentialsRefusedError) as info:
        with bad.connector() as conn:
            conn.deliver(package(tmp_path))
    text = str(info.value)
    assert "invalid_grant" in text and bad.label() in text
    for secret in [*secrets_of(gateway), "not-the-key"]:
        assert secret not in text
    assert gateway.token_errors == ["invalid_grant"] and gateway.items == []


def test_the_token_is_renewed_before_it_expires_and_a_401_refreshes_it_once(gateway, tmp_path):
    gateway.expires_in = 2  # a token that lives 2 s is renewed at half its life
    with idm(gateway).connector() as conn:
        conn.deliver(package(tmp_path, "INV-1"))
        assert gateway.grants["password"] == 1
        time.sleep(1.2)
        conn.deliver(package(tmp_path, "INV-2"))
        assert gateway.grants["password"] == 2 and gateway.unauthorised == 0  # renewed before, not after a 401
        gateway.expires_in = 600
        gateway.invalidate_access_tokens()  # the gateway stops taking the token it issued
        conn.deliver(package(tmp_path, "INV-3"))
    assert gateway.unauthorised == 1 and gateway.grants["password"] == 3  # one 401, one refresh, the call repeated
    assert len(gateway.items) == 3


def test_an_ionapi_file_with_keys_missing_names_them_and_no_value(tmp_path):
    data = {"ti": "ACME", "ci": "ACME~x", "cs": "client-secret-value", "iu": "https://mingle-ionapi.eu1.inforcloudsuite.com",
            "saak": "ACME#access-key-value"}
    with pytest.raises(IonApiFileError) as info:
        InforIonApiConnection.from_ionapi(data)
    assert "pu, sask" in str(info.value)
    assert "client-secret-value" not in str(info.value) and "access-key-value" not in str(info.value)
    data.update(pu="https://mingle-sso.eu1.inforcloudsuite.com:443/ACME/as/", sask="secret-key-value")
    block = InforIonApiConnection.from_ionapi(data)
    assert block.deployment == "cloud" and block.token_hosts() == ["mingle-ionapi.eu1.inforcloudsuite.com",
                                                                 "mingle-sso.eu1.inforcloudsuite.com:443"]
    for secret in ("client-secret-value", "access-key-value", "secret-key-value"):
        assert secret not in block.label() and secret not in repr(block)


# -- IDM ------------------------------------------------------------------------------------------------
def test_an_idm_item_gets_the_mapped_entity_attributes_acl_resources_and_correlation_id(gateway, config_dir, tmp_path):
    name = write_mapping(config_dir, "acme-idm.yaml", IDM_MAPPING)
    p = package(tmp_path)
    with idm(gateway).connector(options={"idm_mapping": name}) as conn:
        delivery = conn.deliver(p)
    (item,) = gateway.items
    assert delivery.remote_ref == item.pid == "LN_SupplierInvoice-1-1-LATEST" and not delivery.already_present
    assert item.entity == "LN_SupplierInvoice" and item.acl == "Private"
    assert item.attrs == {
        "MDS_EntityType": "InforERPEnterpriseFinancialsReceivedInvoice", "MDS_AccountingEntity": "100",
        "SupplierInvoiceNumber": "INV-1001", "SupplierName": "Globex BV", "InvoiceAmount": "121.00",
        "BOD_AlternateDocumentID_1": p.idempotency_key,
    }
    assert item.resources["INV_INV-1001.pdf"] == p.main.open().read()
    assert item.resources["INV-1001.xml"] == p.files[1].open().read()
    assert all("application/json" in r.headers["accept"] for r in gateway.calls(path="/IDM/"))


def test_idm_answers_in_xml_are_read_too(gateway, tmp_path):
    gateway.xml_answers = True  # a gateway that ignores Accept: application/json
    p = package(tmp_path)
    with idm(gateway).connector() as conn:
        first = conn.deliver(p)
        again = conn.deliver(p)
        assert conn.lookup(p).remote_ref == first.remote_ref
    assert again.already_present and again.remote_ref == first.remote_ref
    assert len(gateway.items) == 1


def test_an_attribute_the_entity_lacks_stops_the_run_before_any_document_and_check_lists_attributes(gateway, config_dir, tmp_path):
    good = write_mapping(config_dir, "good-idm.yaml", IDM_MAPPING)
    with idm(gateway).connector(options={"idm_mapping": good}) as conn:
        result = conn.check()
    assert result.ok, result.message
    assert "LN_SupplierInvoice has attributes MDS_EntityType, MDS_AccountingEntity, SupplierInvoiceNumber" in result.message
    bad = write_mapping(config_dir, "bad-idm.yaml", {**IDM_MAPPING, "attributes": {"SupplierInvoiceNo": "{number}"}})
    connector = idm(gateway).connector(options={"idm_mapping": bad})
    with pytest.raises(PermanentDeliveryError) as info:
        connector.open()
    text = str(info.value)
    assert "'SupplierInvoiceNo' is not an attribute of entity LN_SupplierInvoice" in text
    assert "bad-idm.yaml" in text and "SupplierInvoiceNumber" in text  # names the file and what the entity has
    assert not connector.check().ok
    assert gateway.upload_requests() == 0
    unknown_entity = write_mapping(config_dir, "entity-idm.yaml", {**IDM_MAPPING, "entities": {"invoice": "LN_Invoice"}})
    with pytest.raises(PermanentDeliveryError, match="'LN_Invoice' is not an entity of IDM"):
        idm(gateway).connector(options={"idm_mapping": unknown_entity}).open()


def test_without_the_datamodel_the_check_is_skipped_and_idm_refuses_what_it_does_not_know(gateway, config_dir, tmp_path):
    gateway.datamodel = False  # a gateway that does not answer IDM/api/datamodel
    bad = write_mapping(config_dir, "bad-idm.yaml", {**IDM_MAPPING, "attributes": {"SupplierInvoiceNo": "{number}"}})
    with idm(gateway).connector(options={"idm_mapping": bad}) as conn:  # open does not fail
        assert "does not answer IDM's datamodel" in conn.check().message
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(package(tmp_path))
    assert "400" in str(info.value) and "SupplierInvoiceNo does not exist" in str(info.value)


def test_a_429_with_retry_after_on_search_is_waited_for_and_on_upload_is_a_transient_error(gateway, tmp_path):
    gateway.fault(Fault(status=429, headers={"Retry-After": "1"}, match="GET .*/items/search", times=1))
    with idm(gateway).connector() as conn:
        start = time.monotonic()
        conn.deliver(package(tmp_path, "INV-1"))
        assert time.monotonic() - start >= 1.0  # the HTTP layer waited as asked, then searched again
        gateway.fault(Fault(status=429, headers={"Retry-After": "2"}, match="POST .*/IDM/api/items$", times=1))
        with pytest.raises(TransientDeliveryError) as info:
            conn.deliver(package(tmp_path, "INV-2"))
    assert info.value.retry_after == 2 and "429" in str(info.value)  # the engine waits and sends again
    assert len(gateway.items) == 1 and gateway.upload_requests() == 2


@pytest.mark.parametrize("fault", [
    Fault(kind="after", status=504, match="POST .*/IDM/api/items$"),  # the work happens, then a 504
    Fault(kind="after", status=502, match="POST .*/IDM/api/items$"),
    Fault(kind="cut-after", match="POST .*/IDM/api/items$"),  # stored, then the connection cut
], ids=["504-after-success", "502-after-success", "cut-after-success"])
def test_an_upload_that_went_through_despite_the_error_is_found_not_sent_again(gateway, tmp_path, fault):
    gateway.fault(fault)
    p = package(tmp_path)
    with idm(gateway).connector() as conn:
        delivery = conn.deliver(p)
        again = conn.deliver(p)  # and a retry later finds it too
    assert len(gateway.items) == 1 and gateway.upload_requests() == 1
    assert delivery.remote_ref == gateway.items[0].pid and again.already_present


def test_a_large_file_cut_off_by_the_gateway_after_60s_is_looked_up_before_it_is_sent_again(tmp_path):
    # ~400 KB of item JSON at 500 KB/s: 0.8 s of work, the gateway answers 504 at 0.3 s, IDM stores it at 0.8 s
    gw = InforGateway(cutoff=0.3, bytes_per_second=500_000).start()
    try:
        p = package(tmp_path, "INV-1", pdf_size=300_000)
        with idm(gw, after_timeout_wait=1.0).connector() as conn:  # waits past IDM's own end, then finds it
            delivery = conn.deliver(p)
            assert conn.deliver(p).already_present
        assert len(gw.items) == 1 and gw.upload_requests() == 1 and delivery.remote_ref == gw.items[0].pid
        q = package(tmp_path, "INV-2", pdf_size=300_000)
        with idm(gw, after_timeout_wait=0.05).connector() as conn:  # looked up too early: not there yet
            with pytest.raises(TransientDeliveryError) as info:
                conn.deliver(q)
            assert info.value.status == 504 and "60 s" in str(info.value)
            time.sleep(0.8)
            assert conn.deliver(q).already_present  # the retry searches first: found, not sent again
        assert len(gw.items_with("BOD_AlternateDocumentID_1", q.idempotency_key)) == 1 and gw.upload_requests() == 2
    finally:
        gw.stop()


def test_a_connection_cut_before_the_upload_is_transient_and_the_retry_stores_one_item(gateway, tmp_path):
    gateway.fault(Fault(kind="cut", match="POST .*/IDM/api/items$"))
    p = package(tmp_path)
    with idm(gateway).connector() as conn:
        with pytest.raises(TransientDeliveryError) as info:
            conn.deliver(p)
        assert "INV-1001" in str(info.value) and conn.label in str(info.value)
        assert conn.lookup(p) is None
        conn.deliver(p)
    assert len(gateway.items) == 1 and gateway.upload_requests() == 2


# -- ION ------------------------------------------------------------------------------------------------
def test_a_bod_goes_through_multipart_message_and_the_delivery_says_published(gateway, config_dir, tmp_path):
    name = write_mapping(config_dir, "acme-bod.yaml", BOD_MAPPING)
    p = package(tmp_path)
    with ion(gateway, logical_id="lid://infor.ims.doc2export").connector(options={"bod_mapping": name}) as conn:
        assert "provisioned" in conn.check().message
        delivery = conn.deliver(p)
    key = p.idempotency_key
    assert delivery.remote_ref == f"{PUBLISHED}: SyncCaptureDocument message {key}"
    assert delivery.detail["published"] and delivery.detail["ion_message"] == "Published successfully"
    bod: Published = gateway.bods[key]
    assert bod.parameters == {"documentName": "SyncCaptureDocument", "messageId": key,
                              "fromLogicalId": "lid://infor.ims.doc2export", "toLogicalId": "lid://default",
                              "document": {"encoding": "NONE", "characterSet": "UTF-8"}, "documentId": "INV-1001",
                              "accountingEntity": "infor.ln.100"}
    assert bod.text("ApplicationArea/Sender/LogicalID") == "lid://infor.ims.doc2export"
    assert bod.text("ApplicationArea/Sender/ConfirmationCode") == "OnError"
    assert bod.text("DataArea/Sync/AccountingEntityID") == "infor.ln.100"
    assert bod.find("DataArea/Sync/ActionCriteria/ActionExpression")[0].get("actionCode") == "Add"
    assert bod.text("DataArea/CaptureDocument/DocumentType") == "SupplierInvoice"
    (alt,) = bod.find("DataArea/CaptureDocument/AlternateDocumentID/ID")
    assert alt.text == key and alt.get("schemeName") == "CorrelationID"
    assert bod.fields() == {"InvoiceNumber": "INV-1001", "SupplierName": "Globex BV", "Total": "121.00"}
    orders = [f.find("{*}FieldOrderNumber").text for f in bod.find("DataArea/CaptureDocument/DocumentField")]
    assert orders == ["1", "2", "3"]
    assert bod.embedded() == {f.name: f.open().read() for f in p.files}


def test_a_bod_without_an_accounting_entity_is_refused_before_it_is_sent(gateway, tmp_path):
    with ion(gateway, accounting_entity=None).connector() as conn:
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(package(tmp_path))
    assert "DataArea/Sync/AccountingEntityID" in str(info.value) and "nothing was sent" in str(info.value)
    assert gateway.bod_requests() == 0


def test_a_bod_is_validated_against_the_mapping_s_xml_schema(gateway, config_dir, tmp_path):
    ns = "http://schema.infor.com/InforOAGIS/2"
    (config_dir / "mappings" / "capture.xsd").write_text(f"""<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="{ns}" xmlns="{ns}" elementFormDefault="qualified">
  <xs:element name="SyncCaptureDocument"><xs:complexType><xs:sequence>
    <xs:element name="ApplicationArea"><xs:complexType><xs:sequence><xs:any processContents="skip" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element>
    <xs:element name="DataArea"><xs:complexType><xs:sequence>
      <xs:element name="Sync"><xs:complexType><xs:sequence><xs:any processContents="skip" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element>
      <xs:element name="CaptureDocument"><xs:complexType><xs:sequence>
        <xs:element name="DocumentID"><xs:complexType><xs:sequence><xs:any processContents="skip"/></xs:sequence></xs:complexType></xs:element>
        <xs:element name="AlternateDocumentID"><xs:complexType><xs:sequence><xs:any processContents="skip"/></xs:sequence></xs:complexType></xs:element>
        <xs:element name="DocumentType"><xs:simpleType><xs:restriction base="xs:string"><xs:enumeration value="SupplierInvoice"/></xs:restriction></xs:simpleType></xs:element>
        <xs:any processContents="skip" minOccurs="0" maxOccurs="unbounded"/>
      </xs:sequence></xs:complexType></xs:element>
    </xs:sequence></xs:complexType></xs:element>
  </xs:sequence><xs:attribute name="releaseID"/><xs:attribute name="versionID"/></xs:complexType></xs:element>
</xs:schema>""")
    good = write_mapping(config_dir, "good-bod.yaml", {**BOD_MAPPING, "schema": "capture.xsd"})
    with ion(gateway).connector(options={"bod_mapping": good}) as conn:
        conn.deliver(package(tmp_path, "INV-1"))
    bad = write_mapping(config_dir, "bad-bod.yaml", {**BOD_MAPPING, "schema": "capture.xsd",
                                                     "document_types": {"invoice": "PurchaseInvoice"}})
    with ion(gateway).connector(options={"bod_mapping": bad}) as conn:
        with pytest.raises(PermanentDeliveryError) as info:
            conn.deliver(package(tmp_path, "INV-2"))
    assert "not valid against capture.xsd" in str(info.value) and "PurchaseInvoice" in str(info.value)
    assert gateway.bod_requests() == 1


def test_the_bod_mapping_s_xslt_is_applied_and_a_result_that_is_not_a_bod_is_not_sent(gateway, config_dir, tmp_path):
    (config_dir / "xslt" / "bod-note.xsl").write_text("""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:oa="http://schema.infor.com/InforOAGIS/2">
  <xsl:param name="doc_id"/>
  <xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy></xsl:template>
  <xsl:template match="oa:CaptureDocument"><xsl:copy><xsl:apply-templates select="@*|node()"/>
    <oa:Note>exported by docroute for <xsl:value-of select="$doc_id"/></oa:Note></xsl:copy></xsl:template>
</xsl:stylesheet>""")
    (config_dir / "xslt" / "not-a-bod.xsl").write_text("""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/"><Invoice/></xsl:template>
</xsl:stylesheet>""")
    good = write_mapping(config_dir, "note-bod.yaml", {**BOD_MAPPING, "xslt": "bod-note.xsl"})
    p = package(tmp_path, "INV-1")
    with ion(gateway).connector(options={"bod_mapping": good}) as conn:
        conn.deliver(p)
    assert gateway.bods[p.idempotency_key].text("DataArea/CaptureDocument/Note") == "exported by docroute for INV-1"
    bad = write_mapping(config_dir, "bad-bod.yaml", {**BOD_MAPPING, "xslt": "not-a-bod.xsl"})
    with ion(gateway).connector(options={"bod_mapping": bad}) as conn:
        with pytest.raises(PermanentDeliveryError, match="its root is Invoice, not SyncCaptureDocument"):
            conn.deliver(package(tmp_path, "INV-2"))
    assert gateway.bod_requests() == 1


def test_502_and_503_are_retried_and_a_repeat_of_a_message_id_is_one_bod(gateway, tmp_path):
    gateway.fault(Fault(status=502, match="multipartMessage"), Fault(status=503, match="multipartMessage"))
    p = package(tmp_path)
    with ion(gateway).connector() as conn:
        conn.deliver(p)
        gateway.fault(Fault(kind="after", status=504, match="multipartMessage"))  # published, then a 504
        conn.deliver(p)
    assert gateway.bod_requests() == 5 and list(gateway.bods) == [p.idempotency_key]
    assert gateway.repeats[p.idempotency_key] == 2  # the second delivery and its retry after the 504: still one BOD


def test_the_gateway_refuses_a_multipart_message_without_its_parameters_or_with_a_payload_that_is_not_xml(gateway):
    """The fake keeps the contract the connector is tested against: what it refuses, a real gateway refuses."""
    with ion(gateway).connector() as conn:
        token = conn._client().gateway.manager.access_token()
    url = f"{gateway.url}/ACME_TST/IONSERVICES/api/ion/messaging/service/v2/multipartMessage"
    headers = {"Authorization": f"Bearer {token}"}
    params = '{"documentName": "SyncCaptureDocument", "messageId": "m1", "fromLogicalId": "lid://infor.ims.x", "toLogicalId": "lid://default"}'
    answer = requests.post(url, headers=headers, files={"MessagePayload": ("b.xml", b"<SyncCaptureDocument/>")})
    assert answer.status_code == 400 and "ParameterRequest" in answer.text
    answer = requests.post(url, headers=headers, files={"ParameterRequest": (None, params, "application/json"),
                                                        "MessagePayload": ("b.xml", b"<SyncCaptureDocument>")})
    assert answer.status_code == 400 and "not well-formed XML" in answer.text
    answer = requests.post(url, headers=headers, files={"ParameterRequest": (None, params.replace("infor.ims.", ""), "application/json"),
                                                        "MessagePayload": ("b.xml", b"<SyncCaptureDocument/>")})
    assert answer.status_code == 400 and "fromLogicalId" in answer.text
    assert requests.post(url, files={"MessagePayload": ("b.xml", b"<x/>")}).status_code == 401
    assert gateway.bods == {}


def test_the_ping_is_the_check_and_a_tenant_without_ion_fails_it(gateway):
    gateway.ion_provisioned = False
    with ion(gateway).connector() as conn:
        result = conn.check()
    assert not result.ok and "403" in result.message and conn.label in result.message


# -- IDM + ION ---------------------------------------------------------------------------------------------
def test_idm_then_ion_carries_the_item_pid_and_a_failed_bod_reuses_the_item(gateway, config_dir, tmp_path):
    idm_name = write_mapping(config_dir, "acme-idm.yaml", IDM_MAPPING)
    bod_name = write_mapping(config_dir, "acme-bod.yaml", BOD_MAPPING)
    block = InforIdmIonConnection(ionapi=ionapi(gateway), timeout=10, after_timeout_wait=0.05)
    p = package(tmp_path)
    gateway.fault(Fault(status=400, match="multipartMessage"))  # the BOD fails after the upload
    with block.connector(options={"idm_mapping": idm_name, "bod_mapping": bod_name}) as conn:
        assert "provisioned" in conn.check().message
        with pytest.raises(PermanentDeliveryError):
            conn.deliver(p)
        assert len(gateway.items) == 1 and gateway.bods == {}
        delivery = conn.deliver(p)  # the retry
    (item,) = gateway.items
    assert gateway.upload_requests() == 1  # found by its correlation id, not uploaded again
    bod = gateway.bods[p.idempotency_key]
    assert bod.fields()["IDMItemPID"] == item.pid
    assert bod.embedded() == {}  # the files are in IDM
    names = [pg.find("{*}SourceFileName").text for pg in bod.find("DataArea/CaptureDocument/DocumentPage")]
    assert names == list(item.resources)
    assert delivery.remote_ref == f"IDM {item.pid}; {PUBLISHED}: SyncCaptureDocument message {p.idempotency_key}"
    assert delivery.detail["idm_item"] == "found by its correlation id"


def test_start_gateway_gives_a_url_and_a_ready_ionapi_for_the_demo(tmp_path):
    url, data = start_gateway("DEMO_TST")
    block = InforIonApiConnection.from_ionapi(data)
    assert block.iu == url and block.ti == "DEMO_TST"
    with InforIdmConnection(ionapi=block, timeout=10).connector() as conn:
        assert conn.check().ok


def test_the_shipped_mapping_files_are_valid_for_an_integration_that_has_their_placeholders():
    from deployments.infor import load_mapping, mapping_problems
    from tests.test_mapping import make_integ

    root = Path(__file__).resolve().parents[1] / "deployments"
    integ = make_integ(identifiers={"accounting_entity": "infor.ln.100"})
    for name, kind in (("ln-supplier-invoice-idm.yaml", "idm"), ("ln-supplier-invoice-bod.yaml", "bod")):
        assert load_mapping(root, name, kind).kind == kind
        assert mapping_problems(root, name, kind, "example", "mapping", integ.known_placeholders(), ["invoice", "credit_note"]) == []
    assert mapping_problems(root, "ln-supplier-invoice-bod.yaml", "bod", "example", "bod_mapping", make_integ().known_placeholders(),
                            ["invoice", "order_confirmation"]) == [
        f"example: connection_options.bod_mapping: {root / 'mappings' / 'ln-supplier-invoice-bod.yaml'}: accounting_entity: unknown "
        f"placeholder {{accounting_entity}}; known: " + ", ".join(sorted(make_integ().known_placeholders() - {"approved_at", "today"}))
        + " (declare extra metadata fields in metadata_fields)",
        f"example: connection_options.bod_mapping: {root / 'mappings' / 'ln-supplier-invoice-bod.yaml'}: document_types: no BOD "
        f"DocumentType for document type 'order_confirmation', which the integration takes; add it to document_types or set "
        f"default_document_type",
    ]


def test_test_mode_goes_to_the_test_tenant_and_without_one_says_so(gateway, tmp_path):
    from tasks.connectors.base import Mode

    with pytest.raises(PermanentDeliveryError, match="test mode needs test_ionapi"):
        idm(gateway).connector(Mode.TEST).deliver(package(tmp_path))
    test_gw = InforGateway("ACME_TEST").start()
    try:
        with idm(gateway, test_ionapi=ionapi(test_gw)).connector(Mode.TEST) as conn:
            conn.deliver(package(tmp_path))
        assert len(test_gw.items) == 1 and gateway.items == [] and gateway.grants == {}
    finally:
        test_gw.stop()
